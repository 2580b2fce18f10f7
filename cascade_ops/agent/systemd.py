"""systemd as a backend's owner: which unit a process runs in, and asking that unit to stop or start.

Everything goes through ``systemctl`` (and ``systemd-run`` for a transient unit), so the unit's
own state, journal and restart bookkeeping stay true; nothing here signals a process itself.
"""

import os
import re
import subprocess
from typing import Any, Dict, List, Optional

from .files import atomic_write, read_secret
from .owners import Hints, OwnerDriver, Seen
from .procfs import cgroup_path
from .registry import AgentError, Json, command

SYSTEMCTL_TIMEOUT_S = 15.0
# A unit's cgroup ends in its name; a user manager's units sit below user@UID.service.
_UNIT = re.compile(r"^[^/]+\.service$")
_PROPERTIES = ("Id", "LoadState", "ActiveState", "SubState", "MainPID", "ControlGroup", "NRestarts", "ExecStart")


def unit_of(cgroup: Optional[str]) -> Optional[str]:
    """The service unit a cgroup path belongs to (its innermost ``*.service`` component), or None.

    Paths may be nested (``/docker/ID/system.slice/web.service`` from outside a container): the
    innermost service is the one that started the process.
    """
    if not cgroup:
        return None
    services = [part for part in cgroup.split("/") if _UNIT.match(part)]
    return services[-1] if services else None


def booted() -> bool:
    """Whether this host (this pid namespace) runs systemd as its init, as sd_booted() decides."""
    return os.path.isdir("/run/systemd/system")


def _systemctl(*args: str, timeout: float = SYSTEMCTL_TIMEOUT_S) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            ("systemctl",) + args, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except FileNotFoundError:
        raise AgentError("systemctl is not installed on this host") from None
    except subprocess.TimeoutExpired:
        raise AgentError("systemctl %s did not answer within %.0fs" % (" ".join(args), timeout)) from None


def show(unit: str) -> Json:
    """The unit properties a decision needs, by name."""
    done = _systemctl("show", "--no-pager", *("--property=" + p for p in _PROPERTIES), "--", unit)
    if done.returncode != 0:
        raise AgentError("systemctl show %s: %s" % (unit, done.stderr.strip() or "exit %d" % done.returncode))
    props = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    argv = re.search(r"argv\[\]=([^;]*)", props.get("ExecStart", ""))
    return {
        "unit": props.get("Id", unit),
        "load_state": props.get("LoadState", ""),
        "state": "%s/%s" % (props.get("ActiveState", ""), props.get("SubState", "")),
        "active_state": props.get("ActiveState", ""),
        "main_pid": int(props.get("MainPID") or 0),
        "cgroup": props.get("ControlGroup", ""),
        "restarts": int(props.get("NRestarts") or 0),
        "exec_start": argv.group(1).strip() if argv else "",
    }


def observe(pid: int, cgroup: str, unit: str) -> Json:
    """What systemd says about the unit whose cgroup holds ``pid``; ``reachable`` False (and
    ``why``) when this host's systemd does not manage that cgroup, so it cannot be asked."""
    found: Json = {"kind": "systemd", "unit": unit, "cgroup": cgroup, "reachable": False}
    if not booted():
        found["why"] = "no systemd runs this host's processes (the unit belongs to another systemd, as in a container)"
        return found
    try:
        found.update(show(unit))
    except AgentError as exc:
        found["why"] = str(exc)
        return found
    if found["cgroup"] != cgroup:
        found["why"] = "this host's systemd runs %s in %s, not in %s" % (unit, found["cgroup"] or "no cgroup", cgroup)
        return found
    found["reachable"] = True
    return found


def stop(unit: str) -> None:
    """Ask for a stop without waiting for it: the caller watches the processes go (and ends a
    hung one itself, since the unit's own TimeoutStopSec may be minutes)."""
    done = _systemctl("stop", "--no-block", "--", unit)
    if done.returncode != 0:
        raise AgentError("systemctl stop %s: %s" % (unit, done.stderr.strip()))


def start(unit: str) -> None:
    """Queue a start; the caller judges it by the port. A unit in auto-restart starts now, once."""
    done = _systemctl("start", "--no-block", "--", unit)
    if done.returncode != 0:
        raise AgentError("systemctl start %s: %s" % (unit, done.stderr.strip()))


def run_transient(unit: str, argv: List[str], cwd: str, log: str, env_file: str, listen: Optional[str] = None) -> None:
    """Start ``argv`` as a transient service: its own cgroup, whole-tree stops, systemd's bookkeeping.
    Its environment (secrets included) comes from ``env_file`` (0600), never this command line.
    ``listen`` ("ADDRESS:PORT"): with a socket unit that holds that listener, handed to the service
    as descriptor 3, so the queue outlives every restart of the service."""
    args = [
        "systemd-run",
        "--unit=" + unit,
        "--collect",
        "--property=WorkingDirectory=" + cwd,
        "--property=StandardOutput=append:" + log,
        "--property=StandardError=append:" + log,
        "--property=EnvironmentFile=" + env_file,
    ]
    if listen:
        args += ["--socket-property=ListenStream=" + listen, "--socket-property=ReusePort=no"]
    try:
        done = subprocess.run(
            args + ["--"] + argv, capture_output=True, text=True, timeout=SYSTEMCTL_TIMEOUT_S, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AgentError("systemd-run %s: %s" % (unit, exc)) from None
    if done.returncode != 0:
        raise AgentError("systemd-run %s: %s" % (unit, done.stderr.strip()))


def journal_tail(unit: str, lines: int) -> List[str]:
    """The unit's last journal lines (empty when there is no journal to read)."""
    try:
        done = subprocess.run(
            ["journalctl", "--no-pager", "-o", "cat", "-n", str(lines), "-u", unit],
            capture_output=True,
            text=True,
            timeout=5.0,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return done.stdout.splitlines()[-lines:] if done.returncode == 0 else []


def _changed_file(path: str, text: str) -> bool:
    try:
        with open(path) as f:
            if f.read() == text:
                return False
    except OSError:
        pass
    atomic_write(path, text.encode(), 0o644)
    return True


def _ok(*args: str) -> None:
    done = _systemctl(*args)
    if done.returncode != 0:
        raise AgentError("systemctl %s: %s" % (" ".join(args), done.stderr.strip() or "exit %d" % done.returncode))


@command
def systemd_runs() -> bool:
    """Whether systemd runs this host (and so can supervise what is installed as a unit)."""
    return booted()


@command
def units_install(
    unit_dir: str, name: str, units: Dict[str, str], start: str, log_dir: str, instead: str
) -> Dict[str, Any]:
    """Write ``name`` + each suffix of ``units`` (".service", ".timer") into ``unit_dir`` when it
    differs, and have ``name`` + ``start`` enabled and running. Idempotent: unchanged units are
    neither reloaded nor restarted. ``instead``: what to use where systemd does not run."""
    if not booted():
        raise AgentError("systemd does not run this host (no /run/systemd/system): use %s instead" % instead)
    os.makedirs(log_dir, mode=0o700, exist_ok=True)
    changed = False
    for suffix, text in sorted(units.items()):
        changed = _changed_file(os.path.join(unit_dir, name + suffix), text) or changed
    if changed:
        _ok("daemon-reload")
    unit = name + start
    if changed or _systemctl("is-enabled", unit).stdout.strip() != "enabled":
        _ok("enable", unit)  # idempotent; started at boot from now on
    active = _systemctl("is-active", unit).stdout.strip() == "active"
    if changed or not active:
        _ok("restart", unit)  # a new schedule or command takes effect now
    return {"changed": changed or not active}


@command
def units_remove(unit_dir: str, name: str, suffixes: List[str], start: str) -> Dict[str, Any]:
    """Stop and disable ``name`` + ``start`` and delete the units; False when there was nothing to remove."""
    paths = [os.path.join(unit_dir, name + suffix) for suffix in suffixes]
    if not any(os.path.exists(p) for p in paths):
        return {"changed": False}
    if booted():
        _systemctl("disable", "--now", name + start)
    for path in paths:
        if os.path.exists(path):
            os.unlink(path)
    if booted():
        _ok("daemon-reload")
    return {"changed": True}


@command
def unit_status(unit: str, properties: List[str], instead: str) -> Dict[str, Any]:
    """What systemd says of ``unit``: the ``properties`` asked for."""
    if not booted():
        raise AgentError("systemd does not run this host (no /run/systemd/system): use %s instead" % instead)
    done = _systemctl("show", "--no-pager", "--property=" + ",".join(properties), "--", unit)
    return dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)


class SystemdDriver(OwnerDriver):
    """A systemd unit: told by the holder's cgroup; a unit that does not exist yet is created as a
    transient one running the backend's command (its environment, secrets included, in a 0600 file)."""

    def observe_cgroup(self, seen: Seen) -> Optional[Json]:
        cgroup = cgroup_path(seen.pid)
        unit = unit_of(cgroup)
        if not (unit and cgroup):
            return None
        return seen.once(("systemd", unit), observe, seen.pid, cgroup, unit)

    def configured(self, hints: Hints, by_pid: Dict[int, Json]) -> Json:
        unit = hints.get("unit") or ""
        if not booted():
            return {"kind": "systemd", "unit": unit, "reachable": False, "why": "systemd does not run this host"}
        return self.status({"unit": unit})

    def stop(self, owner: Json, grace: float, hung: bool) -> Optional[Json]:
        stop(owner["unit"])
        return None

    def start(self, owner: Json, launch: Json) -> Json:
        if owner.get("load_state") != "not-found":
            start(owner["unit"])
            return {"transient": False}
        if not launch["argv"]:
            raise AgentError("unit %s does not exist and no command was given to run in it" % owner["unit"])
        values = dict(launch["env"] or {})
        values.update(
            {name: read_secret(path) for name, path in (launch["secret_env"] or {}).items() if os.path.exists(path)}
        )
        atomic_write(launch["env_file"], "".join("%s=%s\n" % item for item in sorted(values.items())).encode(), 0o600)
        run_transient(owner["unit"], launch["argv"], launch["cwd"], launch["log"], launch["env_file"], launch["listen"])
        return {"transient": True}

    def status(self, owner: Json) -> Json:
        return dict(show(owner["unit"]), kind="systemd", reachable=True)

    def log(self, owner: Json, lines: int) -> List[str]:
        return journal_tail(owner["unit"], lines)


DRIVER = SystemdDriver()
