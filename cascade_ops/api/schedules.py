"""The watchdog's commands: a crontab entry or a systemd timer per inventory, on this
machine or (``fab -H``) on a host, each running the installed CLI when there is one."""

import functools
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, List, Optional, Tuple, TypeVar

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

if TYPE_CHECKING:
    from cascade_ops.watchdog.cron import WatchJob

T = TypeVar("T")


@dataclass(frozen=True)
class Watch:
    """A scheduled watchdog: the inventory it watches (with ``limit`` and ``vars``), where it logs,
    and which cascade-ops runs it there (``project``, ``python``; default: where it is here). On
    ``target`` (default: this machine) it watches a host-local inventory written there (that host
    alone, ``connection: local``, its resolved variables), so each host heals itself with no
    controller and no SSH between hosts; ``host_inventory`` names another one instead."""

    inventory: str = DEFAULT_INVENTORY
    limit: Optional[str] = None
    vars: Tuple[str, ...] = ()
    log: Optional[str] = None
    project: Optional[str] = None
    python: Optional[str] = None
    host_inventory: Optional[str] = None
    target: Optional[Host] = None

    def job(self) -> "WatchJob":
        """What runs there, once the inventory is checked (a bad one never reaches cron or systemd)."""
        from cascade_ops.watchdog import cron

        select_hosts(self.inventory, self.limit, self.vars)
        return cron.WatchJob.plan(
            self.inventory,
            self.limit,
            list(self.vars),
            self.log,
            self.python,
            self.project,
            self.host_inventory,
            self.target,
        )

    def watched(self) -> str:
        """The inventory the watch reads: this one here; on ``target``, its host-local one. The
        inventory is checked first, as ``job`` checks it."""
        from cascade_ops.watchdog import cron

        select_hosts(self.inventory, self.limit, self.vars)

        plan = cron.WatchJob.plan(self.inventory, None, [], None, None, None, self.host_inventory, self.target)
        return plan.watched

    def runner(self, job: "WatchJob", transport: Transport) -> List[str]:
        return job.runner(transport, self.target is None, _installed_cli(), PROJECT_DIR)

    def on_machine(self, work: Callable[[Reachable, Transport], T]) -> PerHost[T]:
        """``work`` on the machine the watch is installed on."""
        machine: Reachable = self.target or controller()
        return on_hosts([machine], work)


def cron_install(watch: Watch, every: str = "5m", user: Optional[str] = None) -> PerHost[Tuple[bool, str]]:
    """Install (or update) the crontab entry running ``watch``, in ``user``'s crontab (default: the
    current user's)."""
    from cascade_ops.watchdog import cron

    schedule = cron.schedule(every)
    job = watch.job()

    def install(host: Reachable, transport: Transport) -> Tuple[bool, str]:
        runner = watch.runner(job, transport)
        command = cron.watch_command(
            runner, job.workdir(runner, PROJECT_DIR), job.watched, job.limit, job.vars, job.log
        )
        job.prepare(transport)
        changed = cron.install(transport, job.watched, schedule, command, user)
        return changed, cron.find(transport, job.watched, user) or ""

    return watch.on_machine(install)


def _installed_cli() -> Optional[str]:
    """This cascade-ops's own console script, when it runs from an installed wheel (not a checkout)."""
    import sys

    from cascade_ops import resources

    if resources.CHECKOUT:
        return None
    script = os.path.join(os.path.dirname(sys.executable), "cascade-ops")
    return script if os.access(script, os.X_OK) else None


def cron_remove(watch: Watch, user: Optional[str] = None) -> PerHost[bool]:
    """Remove the watch's entry from ``user``'s crontab; other entries stay untouched."""
    from cascade_ops.watchdog import cron

    watched = watch.watched()
    return watch.on_machine(lambda host, t: cron.remove(t, watched, user))


def cron_entry(watch: Watch, user: Optional[str] = None) -> PerHost[Optional[str]]:
    """The watch's entry in ``user``'s crontab, or None."""
    from cascade_ops.watchdog import cron

    watched = watch.watched()
    return watch.on_machine(lambda host, t: cron.find(t, watched, user))


def timer_install(watch: Watch, every: str = "5m", unit_dir: Optional[str] = None) -> PerHost[Tuple[bool, str]]:
    """Install (or update) a systemd service + timer running the watch, like ``cron_install``;
    where systemd does not run, an error that points to cron."""
    from cascade_ops.watchdog import cron, timers

    timers.on_calendar(every)  # a bad --every never reaches a host
    job = watch.job()
    name = timers.unit_name(job.watched)

    def install(host: Reachable, transport: Transport) -> Tuple[bool, str]:
        runner = watch.runner(job, transport)
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

    return watch.on_machine(install)


def timer_remove(watch: Watch, unit_dir: Optional[str] = None) -> PerHost[bool]:
    """Stop, disable and delete the watch's timer (and its service)."""
    from cascade_ops.watchdog import timers

    name = timers.unit_name(watch.watched())
    return watch.on_machine(
        lambda host, t: t.call(
            agent.systemd.units_remove,
            unit_dir=unit_dir or timers.UNIT_DIR,
            name=name,
            suffixes=[".timer", ".service"],
            start=".timer",
        )["changed"],
    )


def timer_status(watch: Watch) -> PerHost[dict]:
    """What systemd says about the watch's timer."""
    from cascade_ops.watchdog import timers

    name = timers.unit_name(watch.watched())
    return watch.on_machine(
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


def _follower(watch: Watch) -> Tuple[str, str]:
    """The follower's unit name, and the pid file it has where systemd does not run."""
    from cascade_ops.watchdog import timers

    watched = watch.watched()
    name = timers.follower_name(watched)
    return name, os.path.join(os.path.dirname(watched), ".cascade", name + ".pid")


def service_install(watch: Watch, every: str = "0.5s", unit_dir: Optional[str] = None) -> PerHost[Tuple[bool, str]]:
    """Install the resident watchdog (``watch --follow``) supervised by what the host runs: a systemd
    service (``Restart=always``, ``Type=notify``, ``WatchdogSec=``), else a detached process with a
    pid file (nothing restarts that one: said in the answer). Same inventory checks, same host-local
    inventory on another host, as ``cron_install``. Idempotent."""
    from cascade_ops.watchdog import cron, timers

    _every(every)
    job = watch.job()
    name, pidfile = _follower(watch)

    def install(host: Reachable, transport: Transport) -> Tuple[bool, str]:
        runner = watch.runner(job, transport)
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

    return watch.on_machine(install)


def service_remove(watch: Watch, unit_dir: Optional[str] = None) -> PerHost[bool]:
    """Stop and remove the watch's follower, a systemd service or a detached process."""
    from cascade_ops.watchdog import timers

    name, pidfile = _follower(watch)

    def remove(host: Reachable, transport: Transport) -> bool:
        removed = transport.call(
            agent.systemd.units_remove,
            unit_dir=unit_dir or timers.UNIT_DIR,
            name=name,
            suffixes=[".service"],
            start=".service",
        )["changed"]
        return bool(transport.call(agent.launch.detached_stop, pidfile=pidfile, grace=10.0)["stopped"] or removed)

    return watch.on_machine(remove)


def service_status(watch: Watch) -> PerHost[str]:
    """The watch's follower, as what supervises it sees it, in words."""
    name, pidfile = _follower(watch)

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

    return watch.on_machine(status)
