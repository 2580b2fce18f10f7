"""Acting through a backend's owner: start it by its systemd unit, supervisord program or docker
container, reload a gunicorn master, wait for a master to respawn its workers. Each confirms the
outcome by the port: exactly the owner's processes serve it, healthy."""

from typing import Any, Dict, List, Optional, Tuple

from cascade_ops import agent
from cascade_ops.config.hostvars import HostVars
from cascade_ops.model.facts import Diagnosis
from cascade_ops.model.owners import Owner, what
from cascade_ops.model.paths import StatePaths
from cascade_ops.steps.base import HostRun, StepFailed
from cascade_ops.steps.diagnose import gather_diagnosis
from cascade_ops.steps.outputs import Restarted, Started
from cascade_ops.steps.ownership import Route

LOG_TAIL_LINES = 20


def backend_env(v: HostVars) -> Dict[str, str]:
    env = {"PYTHONUNBUFFERED": "1"}
    for var, name in (("redis_url", "CASCADE_REDIS_URL"), ("citizen_api", "CASCADE_CITIZEN_API")):
        if v[var]:
            env[name] = v[var]
    return env


SECRET_ENV = "CASCADE_JWT_SECRET"


def same_owner(a: Owner, b: Owner) -> bool:
    ident = ("unit", "conf", "program", "container", "name")
    return a.kind == b.kind and all(a.raw.get(k) == b.raw.get(k) for k in ident if k in a.raw and k in b.raw)


def wait_healthy(run: HostRun, pid: Optional[int] = None) -> Dict[str, Any]:
    """Until the backend (``pid``, or whoever its owner started) answers health, or start_timeout."""
    v = run.vars
    return run.transport.call(
        agent.probe.wait_healthy,
        pid=pid,
        bind_host=v.bind_host,
        port=v.port,
        path=v.health_path,
        timeout=v.start_timeout,
        probe_timeout=v.probe_timeout,
    )


def _pids(pids: List[int]) -> str:
    return ", ".join(str(p) for p in sorted(pids)) or "none"


def start_owned(run: HostRun, way: Route, argv: List[str], listen: Optional[Tuple[str, int]] = None) -> str:
    """Ask the owner to start the backend (a missing systemd unit is created as a transient one;
    with ``listen``, with a socket unit that holds that address and its queue across restarts)."""
    v = run.vars
    owner = way.owner
    started = run.transport.call(
        agent.owners.owner_start,
        owner=owner.raw,
        argv=argv,
        cwd=v.app_dir,
        log=StatePaths.of(v).backend_log,
        env_file=StatePaths.of(v).backend_env,
        env=backend_env(v),
        secret_env={SECRET_ENV: v.jwt_secret_file},
        listen="%s:%d" % ("[%s]" % listen[0] if ":" in listen[0] else listen[0], listen[1]) if listen else None,
    )
    run.register(Restarted())
    ready = wait_healthy(run)
    now = Owner.from_agent(dict(owner.raw, **run.transport.call(agent.owners.owner_status, owner=owner.raw)))
    if not ready["ok"]:
        journal = run.transport.call(agent.owners.owner_log, owner=owner.raw, lines=LOG_TAIL_LINES)
        raise StepFailed(
            "asked %s to start the backend, but port %d is not healthy within %.0fs; it says %s%s"
            % (
                owner.describe(),
                v.port,
                v.start_timeout,
                now.state or "nothing",
                "".join("\n  | " + line for line in journal),
            )
        )
    serving = gather_diagnosis(run, probe=False)
    strangers = [h for h in serving.in_the_way if not same_owner(h.owner, owner) and h is not serving.socket_unit]
    if strangers:
        raise StepFailed(
            "asked %s to start the backend, but port %d is served by %s"
            % (owner.describe(), v.port, "; ".join("pid %d (%s)" % (h.pid, h.owner.describe()) for h in strangers))
        )
    run.register(Started(now.main_pid or None))
    return "%s %s %s (main pid %d, %s, restarts %d), healthy after %.2fs" % (
        "created transient" if started.get("transient") else "started",
        what(owner.kind),
        owner.name,
        now.main_pid,
        now.state,
        now.restarts,
        ready["elapsed_s"],
    )


def _master_serves(serving: Diagnosis, master: int) -> List[int]:
    """The holders that are not the master or one of its workers (must be none)."""
    return [h.pid for h in serving.in_the_way if h.pid != master and h.process.ppid != master]


def master_serves(run: HostRun, way: Route) -> str:
    """After its workers were ended or replaced: the master's new workers serve, and nobody else."""
    assert way.master is not None
    ready = wait_healthy(run)
    if not ready["ok"]:
        raise StepFailed(
            "gunicorn master pid %d did not bring port %d back to health within %.0fs"
            % (way.master.pid, run.vars.port, run.vars.start_timeout)
        )
    serving = gather_diagnosis(run, probe=False)
    others = _master_serves(serving, way.master.pid)
    if others:
        raise StepFailed(
            "port %d is also served by pid %s, outside gunicorn master pid %d"
            % (run.vars.port, _pids(others), way.master.pid)
        )
    workers = [h.pid for h in serving.in_the_way if h.process.ppid == way.master.pid]
    return "gunicorn master pid %d serves with workers %s, healthy after %.2fs" % (
        way.master.pid,
        _pids(workers),
        ready["elapsed_s"],
    )


def reload_master(run: HostRun, way: Route, d: Diagnosis, aside: str) -> str:
    """SIGHUP a healthy gunicorn master; done when every old worker has drained and exited."""
    assert way.master is not None
    master = way.master
    old = [p for p in d.processes.values() if p.ppid == master.pid]
    run.transport.call(agent.signals.reload, pid=master.pid, start_ticks=master.start_ticks)
    run.register(Restarted())
    timeout = run.vars.grace + run.vars.start_timeout
    left = run.transport.call(
        agent.signals.wait_gone, targets=[{"pid": p.pid, "start_ticks": p.start_ticks} for p in old], timeout=timeout
    )
    if left:
        raise StepFailed(
            "sent SIGHUP to gunicorn master pid %d, but its old workers %s still run after %.0fs"
            % (master.pid, _pids(left), timeout)
        )
    return "reloaded gunicorn master pid %d (SIGHUP): old workers %s replaced%s" % (
        master.pid,
        _pids([p.pid for p in old]),
        aside,
    )
