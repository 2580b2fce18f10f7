"""Who owns a port holder (a systemd unit, a supervisord program, a docker container, or nobody),
and asking that owner, not the process, to stop or start the backend.

An owner is reported as facts (``kind``, its name, what it says about itself, and ``reachable``
with ``why`` when it cannot be asked from here); what to do about it is decided by the controller.
"""

import os
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import systemd
from .files import atomic_write, read_secret
from .procfs import ancestry, process_table
from .registry import AgentError, command
from .signals import terminate

# The docker and supervisord clients (http.client, xmlrpc.client) are imported where a holder has
# such an owner: the diagnosis of a detached backend, the hot path, never loads them.

Json = Dict[str, Any]
Hints = Dict[str, Optional[str]]  # the host's manager settings: unit, program, supervisor_conf, container


def _arg(cmdline: List[str], flag: str) -> Optional[str]:
    for index, arg in enumerate(cmdline[:-1]):
        if arg in (flag, "-" + flag):
            return cmdline[index + 1]
    return None


def _is_supervisord(proc: Json) -> bool:
    return proc["comm"] == "supervisord" or any(os.path.basename(a) == "supervisord" for a in proc["cmdline"][:2])


def _docker_socket(by_pid: Dict[int, Json]) -> str:
    from . import docker
    for proc in by_pid.values():
        if proc["comm"] == "dockerd":
            return docker.socket_from_cmdline(proc["cmdline"]) or docker.DEFAULT_SOCKET
    return docker.DEFAULT_SOCKET


def _supervisor_conf(proc: Json, hints: Hints) -> Optional[str]:
    from . import supervisor
    if hints.get("supervisor_conf"):
        return hints["supervisor_conf"]
    try:
        cwd = os.readlink("/proc/%d/cwd" % proc["pid"])
    except OSError:
        cwd = "/"
    return supervisor.conf_from_cmdline(proc["cmdline"], cwd)


def owner_of(pid: int, by_pid: Dict[int, Json], port: int, hints: Hints, memo: Dict[Tuple[Any, ...], Json]) -> Json:
    """The owner of one holder: the nearest manager above it, else the systemd unit of its cgroup."""

    def once(key: Tuple[Any, ...], observe: Callable[..., Json], *args: Any) -> Json:
        if key not in memo:  # the holders of one backend share an owner: ask it once
            memo[key] = observe(*args)
        return memo[key]

    chain = [by_pid[p] for p in ancestry(pid, by_pid)]
    if chain and chain[0]["comm"] == "docker-proxy":  # forwards the port into a container's network
        from . import docker
        sock = _docker_socket(by_pid)
        return dict(once(("docker", sock, port), docker.observe, sock, hints.get("container"), port),
                    via="docker-proxy pid %d" % pid)
    for index, proc in enumerate(chain):
        if proc["comm"].startswith("containerd-shim"):
            ident, namespace = _arg(proc["cmdline"], "-id"), _arg(proc["cmdline"], "-namespace")
            if namespace not in (None, "moby"):
                return {"kind": "containerd", "container": ident, "reachable": False,
                        "why": "containerd namespace %s is not docker's: cascade-ops cannot ask it" % namespace}
            from . import docker
            sock = _docker_socket(by_pid)
            return once(("docker", sock, ident), docker.observe, sock, ident)
        if _is_supervisord(proc):
            conf = _supervisor_conf(proc, hints)
            if conf is None:
                return {"kind": "supervisor", "supervisord": proc["pid"], "reachable": False,
                        "why": "cannot tell which configuration supervisord pid %d runs: set supervisor_conf"
                        % proc["pid"]}
            from . import supervisor
            below = [p["pid"] for p in chain[:index]]
            return dict(once(("supervisor", conf, tuple(below)), supervisor.observe, below, conf),
                        supervisord=proc["pid"])
    cgroup = systemd.cgroup_path(pid)
    unit = systemd.unit_of(cgroup)
    if unit and cgroup:
        return once(("systemd", unit), systemd.observe, pid, cgroup, unit)
    return {"kind": "none", "cgroup": cgroup}


def holder_owners(pids: List[int], by_pid: Dict[int, Json], port: int, hints: Hints) -> Dict[str, Json]:
    """``owner_of`` for each holder (keys are pids as strings: the reply is JSON)."""
    memo: Dict[Tuple[Any, ...], Json] = {}
    return {str(pid): owner_of(pid, by_pid, port, hints, memo) for pid in pids if pid in by_pid}


@command
def configured_owner(manager: str, hints: Hints) -> Json:
    """The owner the host's variables name, for when nothing holds the port to observe one."""
    from . import docker, supervisor
    if manager == "systemd":
        unit = hints.get("unit") or ""
        if not systemd.booted():
            return {"kind": "systemd", "unit": unit, "reachable": False, "why": "systemd does not run this host"}
        return dict(systemd.show(unit), kind="systemd", reachable=True)
    by_pid = {p["pid"]: p for p in process_table()}
    if manager == "supervisor":
        conf = hints.get("supervisor_conf")
        if not conf:
            daemons = [p for p in by_pid.values() if _is_supervisord(p)]
            if len(daemons) != 1:
                return {"kind": "supervisor", "program": hints.get("program"), "reachable": False,
                        "why": "%d supervisord processes run here: set supervisor_conf" % len(daemons)}
            conf = _supervisor_conf(daemons[0], hints)
        if conf is None:
            return {"kind": "supervisor", "program": hints.get("program"), "reachable": False,
                    "why": "cannot tell which configuration supervisord runs: set supervisor_conf"}
        return supervisor.observe([], conf, hints.get("program") or "")
    if manager == "docker":
        return docker.observe(_docker_socket(by_pid), hints.get("container") or "")
    raise AgentError("no owner kind %r" % manager)


@command
def owner_stop(owner: Json, targets: List[Dict[str, int]], listening: List[int], grace: float,
               hung_after: Optional[float]) -> Json:
    """Ask ``owner`` to stop the backend, and make sure the proven ``targets`` go.

    The owner's own stop may wait out a long timeout on a hung process (systemd's TimeoutStopSec,
    supervisord's stopwaitsecs): a target still listening ``hung_after`` after the owner was asked,
    or alive after ``grace``, is killed by its pinned identity. A stop asked for is not a crash: the
    owner does not respawn it.
    """
    from . import docker, supervisor
    kind = owner["kind"]
    if kind == "docker":  # dockerd kills the container itself after the timeout (0 for a hung one)
        docker.stop(owner["socket"], owner["container"], 0 if hung_after is not None else grace)
        return {"outcomes": [{"pid": owner.get("main_pid", 0), "outcome": "container stopped by dockerd"}]}
    if kind == "systemd":
        systemd.stop(owner["unit"])
    elif kind == "supervisor":
        supervisor.stop(owner["conf"], owner["program"])
    else:
        raise AgentError("no owner kind %r to ask" % kind)
    return terminate(targets=targets, grace=grace, listening=listening, hung_after=hung_after, owner_signalled=True)


@command
def owner_start(owner: Json, argv: Optional[List[str]] = None, cwd: str = "/", log: str = "",
                env_file: str = "", env: Optional[Dict[str, str]] = None,
                secret_env: Optional[Dict[str, str]] = None, listen: Optional[str] = None) -> Json:
    """Ask ``owner`` to start the backend. A systemd unit that does not exist yet is created as a
    transient unit running ``argv`` (its environment, secrets included, in a 0600 ``env_file``)."""
    from . import docker, supervisor
    kind = owner["kind"]
    if kind == "systemd" and owner.get("load_state") == "not-found":
        if not argv:
            raise AgentError("unit %s does not exist and no command was given to run in it" % owner["unit"])
        values = dict(env or {})
        values.update({name: read_secret(path) for name, path in (secret_env or {}).items() if os.path.exists(path)})
        atomic_write(env_file, "".join("%s=%s\n" % item for item in sorted(values.items())).encode(), 0o600)
        systemd.run_transient(owner["unit"], argv, cwd, log, env_file, listen)
        return {"transient": True}
    if kind == "systemd":
        systemd.start(owner["unit"])
    elif kind == "supervisor":
        supervisor.start(owner["conf"], owner["program"])
    elif kind == "docker":
        docker.start(owner["socket"], owner["container"])
    else:
        raise AgentError("no owner kind %r to ask" % kind)
    return {"transient": False}


@command
def owner_status(owner: Json) -> Json:
    """The owner's own word on the backend now (state, main pid, restart count)."""
    from . import docker, supervisor
    kind = owner["kind"]
    if kind == "systemd":
        return dict(systemd.show(owner["unit"]), kind=kind, reachable=True)
    if kind == "supervisor":
        return supervisor.observe([], owner["conf"], owner["program"])
    if kind == "docker":
        return docker.observe(owner["socket"], owner["container"])
    raise AgentError("no owner kind %r" % kind)


@command
def owner_log(owner: Json, lines: int) -> List[str]:
    """The last lines the owner logged for the backend (systemd's journal; empty where none)."""
    return systemd.journal_tail(owner["unit"], lines) if owner["kind"] == "systemd" else []
