"""Signals pinned to a process's identity (pid *and* start time), never to a bare pid."""

import os
import select
import signal
import time
from typing import Any, Dict, List, Optional, Set

from .procfs import CLK_TCK, GONE_STATES, STOPPED_STATES, cpu_ticks, read_stat, socket_inodes, tcp_table
from .registry import AgentError, command


class Target:
    """One process to signal. With pidfd the kernel guarantees a signal reaches the process we
    opened; opening it and then confirming the start time closes the window psutil's
    check-then-kill leaves open."""

    def __init__(self, pid: int, start_ticks: int):
        self.pid = pid
        self.start_ticks = start_ticks
        self.fd: Optional[int] = None
        if hasattr(os, "pidfd_open"):
            try:
                self.fd = os.pidfd_open(pid)
            except OSError:  # gone already, or a kernel without pidfd: the start-time check remains
                self.fd = None

    def same_process(self) -> bool:
        stat = read_stat(self.pid)
        return stat is not None and int(stat[1][19]) == self.start_ticks and stat[1][0] not in GONE_STATES

    def gone(self) -> bool:
        if self.fd is not None and select.select([self.fd], [], [], 0)[0]:
            return True  # a pidfd turns readable when its process exits
        return not self.same_process()

    def send(self, sig: int) -> None:
        try:
            if self.fd is not None:
                signal.pidfd_send_signal(self.fd, sig)
            elif self.same_process():
                os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)


def _wait_gone(targets: List[Target], deadline: float, poll_interval: float) -> List[Target]:
    while True:
        alive = [t for t in targets if not t.gone()]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(min(poll_interval, max(0.0, deadline - time.monotonic())))


def _still_listening(targets: List[Target], listening: List[int]) -> List[Target]:
    """The targets that still hold one of the ``listening`` socket inodes."""
    wanted = set(listening)
    holding = []
    for target in targets:
        try:
            if wanted.intersection(socket_inodes(target.pid)):
                holding.append(target)
        except PermissionError:
            holding.append(target)  # cannot tell: assume the worst
    return holding


@command
def terminate(
    targets: List[Dict[str, int]],
    grace: float,
    kill_timeout: float = 5.0,
    poll_interval: float = 0.01,
    listening: Optional[List[int]] = None,
    hung_after: Optional[float] = None,
    owner_signalled: bool = False,
    kill_stopped: bool = False,
) -> Dict[str, Any]:
    """SIGTERM (then SIGCONT), wait ``grace`` seconds, SIGKILL survivors; zombies count as gone.

    SIGCONT follows SIGTERM because a stopped process keeps SIGTERM pending until it is continued
    (as systemd does). ``targets`` are {"pid", "start_ticks"} from a snapshot; a pid whose start
    time no longer matches is a different process and is never signalled.

    With ``hung_after``: a target still holding one of the ``listening`` sockets that long after
    SIGTERM will not exit (a live uvicorn closes its listener within milliseconds; one whose event
    loop is blocked never runs its signal handler): every survivor is killed then, without waiting
    out ``grace``. Each outcome says whether the process used CPU meanwhile (a spinning handler)
    or not (blocked).

    ``owner_signalled``: the process's owner (systemd, supervisord) was asked to stop it and sends
    its own stop signal; only SIGCONT is added, so that a stopped process receives it.

    ``kill_stopped``: a stopped target is killed as it is, never continued. Its listening socket
    lives on in a replacement (``takeover``): continued, it would accept some of the queued
    connections only to be killed with them.
    """
    handles: List[Target] = []
    outcomes: Dict[int, Dict[str, Any]] = {}
    for spec in targets:
        target = Target(spec["pid"], spec["start_ticks"])
        if not target.same_process():
            target.close()
            outcomes[target.pid] = {"outcome": "already gone"}
            continue
        handles.append(target)
    started = time.monotonic()
    cpu_before = {t.pid: cpu_ticks(t.pid) for t in handles}
    opened = handles
    try:
        frozen = [t for t in handles if kill_stopped and (read_stat(t.pid) or ("", ["?"]))[1][0] in STOPPED_STATES]
        for target in frozen:
            target.send(signal.SIGKILL)
        for target in _wait_gone(frozen, time.monotonic() + kill_timeout, poll_interval):
            outcomes[target.pid] = {"outcome": "still running after SIGKILL"}
        for target in frozen:
            outcomes.setdefault(target.pid, {"outcome": "killed (SIGKILL) while stopped"})
        opened, handles = handles, [t for t in handles if t not in frozen]
        for target in handles:
            if not owner_signalled:
                target.send(signal.SIGTERM)
            target.send(signal.SIGCONT)
        survivors = handles
        reason = "after grace %.1fs" % grace
        if hung_after is not None and listening:
            survivors = _wait_gone(handles, started + min(hung_after, grace), poll_interval)
            if survivors and _still_listening(survivors, listening):
                reason = "still listening %.1fs after SIGTERM" % hung_after
            else:
                survivors = _wait_gone(survivors, started + grace, poll_interval)
        else:
            survivors = _wait_gone(handles, started + grace, poll_interval)
        waited = max(time.monotonic() - started, 0.01)
        for target in handles:
            outcomes[target.pid] = {"outcome": "exited on its owner's stop" if owner_signalled else "exited on SIGTERM"}
        for target in survivors:  # the share of one CPU each used while ignoring SIGTERM
            after, before = cpu_ticks(target.pid), cpu_before[target.pid]
            if after is not None and before is not None:
                outcomes[target.pid]["cpu_busy"] = round((after - before) / CLK_TCK / waited, 2)
        for target in survivors:
            target.send(signal.SIGKILL)
        stubborn = _wait_gone(survivors, time.monotonic() + kill_timeout, poll_interval)
        for target in survivors:
            outcomes[target.pid]["outcome"] = (
                "still running after SIGKILL" if target in stubborn else "killed (SIGKILL) %s" % reason
            )
    finally:
        for target in opened:
            target.close()
    return {
        "outcomes": [dict(o, pid=pid) for pid, o in sorted(outcomes.items())],
        "elapsed_s": round(time.monotonic() - started, 3) if handles else 0.0,
    }


def _signal_one(pid: int, start_ticks: int, sig: int) -> Dict[str, int]:
    target = Target(pid, start_ticks)
    try:
        if not target.same_process():
            raise AgentError("process %d is gone or was replaced" % pid)
        target.send(sig)
    finally:
        target.close()
    return {"pid": pid}


@command
def suspend(pid: int, start_ticks: int) -> Dict[str, int]:
    """SIGSTOP one process (the demo's way to make a backend hang)."""
    return _signal_one(pid, start_ticks, signal.SIGSTOP)


@command
def reload(pid: int, start_ticks: int) -> Dict[str, int]:
    """SIGHUP one process: a gunicorn master starts new workers, then stops the old ones gracefully."""
    return _signal_one(pid, start_ticks, signal.SIGHUP)


@command
def wait_gone(targets: List[Dict[str, int]], timeout: float, poll_interval: float = 0.02) -> List[int]:
    """Wait until the pinned ``targets`` have exited; the pids still alive at ``timeout``."""
    handles = [Target(spec["pid"], spec["start_ticks"]) for spec in targets]
    try:
        return [t.pid for t in _wait_gone(handles, time.monotonic() + timeout, poll_interval)]
    finally:
        for target in handles:
            target.close()


def _served_connections(port: int) -> Set[int]:
    """Inodes of the server side of the connections on ``port`` (established or closing)."""
    inodes: Set[int] = set()
    for _, fields in tcp_table():
        if fields[3] != "0A" and fields[1].endswith(":%04X" % port) and fields[9] != "0":
            inodes.add(int(fields[9]))
    return inodes


def _stopped(targets: List[Target], deadline: float) -> bool:
    while time.monotonic() < deadline:
        if all((read_stat(t.pid) or ("", ["T"]))[1][0] in STOPPED_STATES + GONE_STATES for t in targets):
            return True
        time.sleep(0.002)
    return False


RETIRE_TRY_S = 1.0  # how long a healthy backend is waited for to be idle before its own drain is used


@command
def retire(
    targets: List[Dict[str, int]],
    port: int,
    grace: float,
    listening: Optional[List[int]] = None,
    poll_interval: float = 0.02,
) -> Dict[str, Any]:
    """Retire a healthy backend whose replacement already serves its (kept) listening socket, losing
    no connection. Its own graceful shutdown would close the connections it has just accepted and
    not yet read (uvicorn does): instead it is paused, and killed while paused only when it holds
    no connection at all; otherwise it is let run a moment to finish what it holds, and tried again.
    A backend that stays busy that long (a slow request, a WebSocket) gets the ordinary ``terminate``:
    SIGTERM, its own drain within ``grace``, then SIGKILL."""
    handles = [Target(spec["pid"], spec["start_ticks"]) for spec in targets]
    deadline = time.monotonic() + min(RETIRE_TRY_S, grace / 2)
    tries = 0
    try:
        while time.monotonic() < deadline:
            tries += 1
            for target in handles:
                target.send(signal.SIGSTOP)
            if _stopped(handles, time.monotonic() + 0.2):
                held: Set[int] = set()
                for target in handles:
                    try:
                        held.update(socket_inodes(target.pid))
                    except PermissionError:
                        held.add(-1)  # cannot tell: not idle
                if not held & _served_connections(port):
                    for target in handles:
                        target.send(signal.SIGKILL)
                    gone = _wait_gone(handles, time.monotonic() + 5.0, poll_interval)
                    return {
                        "outcomes": [
                            {
                                "pid": t.pid,
                                "outcome": "still running after SIGKILL"
                                if t in gone
                                else "retired idle (paused, holding no connection; try %d)" % tries,
                            }
                            for t in handles
                        ]
                    }
            for target in handles:
                target.send(signal.SIGCONT)
            time.sleep(poll_interval)
    finally:
        for target in handles:
            target.send(signal.SIGCONT)
            target.close()
    return terminate(targets, grace, listening=listening)
