"""The terminate step: stop the stale backend, and only it (through its owner when it has one),
or keep its listening socket for the replacement and stop it once the replacement serves."""

import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from cascade_ops import agent
from cascade_ops.config.hostvars import HostVars
from cascade_ops.model.facts import Diagnosis, ProcessFacts
from cascade_ops.model.paths import StatePaths
from cascade_ops.steps import ownership
from cascade_ops.steps.base import Args, Context, HostRun, Outcome, Plan, Step, StepFailed, Unchanged
from cascade_ops.steps.diagnose import gather_diagnosis, left_alone
from cascade_ops.steps.outputs import (
    Diagnosed,
    Evidence,
    FileChanged,
    Restarted,
    RestartPlanned,
    Signalled,
    SocketKept,
    SocketPlan,
    StopPlanned,
)
from cascade_ops.steps.owned import reload_master
from cascade_ops.steps.takeover import FD_PLACEHOLDER, Handover, kept_socket, plan_handover
from cascade_ops.steps.termination import judge_recorded, plan_termination

FRESH_FACTS_S = 2.0  # a diagnosis younger than this is reused by terminate instead of a second scan
# A live uvicorn closes its listener within milliseconds of SIGTERM; one still listening this long
# after it never will (its event loop, where it handles signals, is blocked).
HUNG_AFTER_S = 0.1


def describe(proc: ProcessFacts) -> str:
    command = proc.command if len(proc.command) <= 90 else proc.command[:87] + "..."
    return "pid %d (%s, %s, user %s: %s)" % (proc.pid, proc.state, "%.0fs old" % proc.age_s, proc.user, command)


def backend_user(v: HostVars, d: Diagnosis) -> str:
    """Whose processes may be the backend: ``backend_user``, else the user an earlier run started it
    as (its start record), else the user this run acts as."""
    record = d.recorded.record if d.recorded is not None else None
    return str(v.backend_user or (record or {}).get("user") or d.run_user)


@dataclass(frozen=True)
class StopFacts:
    diagnosed: Optional[Diagnosis]  # the diagnose step's
    current: Optional[Diagnosis]  # read again unless fresh; None when the backend is left alone
    socket_check: Optional[Dict[str, Any]]  # whether the host lets this run copy the listening socket
    changed: Tuple[str, ...]  # the files earlier steps change


@dataclass(frozen=True)
class StopPlan:
    diagnosis: Diagnosis
    route: ownership.Route
    handover: Optional[Handover]
    hung: bool
    aside: str  # what was left alone, and why the socket is not kept


class Terminate(Step[StopFacts, StopPlan]):
    """Stop the stale backend and only it: SIGTERM + SIGCONT, then SIGKILL after ``grace``.

    Runs only when the backend is unhealthy or an earlier step changed what it runs; a healthy,
    up-to-date backend is never restarted. Success is judged by the port, not by the signals.
    """

    name = "terminate"

    def rollback_args(self, args: Args) -> Optional[Args]:
        return args  # the failed release's backend is stopped before the previous files start

    def gather(self, run: HostRun, args: Args) -> StopFacts:
        diagnosed = run.last(Diagnosed)
        prior = diagnosed.diagnosis if diagnosed else None
        changed = tuple(f.path for f in run.every(FileChanged))
        if left_alone(run) is not None:
            return StopFacts(prior, None, None, changed)  # nothing will be signalled: no second scan
        d = prior
        if diagnosed is None or time.monotonic() - diagnosed.at >= FRESH_FACTS_S:
            d = gather_diagnosis(run, probe=False)
        assert d is not None
        # Seconds-old facts are safe to act on: each signal is pinned to a process's start time,
        # and success is judged by the port, so a newcomer is named, never missed.
        return StopFacts(prior, d, self._can_keep_socket(run, d), changed)

    @staticmethod
    def _can_keep_socket(run: HostRun, d: Diagnosis) -> Optional[Dict[str, Any]]:
        """Whether the host lets this run copy the listening socket now (copied and closed at once)."""
        found = kept_socket(d)
        command = run.vars.start_command
        if (
            found is None
            or not run.vars.keep_socket
            or (command and FD_PLACEHOLDER not in command)
            or any(h.owner.managed for h in d.in_the_way)
        ):  # an owner restarts it: not ours to keep
            return None
        inode, holder = found
        return run.transport.call(
            agent.takeover.take_over_check, pid=holder.pid, start_ticks=holder.start_ticks, inode=inode
        )

    def plan(self, facts: StopFacts, args: Args, ctx: Context) -> Outcome[StopPlan]:
        v, prior, d = ctx.vars, facts.diagnosed, facts.current
        if d is None:
            if prior is not None and prior.slow:
                return Unchanged(
                    "%s; nothing it runs changed: left running (restart_slow: true restarts a slow "
                    "backend)" % prior.verdict()
                )
            return Unchanged("backend healthy and nothing it runs changed: left running")
        orphans = [s for s in d.orphan_sockets if s.in_the_way]
        if orphans:
            raise StepFailed(
                "port %d is held by a process this user cannot see (%s); run as its owner or root"
                % (d.port, ", ".join(s.endpoint for s in orphans))
            )
        others = ""
        if d.bystanders:
            others = " (left alone, on another address: %s)" % "; ".join(
                "%s on %s" % (describe(h.process), ",".join(s.endpoint for s in h.sockets)) for h in d.bystanders
            )
        # The backend an earlier run started (its pid file, read with the facts) may still be
        # starting, not listening yet: it is ours to stop too, or the start step would run a second
        # copy beside it; but only when its start record proves it is still that backend.
        started, unproven = judge_recorded(d, v.port, v.app_dir)
        if unproven:
            others += "; left alone: %s" % unproven
        termination = plan_termination(d, v.process_match, v.force, started, backend_user(v, d))
        if not termination.targets and not termination.refused:
            return Unchanged("port %d is free for %s%s" % (d.port, v.bind_host, others), register=(RestartPlanned(),))
        if termination.refused:
            raise StepFailed(
                "refusing to signal anything: port %d is also held by %s"
                % (d.port, "; ".join("%s, which %s" % (describe(r.holder.process), r.why) for r in termination.refused))
            )
        healthy = prior is not None and prior.healthy
        way = ownership.route(d, termination.targets, v, healthy)
        why = "files changed: %s" % ", ".join(facts.changed) if healthy else d.verdict()
        spared = "; left alone: %s" % "; ".join(describe(p) for p in termination.spared) if termination.spared else ""
        aside = spared + others + "".join("; " + note for note in way.notes)
        handover, not_kept = plan_handover(d, way, v, facts.socket_check)
        socket = SocketPlan(
            handover is not None or d.socket_unit is not None,
            not_kept or ("systemd's socket unit holds it" if d.socket_unit is not None else ""),
            d.backlog,
        )
        hung = not (prior is not None and (prior.healthy or prior.slow))
        register = (RestartPlanned(), StopPlanned(way, handover, socket, hung))
        payload = StopPlan(d, way, handover, hung, aside)
        if way.action in (ownership.RELOAD, ownership.WORKERS):
            return Plan("%s [%s]%s" % (way.describe(), why, aside), payload=payload, register=register)
        stale = "; ".join(describe(p) for p in way.targets)
        if handover is not None:
            return Plan(
                "keep port %d's listening socket (%d connections waiting), start the replacement on it, "
                "then stop %s [%s]%s" % (d.port, handover.waiting, stale, why, aside),
                payload=payload,
                register=register,
            )
        aside += "; socket not kept: %s" % not_kept if not_kept else ""
        return Plan(
            "%s %s [%s]%s" % (way.describe(), stale, why, aside),
            payload=StopPlan(d, way, handover, hung, aside),
            register=register,
        )

    def apply(self, run: HostRun, args: Args, plan: Plan[StopPlan]) -> str:
        v, stop = run.vars, plan.payload
        way = stop.route
        # Killing destroys the only evidence of why it hung: capture it first, within a deadline.
        evidence_pids = [p.pid for p in way.targets] + ([way.owner.main_pid] if way.owner.via else [])
        evidence = run.transport.call(
            agent.evidence.evidence,
            pids=evidence_pids,
            timeout=v.evidence_timeout,
            log_path=StatePaths.of(v).backend_log,
            redact=[v.jwt_secret_file],
        )
        run.register(Evidence(evidence), Restarted())
        targets = [{"pid": p.pid, "start_ticks": p.start_ticks} for p in way.targets]
        if stop.handover is not None:  # nothing is signalled yet: the replacement starts on the kept socket first
            kept = stop.handover
            fd = run.transport.call(
                agent.takeover.take_over, pid=kept.holder.pid, start_ticks=kept.holder.start_ticks, inode=kept.inode
            )["fd"]
            run.register(SocketKept(fd))
            return (
                "kept port %d's listening socket (copied from pid %d; %d connections waiting); to stop once "
                "the replacement runs: %s%s"
                % (v.port, kept.holder.pid, kept.waiting, ", ".join("pid %d" % p.pid for p in way.targets), stop.aside)
            )
        if way.action == ownership.RELOAD:
            return reload_master(run, way, stop.diagnosis, stop.aside)
        listening = sorted({i for h in stop.diagnosis.in_the_way for i in h.inodes})
        if way.action == ownership.OWNER:
            grace, hung_after = _graces(v, stop.hung)
            done = run.transport.call(
                agent.owners.owner_stop,
                owner=way.owner.raw,
                targets=targets,
                listening=listening,
                grace=grace,
                hung_after=hung_after,
            )
            run.register(Signalled(tuple(done["outcomes"])))
        else:
            done = stop_stale(run, targets, listening, kept_socket=False, hung=stop.hung)
        outcomes = ", ".join("pid %d %s" % (o["pid"], o["outcome"]) for o in done["outcomes"])
        if way.action == ownership.WORKERS:
            assert way.master is not None
            return "%s; gunicorn master pid %d respawns them%s" % (outcomes, way.master.pid, stop.aside)
        asked = "asked %s to stop: " % way.owner.describe() if way.action == ownership.OWNER else ""
        if stop.diagnosis.socket_unit is not None:  # the port is systemd's
            return "%s%s; port %d kept by systemd's socket unit (its queue too)%s" % (
                asked,
                outcomes,
                v.port,
                stop.aside,
            )
        if not run.transport.call(
            agent.probe.wait_port_free, bind_host=v.bind_host, port=v.port, timeout=max(5.0, v.grace)
        ):
            left = gather_diagnosis(run, probe=False)
            raise StepFailed(
                "%s, but port %d is still held by %s"
                % (outcomes, v.port, "; ".join(describe(h.process) for h in left.holders) or "an unseen process")
            )
        return "%s%s; port %d free%s" % (asked, outcomes, v.port, stop.aside)


def _graces(v: HostVars, hung: bool) -> Tuple[float, Optional[float]]:
    """A healthy (or slow) backend replaced for new files drains within ``grace``. One known hung gets
    ``hung_grace``, and is killed at once if it still listens shortly after SIGTERM."""
    return (v.hung_grace, HUNG_AFTER_S) if hung else (v.grace, None)


def stop_stale(
    run: HostRun, targets: List[Dict[str, int]], listening: List[int], kept_socket: bool, hung: bool
) -> Dict[str, Any]:
    """Stop the stale backend's processes, pinned, and register how each ended. With the socket kept
    by a replacement, a stopped one is killed as it is (continued, it would take queued connections
    down with it), and a healthy one is retired only while it holds no connection (its own shutdown
    would drop new ones)."""
    grace, hung_after = _graces(run.vars, hung)
    if kept_socket and hung_after is None:
        done = run.transport.call(
            agent.signals.retire, targets=targets, port=run.vars.port, grace=grace, listening=listening
        )
    else:
        done = run.transport.call(
            agent.signals.terminate,
            targets=targets,
            grace=grace,
            listening=listening,
            hung_after=hung_after,
            kill_stopped=kept_socket and hung_after is not None,
        )
    run.register(Signalled(tuple(done["outcomes"])))
    return done
