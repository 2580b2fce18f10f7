"""The start step: start a fresh backend, through its owner when it has one, else detached; it
serves when its health path answers."""

import shlex
import time
from dataclasses import dataclass, replace
from typing import List, Optional

from cascade_ops import agent
from cascade_ops.config.hostvars import HostVars
from cascade_ops.model.facts import Diagnosis, owner_hints
from cascade_ops.model.owners import Owner, kinds
from cascade_ops.model.paths import StatePaths
from cascade_ops.steps import ownership
from cascade_ops.steps.base import Args, Context, HostRun, Outcome, Plan, Step, StepFailed, Unchanged
from cascade_ops.steps.diagnose import gather_diagnosis, left_alone
from cascade_ops.steps.outputs import (
    Diagnosed,
    HandedOver,
    Restarted,
    RestartPlanned,
    SocketKept,
    Started,
    StopPlanned,
)
from cascade_ops.steps.owned import SECRET_ENV, backend_env, master_serves, start_owned, wait_healthy
from cascade_ops.steps.takeover import on_kept_socket
from cascade_ops.steps.terminate import describe, stop_stale
from cascade_ops.steps.verify import warm_up

LOG_TAIL_LINES = 20
SOCKET_FD = 3  # where systemd's socket activation hands a service its listener (SD_LISTEN_FDS_START)


def start_command(v: HostVars, fd: Optional[int] = None) -> List[str]:
    """The backend's command line; with ``fd``, the replacement started on a kept socket."""
    if v.start_command:
        argv = shlex.split(v.start_command)
        return on_kept_socket(argv, fd, default=False) if fd is not None else argv
    argv = [
        v.python,
        "-m",
        "uvicorn",
        v.app,
        "--app-dir",
        v.app_dir,
        "--host",
        v.bind_host,
        "--port",
        str(v.port),
    ]
    drain = int(v.grace) - 1  # open connections (a WebSocket) are closed before grace runs out
    argv = argv + ["--timeout-graceful-shutdown", str(drain)] if drain >= 1 else argv
    return on_kept_socket(argv, fd, default=True) if fd is not None else argv


@dataclass(frozen=True)
class StartFacts:
    current: Optional[Diagnosis]  # None after a planned restart
    configured: Optional[Owner]  # the owner the settings name, asked when nothing held the port
    stop: Optional[StopPlanned]  # terminate's plan: start follows its route
    kept_fd: Optional[int]  # the kept listening socket's descriptor, when terminate copied it
    diagnosed_at: Optional[float]  # when the diagnose step looked (the clients' wait began)


@dataclass(frozen=True)
class StartPlan:
    route: ownership.Route
    stop: Optional[StopPlanned]
    kept_fd: Optional[int]
    diagnosed_at: Optional[float]


class Start(Step[StartFacts, StartPlan]):
    """Start the backend: through its owner (a systemd unit, a supervisord program, a docker
    container, a gunicorn master) when it has one, else detached (own session, stdin /dev/null, log
    and pid file in state_dir); then wait for its health path to answer 200 within ``start_timeout``."""

    name = "start"

    def rollback_args(self, args: Args) -> Optional[Args]:
        return args

    def gather(self, run: HostRun, args: Args) -> StartFacts:
        stop = run.last(StopPlanned)
        kept = run.last(SocketKept)
        diagnosed = run.last(Diagnosed)
        facts = StartFacts(None, None, stop, kept.fd if kept else None, diagnosed.at if diagnosed else None)
        # After a planned restart the facts are about to change; in check mode they never will.
        if run.last(RestartPlanned) is None:
            alone = left_alone(run)
            if alone is not None:
                return replace(facts, current=alone)  # nothing happened since diagnose: its facts still hold
            facts = replace(facts, current=gather_diagnosis(run))
            assert facts.current is not None
            if facts.current.healthy or facts.current.blocking_sockets:
                return facts
        if stop is not None or ownership.effective_manager(run.vars) not in kinds():
            return facts
        # Nothing held the port, so no owner could be observed: ask the one the settings name.
        raw = run.transport.call(
            agent.owners.configured_owner, manager=ownership.effective_manager(run.vars), hints=owner_hints(run.vars)
        )
        return replace(facts, configured=Owner.from_agent(raw))

    def plan(self, facts: StartFacts, args: Args, ctx: Context) -> Outcome[StartPlan]:
        d, configured, stop, v = facts.current, facts.configured, facts.stop, ctx.vars
        if d is not None:
            pids = ", ".join(str(h.pid) for h in d.holders)
            if d.healthy:
                return Unchanged("running and healthy (pid %s)" % pids)
            if d.slow and not v.restart_slow:
                return Unchanged("running (pid %s), %s" % (pids, d.verdict()))
            if d.blocking_sockets:
                raise StepFailed("port %d is held and %s; run the terminate step first" % (d.port, d.verdict()))
        way = stop.route if stop is not None else ownership.Route(ownership.DETACH)
        if configured is not None:
            if not configured.reachable:
                raise StepFailed(
                    "%s cannot be asked to start the backend: %s" % (configured.describe(), configured.why)
                )
            way = ownership.Route(ownership.OWNER, configured)
        payload = StartPlan(way, stop, facts.kept_fd, facts.diagnosed_at)
        if way.action in (ownership.RELOAD, ownership.WORKERS):
            assert way.master is not None
            return Plan("wait for gunicorn master pid %d's new workers to serve" % way.master.pid, payload=payload)
        if way.action == ownership.OWNER:
            if way.owner.raw.get("load_state") == "not-found":
                socket = (
                    ""
                    if not v.systemd_socket
                    else (
                        " with %s.socket holding %s:%d and its queue across restarts"
                        % (way.owner.name.rsplit(".", 1)[0], v.bind_host, v.port)
                    )
                )
                return Plan(
                    "create transient systemd unit %s%s running %s"
                    % (way.owner.name, socket, shlex.join(start_command(v, SOCKET_FD if socket else None))),
                    payload=payload,
                )
            return Plan("ask %s to start it" % way.owner.describe(), payload=payload)
        if stop is not None and stop.handover is not None:
            return Plan(
                "start %s on port %d's kept socket, then stop the stale backend" % (v.app, v.port), payload=payload
            )
        return Plan("start %s on %s:%d" % (v.app, v.bind_host, v.port), payload=payload)

    def apply(self, run: HostRun, args: Args, plan: Plan[StartPlan]) -> str:
        v, todo = run.vars, plan.payload
        way = todo.route
        if way.action in (ownership.RELOAD, ownership.WORKERS):
            return master_serves(run, way)
        if way.action == ownership.OWNER:
            if v.systemd_socket and way.owner.raw.get("load_state") == "not-found":
                return start_owned(run, way, start_command(v, SOCKET_FD), listen=(v.bind_host, v.port))
            return start_owned(run, way, start_command(v))
        paths = StatePaths.of(v)
        offset = run.transport.call(agent.files.file_size, path=paths.backend_log)  # this start's lines begin here
        run.register(Restarted())
        stop = todo.stop
        kept = stop.handover if stop is not None and todo.kept_fd is not None else None
        spawned = run.transport.call(
            agent.launch.spawn,
            argv=start_command(v, todo.kept_fd),
            cwd=v.app_dir,
            log=paths.backend_log,
            pidfile=paths.backend_pid,
            env=backend_env(v),
            secret_env={SECRET_ENV: v.jwt_secret_file},
            port=v.port,
            inherit=[kept.inode] if kept else None,
        )
        pid = spawned["pid"]
        run.register(Started(pid))
        unrecorded = "; not recorded in %s" % spawned["unrecorded"] if spawned.get("unrecorded") else ""
        handed = ""
        if stop is not None and kept is not None:  # the replacement holds the queue: the stale one goes
            done = stop_stale(
                run,
                [{"pid": p.pid, "start_ticks": p.start_ticks} for p in stop.route.targets],
                [kept.inode],
                kept_socket=True,
                hung=stop.hung,
            )
            handed = "; on the kept socket (%d connections were waiting, none refused); %s" % (
                kept.waiting,
                ", ".join("pid %d %s" % (o["pid"], o["outcome"]) for o in done["outcomes"]),
            )
        warm_up()  # verify's clients load while the backend boots
        ready = wait_healthy(run, pid)
        if not ready["ok"]:
            why = {
                "exited": "exited during start-up",
                "slow": "serves, but slower than probe_timeout %gs (slow, not hung: as slow as the one it "
                "replaced; not restarted again)" % v.probe_timeout,
            }.get(ready["reason"], "not healthy within %.0fs" % v.start_timeout)
            raise StepFailed("backend pid %d %s%s; %s" % (pid, why, unrecorded, self._log_tail(run, offset)))
        serving = gather_diagnosis(run, probe=False)
        ours = [h.pid for h in serving.holders if h.pid == pid or pid in serving.ancestors(h.pid)]
        if not ours:  # healthy, but not thanks to us: another process answers on the port
            others = "; ".join(describe(h.process) for h in serving.holders) or "a process this user cannot see"
            raise StepFailed(
                "backend pid %d does not hold port %d, which is served by %s; %s"
                % (pid, v.port, others, self._log_tail(run, offset))
            )
        if kept is not None and todo.diagnosed_at is not None:
            run.register(HandedOver(pid, round(time.monotonic() - todo.diagnosed_at, 3)))
        return "started pid %d, healthy after %.2fs%s%s" % (pid, ready["elapsed_s"], handed, unrecorded)

    @staticmethod
    def _log_tail(run: HostRun, offset: int) -> str:
        v = run.vars
        lines = run.transport.call(
            agent.files.tail,
            path=StatePaths.of(v).backend_log,
            lines=LOG_TAIL_LINES,
            since=offset,
            redact=[v.jwt_secret_file],
        )
        if not lines:
            return "%s has no lines from this start" % StatePaths.of(v).backend_log
        return "its lines in %s:\n%s" % (StatePaths.of(v).backend_log, "\n".join("  | " + line for line in lines))
