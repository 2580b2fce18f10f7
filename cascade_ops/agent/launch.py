"""Starting the backend detached from whoever asked: own session, stdin /dev/null, output to a log."""

import json
import os
import pwd
import subprocess
import threading
from typing import Any, Dict, List, Optional

from .files import atomic_write, read_secret
from .procfs import read_stat
from .registry import command
from .takeover import held, release


def record_path(pidfile: str) -> str:
    """Beside the pid file, what proves its pid is the backend a run started: the pid file alone is
    a claim (a pid is reused, a state dir copied), checked against this record before any signal."""
    return os.path.splitext(pidfile)[0] + ".start.json"


def _running(pidfile: str) -> Optional[Dict[str, Any]]:
    """The start record of the process ``pidfile`` names, when that very process still runs."""
    try:
        with open(record_path(pidfile)) as f:
            record = json.loads(f.read(1 << 16))
        stat = read_stat(int(record["pid"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record if stat is not None and int(stat[1][19]) == record.get("start_ticks") else None


@command
def detached_status(pidfile: str) -> Dict[str, Any]:
    """Whether the detached process an earlier ``spawn`` recorded in ``pidfile`` still runs."""
    record = _running(pidfile)
    return {"running": record is not None, "pid": record["pid"] if record else None}


@command
def detached_stop(pidfile: str, grace: float) -> Dict[str, Any]:
    """Stop the detached process ``pidfile`` names (only that very process), and forget it."""
    from .signals import terminate

    record = _running(pidfile)
    done = terminate([{"pid": record["pid"], "start_ticks": record["start_ticks"]}], grace) if record else None
    for stale in (pidfile, record_path(pidfile)):
        try:
            os.unlink(stale)
        except OSError:
            pass
    return {"stopped": record is not None, "outcomes": done["outcomes"] if done else []}


def _record(pid: int, argv: List[str], cwd: str, port: Optional[int]) -> Dict[str, Any]:
    stat = read_stat(pid)
    return {
        "pid": pid,
        "start_ticks": int(stat[1][19]) if stat else None,
        "argv": argv,
        "cwd": cwd,
        "cwd_real": os.path.realpath(cwd),
        "port": port,
        "user": pwd.getpwuid(os.geteuid()).pw_name,
    }


@command
def spawn(
    argv: List[str],
    cwd: str,
    log: str,
    pidfile: str,
    env: Optional[Dict[str, str]] = None,
    secret_env: Optional[Dict[str, str]] = None,
    port: Optional[int] = None,
    inherit: Optional[List[int]] = None,
) -> Dict[str, Any]:
    """Start ``argv`` in its own session, stdin /dev/null, output appended to ``log``.

    Its own session: a Ctrl-C or a hang-up to the runner's terminal never reaches it, and it
    outlives the runner (re-parented to init when the runner exits). While the runner lives, a
    thread reaps it if it exits, so a long-lived caller (a library user, a test, the agent server)
    never keeps a zombie. Secrets are read from files into the child's environment only: never on a
    command line, where any user could read them.

    Once the process runs, a failure to record it (ENOSPC, EROFS) does not hide it: the run is told
    what runs and why it is not recorded, and a pid file that would name an older process is removed.

    ``inherit``: listening sockets taken over (``takeover``) that the child gets under the same
    descriptor numbers; this agent's copies are closed once it has them.
    """
    passed = held(inherit or [])
    child_env = dict(os.environ)
    child_env.update(env or {})
    for name, path in (secret_env or {}).items():
        if os.path.exists(path):  # a missing secret is the backend's to refuse, with its own message
            child_env[name] = read_secret(path)
    os.makedirs(os.path.dirname(log), exist_ok=True)
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        with open(os.devnull, "rb") as devnull:
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                stdin=devnull,
                stdout=out,
                stderr=out,
                env=child_env,
                start_new_session=True,
                close_fds=True,
                pass_fds=passed,
            )
    finally:
        os.close(out)
        release(inherit or [])
    threading.Thread(target=proc.wait, daemon=True, name="reap-%d" % proc.pid).start()
    record = json.dumps(_record(proc.pid, argv, cwd, port)).encode()
    try:
        atomic_write(record_path(pidfile), record, 0o644)
        atomic_write(pidfile, b"%d\n" % proc.pid, 0o644)
    except OSError as exc:
        for stale in (pidfile, record_path(pidfile)):
            try:
                os.unlink(stale)
            except OSError:
                pass
        return {"pid": proc.pid, "unrecorded": "%s: %s" % (exc.filename or pidfile, exc.strerror or exc)}
    return {"pid": proc.pid}
