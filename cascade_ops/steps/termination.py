"""Which processes a recovery may signal: a pure function of the facts, unit-tested on constructed
ones. The rule: a process is part of the stale backend only if it *is* the backend (a holder of
the port whose command line matches ``process_match``, or one sharing a listening socket with
such a holder), or a worker of it (a descendant running the same program). Never because some
argument string of a relative matches: a shell, tmux or screen above the backend, a supervisor
script beside it, or an unrelated child is reported and left alone.
"""

import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Set, Tuple

from cascade_ops.model.facts import Diagnosis, PortHolder, ProcessFacts

PROTECTED_WHY = "protected: it is this run's own process or one of its ancestors (or PID 1)"


def judge_recorded(d: Diagnosis, port: int, app_dir: str) -> Tuple[Optional[ProcessFacts], str]:
    """The backend an earlier run started, when the facts prove that the recorded pid is still it,
    else None and why not ("" when there is nothing to say: no pid file, the process is gone, or it
    holds the port and is judged as a holder). A pid file is a claim: the pid may have been reused by
    another program, the state dir copied from another host or app. Proof is the start record
    written with it: the same start time, command line, working directory (app_dir) and port."""
    claim = d.recorded
    proc = d.processes.get(claim.pid) if claim is not None else None
    if claim is None or proc is None or proc.zombie or proc.pid in {h.pid for h in d.holders}:
        return None, ""
    record = claim.record or {}
    named = "pid %d named by backend.pid" % proc.pid
    if not record:
        return None, "%s has no start record (an older cascade-ops or a hand-written pid file)" % named
    checks = (
        (record.get("pid") == proc.pid, "the start record names pid %s" % record.get("pid")),
        (record.get("start_ticks") == proc.start_ticks, "it started at another time than recorded (a reused pid)"),
        (record.get("argv") == list(proc.cmdline), "its command line is not the one recorded"),
        (
            record.get("cwd") == app_dir and claim.live_cwd == record.get("cwd_real"),
            "it runs in %s, not in app_dir %s" % (claim.live_cwd or "a directory this user cannot read", app_dir),
        ),
        (record.get("port") == port, "it was started for port %s, not %d" % (record.get("port"), port)),
    )
    for proven, why in checks:
        if not proven:
            return None, "%s: %s" % (named, why)
    return proc, ""


@dataclass(frozen=True)
class Refusal:
    holder: PortHolder
    why: str


@dataclass(frozen=True)
class TerminationPlan:
    targets: Tuple[ProcessFacts, ...]  # every process to signal: the holders and their workers
    refused: Tuple[Refusal, ...]  # holders not proven to be the stale backend: nothing is signalled
    spared: Tuple[ProcessFacts, ...]  # descendants of a holder that are not the backend: left alone


def same_program(a: ProcessFacts, b: ProcessFacts) -> bool:
    """Whether two processes run the same executable (a reloader and its worker, a master and its
    workers). By /proc/PID/exe when both are known, else by the kernel's command name."""
    if a.exe and b.exe:
        return a.exe == b.exe
    return a.comm == b.comm


def _children(d: Diagnosis) -> Dict[int, List[int]]:
    children: Dict[int, List[int]] = {}
    for proc in d.processes.values():
        children.setdefault(proc.ppid, []).append(proc.pid)
    return children


def _backend_command(d: Diagnosis, holder: PortHolder) -> str:
    """What the holder serves: itself, or for a port forwarder (docker-proxy) the container's main
    process, which is what ``process_match`` describes."""
    main = d.processes.get(holder.owner.main_pid) if holder.owner.via else None
    return main.command if main is not None else holder.process.command


def _other_user(holder: PortHolder, backend_user: Optional[str]) -> bool:
    """A detached holder run by another user than the backend's. An owner-managed one is asked to
    stop through its owner (systemd, supervisord, dockerd), which runs it as whom it was told to."""
    return bool(backend_user) and not holder.owner.managed and holder.process.user != backend_user


def plan_termination(
    d: Diagnosis,
    process_match: str,
    force: bool,
    started: Optional[ProcessFacts] = None,
    backend_user: Optional[str] = None,
) -> TerminationPlan:
    """The processes to signal for ``d``'s holders, the holders refused, and the relatives spared.

    ``started``: the backend an earlier run started, proven by ``judge_recorded``. Holding nothing,
    it is a backend still starting (or stuck starting): it goes too, so a new start never runs
    beside it. ``backend_user``: a detached holder run by another user is refused, unless ``force``.
    """
    pattern = re.compile(process_match)
    protected = set(d.protected) | {1}  # the agent's own chain on that host: the runner, or its SSH session
    judged = d.in_the_way  # a listener on another address cannot block the backend: never judged
    eligible = [
        h
        for h in judged
        if h.pid not in protected and pattern.search(_backend_command(d, h)) and not _other_user(h, backend_user)
    ]
    inodes: Set[int] = {i for h in eligible for i in h.inodes}
    kept = d.socket_unit  # systemd's socket unit holds the listener the service's processes inherited
    pending = [h for h in judged if h not in eligible and not (h is kept and h.inodes <= inodes)]
    grew = True
    while grew:  # an inherited socket: its other holders keep the port, so they are the backend too
        grew = False
        for holder in list(pending):
            if holder.inodes & inodes and holder.pid not in protected and not _other_user(holder, backend_user):
                eligible.append(holder)
                inodes |= holder.inodes
                pending.remove(holder)
                grew = True
    refused = tuple(
        Refusal(h, _refusal(h, process_match, backend_user, protected))
        for h in pending
        if h.pid in protected or not force
    )
    roots = [h.process for h in eligible + [h for h in pending if h.pid not in protected and force]]
    if started is not None and started.pid not in protected and started.pid not in {h.pid for h in d.holders}:
        roots.append(started)
    children = _children(d)
    targets: List[int] = []
    spared: List[int] = []
    for root in roots:
        todo = [root.pid]
        while todo:  # the holder, then its workers: descendants running the same program
            pid = todo.pop(0)
            if pid in targets or pid in protected:
                continue
            targets.append(pid)
            for child in children.get(pid, ()):
                if same_program(d.processes[child], root):
                    todo.append(child)
                elif child not in spared:
                    spared.append(child)
    return TerminationPlan(
        tuple(d.processes[p] for p in targets), refused, tuple(d.processes[p] for p in spared if p not in targets)
    )


def _refusal(holder: PortHolder, process_match: str, backend_user: Optional[str], protected: Set[int]) -> str:
    if holder.pid in protected:
        return PROTECTED_WHY
    if _other_user(holder, backend_user):
        return "runs as user %s, not as the backend's user %s (backend_user; set force=true to include it)" % (
            holder.process.user,
            backend_user,
        )
    return "does not match process_match %r (set force=true to include it)" % process_match
