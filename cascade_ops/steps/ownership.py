"""Through whom a recovery acts: the holders' owner (a systemd unit, a supervisord program, a docker
container), a gunicorn master for its own workers, or nobody (cascade-ops signals and starts the
backend itself). A pure function of the facts and the host's manager settings, unit-tested on
constructed ones.

Going through the owner is what keeps a recovery from making things worse: an owner that respawns
what it runs would race a copy started beside it (two backends, an EADDRINUSE loop, a unit that
says "inactive" while something it does not know serves the port).
"""

import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from cascade_ops.config.hostvars import HostVars
from cascade_ops.model.facts import Diagnosis, ProcessFacts, gunicorn_master
from cascade_ops.model.owners import DETACHED, Owner, kinds, name_var
from cascade_ops.steps.base import StepFailed

OWNER, DETACH, RELOAD, WORKERS = "owner", "detached", "reload", "workers"


@dataclass(frozen=True)
class Route:
    action: str  # OWNER: stop and start through ``owner``; DETACH: signal and start ourselves;
    # RELOAD: SIGHUP a healthy gunicorn master; WORKERS: end hung workers, their master respawns them
    owner: Owner = DETACHED
    targets: Tuple[ProcessFacts, ...] = ()  # the processes that must go (pinned, killed if they linger)
    master: Optional[ProcessFacts] = None
    notes: Tuple[str, ...] = ()

    def describe(self) -> str:
        if self.action == RELOAD and self.master:
            return "reload gunicorn master pid %d (SIGHUP: new workers, then the old ones drain)" % self.master.pid
        if self.action == WORKERS and self.master:
            return "end the hung workers of gunicorn master pid %d (%s); it respawns them" % (
                self.master.pid,
                ", ".join(str(p.pid) for p in self.targets),
            )
        if self.action == OWNER:
            return "ask %s to stop" % self.owner.describe()
        return "terminate"


def effective_manager(v: HostVars) -> str:
    """``manager``, or under ``auto`` the kind that ``unit``/``program``/``container`` name (else auto)."""
    if v.manager != "auto":
        return v.manager
    return next((kind for kind in kinds() if v.get(name_var(kind) or "")), "auto")


def configured_name(kind: str, v: HostVars) -> Optional[str]:
    var = name_var(kind)
    return v.get(var) if var else None


def _names(owner: Owner, name: str) -> bool:
    """Whether the configured ``name`` is this owner (a container also by a prefix of its id)."""
    container = str(owner.raw.get("container", ""))
    return name in (owner.name, container) or (len(name) >= 12 and bool(container) and container.startswith(name))


def is_stray(owner: Owner, pid: int, d: Diagnosis, v: HostVars) -> bool:
    """A process in a unit's cgroup that the unit does not run: started from a cron job or from an
    SSH session without a login manager, then detached. That unit (cron, ssh) is not the backend's."""
    if owner.kind != "systemd" or v.unit == owner.name or not owner.reachable:
        return False  # a unit that cannot be asked cannot be judged either: it stays the owner
    if owner.main_pid and (owner.main_pid == pid or owner.main_pid in d.ancestors(pid)):
        return False
    return not re.search(v.process_match, owner.exec_start)


def route(d: Diagnosis, targets: Tuple[ProcessFacts, ...], v: HostVars, healthy: bool) -> Route:
    """How to stop ``targets`` (the proven stale backend); StepFailed, before any signal, when the
    owner cannot be asked or the host's settings and what is observed disagree."""
    manager = effective_manager(v)
    wanted = {p.pid for p in targets}
    owners: Dict[Owner, List[int]] = {}
    notes: List[str] = []
    for holder in d.in_the_way:
        if holder.pid not in wanted:
            continue
        owner = holder.owner
        if is_stray(owner, holder.pid, d, v):
            notes.append(
                "pid %d runs in the cgroup of %s, which does not run it: treated as detached" % (holder.pid, owner.name)
            )
            owner = DETACHED
        owners.setdefault(owner, []).append(holder.pid)
    managed = [o for o in owners if o.managed]
    if len(managed) > 1:
        raise StepFailed(
            "the port's holders have different owners (%s): refusing to signal anything"
            % "; ".join("pid %s by %s" % (",".join(map(str, owners[o])), o.describe()) for o in managed)
        )
    observed = managed[0] if managed else DETACHED
    pids = ",".join(str(p) for p in owners.get(observed, sorted(wanted)))
    if manager == "detached" and observed.managed:
        raise StepFailed(
            "manager is detached, but pid %s is run by %s: set manager to %s (or auto)"
            % (pids, observed.describe(), observed.kind)
        )
    if manager in kinds() and owners:
        name = configured_name(manager, v)
        if observed.kind != manager or (name and not _names(observed, name)):
            raise StepFailed(
                "manager is %s%s, but pid %s is run by %s%s: refusing to signal anything"
                % (
                    manager,
                    " (%s)" % name if name else "",
                    pids,
                    observed.describe(),
                    " (cgroup %s)" % observed.cgroup if not observed.managed and observed.cgroup else "",
                )
            )
    if observed.managed and not observed.reachable:
        raise StepFailed(
            "pid %s is run by %s, which cannot be asked from here (%s): refusing to signal it, "
            "its owner would restart it beside ours" % (pids, observed.describe(), observed.why)
        )
    master = gunicorn_master(targets)
    if master is not None and not (master.stopped or master.zombie):
        workers = tuple(p for p in targets if p.ppid == master.pid)
        if healthy:
            return Route(RELOAD, observed, (master,), master, tuple(notes))
        return Route(WORKERS, observed, tuple(w for w in workers if w.stopped) or workers, master, tuple(notes))
    return Route(OWNER if observed.managed else DETACH, observed, targets, None, tuple(notes))
