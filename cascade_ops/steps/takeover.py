"""Keeping the listening socket across a restart, so that no client of a recovery fails.

Killing the stale holder makes the kernel reset every connection queued in its accept backlog, and
until a replacement binds, new ones are refused. Where cascade-ops starts the replacement itself
(a detached backend), it copies the stale holder's listening socket first (``agent.takeover``),
starts the replacement on it, and only then stops the stale process: the queue never goes away.
Whether it can is a pure function of the facts and settings (``plan_handover``), unit-tested; why
it cannot is said in the run and the incident report.
"""

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from cascade_ops.config.hostvars import HostVars
from cascade_ops.model.facts import Diagnosis, ProcessFacts
from cascade_ops.steps.ownership import DETACH, OWNER, Route

# Where a start_command takes the kept socket's descriptor number (as uvicorn's --fd, gunicorn's
# --bind fd://N): replaced in the command line, never passed through a shell.
FD_PLACEHOLDER = "$LISTEN_FD"


@dataclass(frozen=True)
class Handover:
    """The listening socket to keep, and the stale process whose descriptor of it is copied."""

    inode: int
    holder: ProcessFacts
    waiting: int  # connections in its accept queue when the diagnosis looked


def kept_socket(d: Diagnosis) -> Optional[Tuple[int, ProcessFacts]]:
    """The one listening socket in the backend's way and a visible process holding it, or None."""
    blocking = d.blocking_sockets
    if len(blocking) != 1:
        return None
    holder = next((h.process for h in d.in_the_way if blocking[0].inode in h.inodes), None)
    return (blocking[0].inode, holder) if holder is not None else None


def plan_handover(
    d: Diagnosis, way: Route, v: HostVars, check: Optional[Dict[str, Any]]
) -> Tuple[Optional[Handover], str]:
    """The socket to keep across this restart, or None and why it cannot be kept ("" when nothing
    needs saying: no listener, or a gunicorn master that keeps its own socket). ``check``: what the
    host said when asked whether the copy can be made now (``take_over_check``)."""
    if not v.keep_socket:
        return None, "keep_socket is off"
    if d.socket_unit is not None:
        return None, ""  # systemd's socket unit keeps it: nothing to copy
    if way.action == OWNER:
        return None, (
            "%s restarts it: its accept queue is not kept (connections queued during the hang "
            "are reset)" % way.owner.describe()
        )
    if way.action != DETACH:
        return None, ""  # a gunicorn master keeps the socket through its workers' restart
    found = kept_socket(d)
    if found is None:
        sockets = len(d.blocking_sockets)
        return None, ("" if sockets == 0 else "%d listening sockets in the way: a replacement takes one" % sockets)
    inode, holder = found
    if holder.pid not in {p.pid for p in way.targets}:
        return None, "pid %d, which holds the socket, is not among the processes to stop" % holder.pid
    if v.start_command and FD_PLACEHOLDER not in v.start_command:
        return None, "start_command has no %s to start on the kept socket" % FD_PLACEHOLDER
    if check is None or not check.get("ok"):
        return None, (check or {}).get("why", "the socket could not be copied")
    backlog = sum(s.backlog for s in d.blocking_sockets)
    return Handover(inode, holder, backlog), ""


def on_kept_socket(argv: List[str], fd: int, default: bool) -> List[str]:
    """The start command for a replacement on descriptor ``fd``: the default uvicorn gets ``--fd``
    in place of its own bind; a start_command has its placeholder replaced."""
    if not default:
        return [a.replace(FD_PLACEHOLDER, str(fd)) for a in argv]
    kept: List[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--host", "--port"):
            skip = True
            continue
        kept.append(arg)
    return kept + ["--fd", str(fd)]
