"""The watchdog's commands: a crontab entry or a systemd timer per inventory, on this
machine or (``fab -H``) on a host, each running the installed CLI when there is one."""

import functools
import os
from typing import Any, Callable, Iterable, Optional, Tuple

from cascade_ops import agent
from cascade_ops.api import (
    DEFAULT_INVENTORY,
    PROJECT_DIR,
    PerHost,
    controller,
    default_playbook,
    on_hosts,
    select_hosts,
)
from cascade_ops.config.hostvars import Host, Reachable
from cascade_ops.transport import Transport


def cron_install(
    every: str = "5m",
    inventory: str = DEFAULT_INVENTORY,
    limit: Optional[str] = None,
    vars: Iterable[str] = (),
    user: Optional[str] = None,
    log: Optional[str] = None,
    project: Optional[str] = None,
    python: Optional[str] = None,
    host_inventory: Optional[str] = None,
    target: Optional[Host] = None,
) -> PerHost[Tuple[bool, str]]:
    """Install (or update) the crontab entry running ``watch``, on ``target`` (default: this machine).

    The inventory is checked first: a bad one never reaches cron. ``project`` and ``python`` say
    where cascade-ops is on the target (default: where it is here). On another host (``target``)
    the entry watches a host-local inventory written there (that host alone, ``connection:
    local``, its resolved variables), so each host heals itself with no controller and no SSH
    between hosts; ``host_inventory`` names another one instead.
    """
    from cascade_ops.watchdog import cron

    select_hosts(inventory, limit, vars)
    schedule = cron.schedule(every)
    job = cron.WatchJob.plan(inventory, limit, list(vars), log, python, project, host_inventory, target)

    def install(host: Reachable, transport: Transport) -> Tuple[bool, str]:
        runner = job.runner(transport, target is None, _installed_cli(), PROJECT_DIR)
        command = cron.watch_command(
            runner, job.workdir(runner, PROJECT_DIR), job.watched, job.limit, job.vars, job.log
        )
        job.prepare(transport)
        changed = cron.install(transport, job.watched, schedule, command, user)
        return changed, cron.find(transport, job.watched, user) or ""

    return on_hosts([target or controller()], install)


def _installed_cli() -> Optional[str]:
    """This cascade-ops's own console script, when it runs from an installed wheel (not a checkout)."""
    import sys

    from cascade_ops import resources

    if resources.CHECKOUT:
        return None
    script = os.path.join(os.path.dirname(sys.executable), "cascade-ops")
    return script if os.access(script, os.X_OK) else None


def _watched(inventory: str, target: Optional[Host], host_inventory: Optional[str]) -> str:
    """The inventory a scheduled watch reads: this one here; on ``target``, its host-local one."""
    from cascade_ops.watchdog import cron

    return cron.WatchJob.plan(inventory, None, [], None, None, None, host_inventory, target).watched


def cron_remove(
    inventory: str = DEFAULT_INVENTORY,
    user: Optional[str] = None,
    target: Optional[Host] = None,
    host_inventory: Optional[str] = None,
) -> PerHost[bool]:
    """Remove this inventory's watch entry from the crontab of ``target`` (default: this machine)."""
    from cascade_ops.watchdog import cron

    watched = _watched(inventory, target, host_inventory)
    return on_hosts([target or controller()], lambda host, t: cron.remove(t, watched, user))


def cron_entry(
    inventory: str = DEFAULT_INVENTORY,
    user: Optional[str] = None,
    target: Optional[Host] = None,
    host_inventory: Optional[str] = None,
) -> PerHost[Optional[str]]:
    """This inventory's watch entry in the crontab of ``target`` (default: this machine), or None."""
    from cascade_ops.watchdog import cron

    watched = _watched(inventory, target, host_inventory)
    return on_hosts([target or controller()], lambda host, t: cron.find(t, watched, user))


def timer_install(
    every: str = "5m",
    inventory: str = DEFAULT_INVENTORY,
    limit: Optional[str] = None,
    vars: Iterable[str] = (),
    unit_dir: Optional[str] = None,
    log: Optional[str] = None,
    project: Optional[str] = None,
    python: Optional[str] = None,
    host_inventory: Optional[str] = None,
    target: Optional[Host] = None,
) -> PerHost[Tuple[bool, str]]:
    """Install (or update) a systemd service + timer running ``watch``, like ``cron_install`` (same
    inventory checks, same host-local inventory on another host); where systemd does not run, an
    error that points to cron."""
    from cascade_ops.watchdog import cron, timers

    select_hosts(inventory, limit, vars)
    timers.on_calendar(every)  # a bad --every never reaches a host
    job = cron.WatchJob.plan(inventory, limit, list(vars), log, python, project, host_inventory, target)
    name = timers.unit_name(job.watched)

    def install(host: Reachable, transport: Transport) -> Tuple[bool, str]:
        runner = job.runner(transport, target is None, _installed_cli(), PROJECT_DIR)
        argv = cron.watch_argv(runner, job.watched, job.limit, job.vars)
        service, timer = timers.units(argv, every, job.log, job.workdir(runner, PROJECT_DIR), job.watched)
        job.prepare(transport)
        done = transport.call(
            agent.systemd.units_install,
            unit_dir=unit_dir or timers.UNIT_DIR,
            name=name,
            units={".service": service, ".timer": timer},
            start=".timer",
            log_dir=os.path.dirname(job.log),
            instead="cron.install",
        )
        return done["changed"], name + ".timer"

    return on_hosts([target or controller()], install)


def timer_remove(
    inventory: str = DEFAULT_INVENTORY,
    unit_dir: Optional[str] = None,
    target: Optional[Host] = None,
    host_inventory: Optional[str] = None,
) -> PerHost[bool]:
    """Stop, disable and delete this inventory's watchdog timer (and its service)."""
    from cascade_ops.watchdog import timers

    name = timers.unit_name(_watched(inventory, target, host_inventory))
    return on_hosts(
        [target or controller()],
        lambda host, t: t.call(
            agent.systemd.units_remove,
            unit_dir=unit_dir or timers.UNIT_DIR,
            name=name,
            suffixes=[".timer", ".service"],
            start=".timer",
        )["changed"],
    )


def timer_status(
    inventory: str = DEFAULT_INVENTORY, target: Optional[Host] = None, host_inventory: Optional[str] = None
) -> PerHost[dict]:
    """What systemd says about this inventory's watchdog timer."""
    from cascade_ops.watchdog import timers

    name = timers.unit_name(_watched(inventory, target, host_inventory))
    return on_hosts(
        [target or controller()],
        lambda host, t: dict(
            t.call(
                agent.systemd.unit_status,
                unit=name + ".timer",
                properties=["LoadState", "ActiveState", "LastTriggerUSec", "NextElapseUSecRealtime"],
                instead="cron.status",
            ),
            Id=name + ".timer",
        ),
    )


def _every(every: Any) -> float:
    """The follower's period, checked: 10 ms to 1 h."""
    from cascade_ops.config.values import parse_duration
    from cascade_ops.errors import ConfigError

    try:
        seconds = parse_duration(every)
    except ValueError as exc:
        raise ConfigError(str(exc), field="--every") from None
    if not 0.01 <= seconds <= 3600:
        raise ConfigError("expected 10ms to 1h, got %r" % (every,), field="--every")
    return seconds


def follow(
    inventory: str = DEFAULT_INVENTORY,
    limit: Optional[str] = None,
    vars: Iterable[str] = (),
    every: Any = "0.5s",
    playbook: Optional[str] = None,
    report: Callable[[str], None] = print,
    cycles: Optional[int] = None,
) -> int:
    """The resident watchdog (see ``follow``): probe every ``every``, recover in this process; until
    SIGTERM/SIGINT (the exit code is 128 + the signal), or ``cycles`` cycles. Validated first."""
    from cascade_ops.watchdog.follow import Follower
    from cascade_ops.watchdog.tick import tick_host

    seconds = _every(every)

    @functools.cache
    def load_playbook() -> Any:
        from cascade_ops.engine.playbook import load_playbook as load

        return load(playbook or default_playbook(inventory, "recover"))

    load_playbook()  # a broken playbook is refused now, not at the first hang
    return Follower(
        lambda: select_hosts(inventory, limit, vars),
        lambda host, transport: tick_host(host, transport, load_playbook),
        seconds,
        report,
        cycles,
    ).run()


def _follower(inventory: str, target: Optional[Host], host_inventory: Optional[str]) -> Tuple[str, str, str]:
    """The follower's unit name, and the pid file it has where systemd does not run."""
    from cascade_ops.watchdog import cron, timers

    job = cron.WatchJob.plan(inventory, None, [], None, None, None, host_inventory, target)
    name = timers.follower_name(job.watched)
    return job.watched, name, os.path.join(os.path.dirname(job.watched), ".cascade", name + ".pid")


def service_install(
    every: str = "0.5s",
    inventory: str = DEFAULT_INVENTORY,
    limit: Optional[str] = None,
    vars: Iterable[str] = (),
    unit_dir: Optional[str] = None,
    log: Optional[str] = None,
    project: Optional[str] = None,
    python: Optional[str] = None,
    host_inventory: Optional[str] = None,
    target: Optional[Host] = None,
) -> PerHost[Tuple[bool, str]]:
    """Install the resident watchdog (``watch --follow``) supervised by what the host runs: a systemd
    service (``Restart=always``, ``Type=notify``, ``WatchdogSec=``), else a detached process with a
    pid file (nothing restarts that one: said in the answer). Same inventory checks, same host-local
    inventory on another host, as ``cron_install``. Idempotent."""
    from cascade_ops.watchdog import cron, timers

    select_hosts(inventory, limit, vars)
    _every(every)
    job = cron.WatchJob.plan(inventory, limit, list(vars), log, python, project, host_inventory, target)
    _, name, pidfile = _follower(inventory, target, host_inventory)

    def install(host: Reachable, transport: Transport) -> Tuple[bool, str]:
        runner = job.runner(transport, target is None, _installed_cli(), PROJECT_DIR)
        argv = cron.watch_argv(runner, job.watched, job.limit, job.vars) + [
            "--follow",
            "--every",
            every,
            "--log",
            job.log,
        ]
        workdir = job.workdir(runner, PROJECT_DIR)
        job.prepare(transport)
        if transport.call(agent.systemd.systemd_runs):
            unit = timers.follower_unit(argv, job.log, workdir, job.watched)
            done = transport.call(
                agent.systemd.units_install,
                unit_dir=unit_dir or timers.UNIT_DIR,
                name=name,
                units={".service": unit},
                start=".service",
                log_dir=os.path.dirname(job.log),
                instead="a detached follower",
            )
            return done["changed"], "systemd service %s.service" % name
        if transport.call(agent.launch.detached_status, pidfile=pidfile)["running"]:
            return False, "detached follower (pid file %s; not supervised: nothing restarts it)" % pidfile
        spawned = transport.call(agent.launch.spawn, argv=argv, cwd=workdir, log=job.log, pidfile=pidfile)
        return True, "detached follower pid %d (pid file %s; not supervised: nothing restarts it)" % (
            spawned["pid"],
            pidfile,
        )

    return on_hosts([target or controller()], install)


def service_remove(
    inventory: str = DEFAULT_INVENTORY,
    unit_dir: Optional[str] = None,
    target: Optional[Host] = None,
    host_inventory: Optional[str] = None,
) -> PerHost[bool]:
    """Stop and remove this inventory's follower, a systemd service or a detached process."""
    from cascade_ops.watchdog import timers

    _, name, pidfile = _follower(inventory, target, host_inventory)

    def remove(host: Reachable, transport: Transport) -> bool:
        removed = transport.call(
            agent.systemd.units_remove,
            unit_dir=unit_dir or timers.UNIT_DIR,
            name=name,
            suffixes=[".service"],
            start=".service",
        )["changed"]
        return bool(transport.call(agent.launch.detached_stop, pidfile=pidfile, grace=10.0)["stopped"] or removed)

    return on_hosts([target or controller()], remove)


def service_status(
    inventory: str = DEFAULT_INVENTORY, target: Optional[Host] = None, host_inventory: Optional[str] = None
) -> PerHost[str]:
    """This inventory's follower, as what supervises it sees it, in words."""
    _, name, pidfile = _follower(inventory, target, host_inventory)

    def status(host: Reachable, transport: Transport) -> str:
        detached = transport.call(agent.launch.detached_status, pidfile=pidfile)
        if detached["running"]:
            return "detached follower pid %d (not supervised)" % detached["pid"]
        if not transport.call(agent.systemd.systemd_runs):
            return "no follower (service.install)"
        s = transport.call(
            agent.systemd.unit_status,
            unit=name + ".service",
            properties=["LoadState", "ActiveState", "SubState", "MainPID", "NRestarts", "WatchdogUSec"],
            instead="service.install",
        )
        return "%s.service %s/%s/%s, main pid %s, %s restarts, watchdog %s" % (
            name,
            s.get("LoadState"),
            s.get("ActiveState"),
            s.get("SubState"),
            s.get("MainPID"),
            s.get("NRestarts"),
            s.get("WatchdogUSec"),
        )

    return on_hosts([target or controller()], status)
