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

from ..facts import Diagnosis, PortHolder, ProcessFacts

PROTECTED_WHY = "protected: it is this run's own process or one of its ancestors (or PID 1)"


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


def plan_termination(d: Diagnosis, process_match: str, force: bool, started: Optional[int] = None) -> TerminationPlan:
    """The processes to signal for ``d``'s holders, the holders refused, and the relatives spared.

    ``started``: the pid an earlier run recorded for the backend it started. Alive, matching
    ``process_match`` and holding nothing, it is a backend still starting (or stuck starting):
    it goes too, so a new start never runs beside it. A reused pid running something else does not.
    """
    pattern = re.compile(process_match)
    protected = set(d.protected) | {1}  # the agent's own chain on that host: the runner, or its SSH session
    judged = d.in_the_way  # a listener on another address cannot block the backend: never judged
    eligible = [h for h in judged if h.pid not in protected and pattern.search(_backend_command(d, h))]
    pending = [h for h in judged if h not in eligible]
    inodes: Set[int] = {i for h in eligible for i in h.inodes}
    grew = True
    while grew:  # an inherited socket: its other holders keep the port, so they are the backend too
        grew = False
        for holder in list(pending):
            if holder.inodes & inodes and holder.pid not in protected:
                eligible.append(holder)
                inodes |= holder.inodes
                pending.remove(holder)
                grew = True
    refused = tuple(Refusal(h, PROTECTED_WHY if h.pid in protected else
                            "does not match process_match %r (set force=true to include it)" % process_match)
                    for h in pending if h.pid in protected or not force)
    roots = [h.process for h in eligible + [h for h in pending if h.pid not in protected and force]]
    own = d.processes.get(started) if started is not None else None
    if (own is not None and own.pid not in protected and not own.zombie and own.pid not in {h.pid for h in d.holders}
            and pattern.search(own.command)):
        roots.append(own)
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
    return TerminationPlan(tuple(d.processes[p] for p in targets), refused,
                           tuple(d.processes[p] for p in spared if p not in targets))
