"""The watchdog's commands: a crontab entry or a systemd timer per inventory, on this
machine or (``fab -H``) on a host, each running the installed CLI when there is one."""

import functools
import os
from typing import Any, Callable, Iterable, Optional, Tuple

from .api import DEFAULT_INVENTORY, PROJECT_DIR, PerHost, controller, default_playbook, on_hosts, select_hosts
from .hostvars import Host
from .transport import Transport


def cron_install(every: str = "5m", inventory: str = DEFAULT_INVENTORY, limit: Optional[str] = None,
                 vars: Iterable[str] = (), user: Optional[str] = None, log: Optional[str] = None,
                 project: Optional[str] = None, python: Optional[str] = None,
                 host_inventory: Optional[str] = None, target: Optional[Host] = None) -> PerHost[Tuple[bool, str]]:
    """Install (or update) the crontab entry running ``watch``, on ``target`` (default: this machine).

    The inventory is checked first: a bad one never reaches cron. ``project`` and ``python`` say
    where cascade-ops is on the target (default: where it is here). On another host (``target``)
    the entry watches a host-local inventory written there (that host alone, ``connection:
    local``, its resolved variables), so each host heals itself with no controller and no SSH
    between hosts; ``host_inventory`` names another one instead.
    """
    from . import cron
    select_hosts(inventory, limit, vars)
    schedule = cron.schedule(every)
    job = cron.WatchJob.plan(inventory, limit, list(vars), log, python, project, host_inventory, target)

    def install(host: Host, transport: Transport) -> Tuple[bool, str]:
        runner = job.runner(transport, target is None, _installed_cli(), PROJECT_DIR)
        command = cron.watch_command(runner, job.workdir(runner, PROJECT_DIR), job.watched, job.limit, job.vars,
                                     job.log)
        job.prepare(host, transport)
        changed = cron.install(transport, job.watched, schedule, command, user)
        return changed, cron.find(transport, job.watched, user) or ""
    return on_hosts([target or controller()], install)


def _installed_cli() -> Optional[str]:
    """This cascade-ops's own console script, when it runs from an installed wheel (not a checkout)."""
    import sys

    from . import resources
    if resources.CHECKOUT:
        return None
    script = os.path.join(os.path.dirname(sys.executable), "cascade-ops")
    return script if os.access(script, os.X_OK) else None


def _watched(inventory: str, target: Optional[Host], host_inventory: Optional[str]) -> str:
    """The inventory a scheduled watch reads: this one here; on ``target``, its host-local one."""
    from . import cron
    return cron.WatchJob.plan(inventory, None, [], None, None, None, host_inventory, target).watched


def cron_remove(inventory: str = DEFAULT_INVENTORY, user: Optional[str] = None, target: Optional[Host] = None,
                host_inventory: Optional[str] = None) -> PerHost[bool]:
    """Remove this inventory's watch entry from the crontab of ``target`` (default: this machine)."""
    from . import cron
    watched = _watched(inventory, target, host_inventory)
    return on_hosts([target or controller()], lambda host, t: cron.remove(t, watched, user))


def cron_entry(inventory: str = DEFAULT_INVENTORY, user: Optional[str] = None, target: Optional[Host] = None,
               host_inventory: Optional[str] = None) -> PerHost[Optional[str]]:
    """This inventory's watch entry in the crontab of ``target`` (default: this machine), or None."""
    from . import cron
    watched = _watched(inventory, target, host_inventory)
    return on_hosts([target or controller()], lambda host, t: cron.find(t, watched, user))


def timer_install(every: str = "5m", inventory: str = DEFAULT_INVENTORY, limit: Optional[str] = None,
                  vars: Iterable[str] = (), unit_dir: Optional[str] = None, log: Optional[str] = None,
                  project: Optional[str] = None, python: Optional[str] = None,
                  host_inventory: Optional[str] = None, target: Optional[Host] = None) -> PerHost[Tuple[bool, str]]:
    """Install (or update) a systemd service + timer running ``watch``, like ``cron_install`` (same
    inventory checks, same host-local inventory on another host); where systemd does not run, an
    error that points to cron."""
    from . import cron, timers
    select_hosts(inventory, limit, vars)
    timers.on_calendar(every)  # a bad --every never reaches a host
    job = cron.WatchJob.plan(inventory, limit, list(vars), log, python, project, host_inventory, target)
    name = timers.unit_name(job.watched)

    def install(host: Host, transport: Transport) -> Tuple[bool, str]:
        runner = job.runner(transport, target is None, _installed_cli(), PROJECT_DIR)
        argv = cron.watch_argv(runner, job.watched, job.limit, job.vars)
        service, timer = timers.units(argv, every, job.log, job.workdir(runner, PROJECT_DIR), job.watched)
        job.prepare(host, transport)
        done = transport.agent("timer_install", unit_dir=unit_dir or timers.UNIT_DIR, name=name, service=service,
                               timer=timer, log_dir=os.path.dirname(job.log))
        return done["changed"], name + ".timer"
    return on_hosts([target or controller()], install)


def timer_remove(inventory: str = DEFAULT_INVENTORY, unit_dir: Optional[str] = None,
                 target: Optional[Host] = None, host_inventory: Optional[str] = None) -> PerHost[bool]:
    """Stop, disable and delete this inventory's watchdog timer (and its service)."""
    from . import timers
    name = timers.unit_name(_watched(inventory, target, host_inventory))
    return on_hosts([target or controller()], lambda host, t: t.agent(
        "timer_remove", unit_dir=unit_dir or timers.UNIT_DIR, name=name)["changed"])


def timer_status(inventory: str = DEFAULT_INVENTORY, target: Optional[Host] = None,
                 host_inventory: Optional[str] = None) -> PerHost[dict]:
    """What systemd says about this inventory's watchdog timer."""
    from . import timers
    name = timers.unit_name(_watched(inventory, target, host_inventory))
    return on_hosts([target or controller()], lambda host, t: dict(t.agent("timer_status", name=name),
                                                                   Id=name + ".timer"))


def follow(inventory: str = DEFAULT_INVENTORY, limit: Optional[str] = None, vars: Iterable[str] = (),
           every: Any = "0.5s", playbook: Optional[str] = None, report: Callable[[str], None] = print,
           cycles: Optional[int] = None) -> int:
    """The resident watchdog (see ``follow``): probe every ``every``, recover in this process; until
    SIGTERM/SIGINT (the exit code is 128 + the signal), or ``cycles`` cycles. Validated first."""
    from .errors import ConfigError
    from .follow import Follower
    from .hostvars import parse_duration
    from .watch import tick_host
    try:
        seconds = parse_duration(every)
    except ValueError as exc:
        raise ConfigError(str(exc), field="--every") from None
    if not 0.01 <= seconds <= 3600:
        raise ConfigError("expected 10ms to 1h, got %r" % (every,), field="--every")

    @functools.cache
    def load_playbook() -> Any:
        from .playbook import load_playbook as load
        return load(playbook or default_playbook(inventory, "recover"))
    load_playbook()  # a broken playbook is refused now, not at the first hang
    return Follower(lambda: select_hosts(inventory, limit, vars),
                    lambda host, transport: tick_host(host, transport, load_playbook), seconds, report,
                    cycles).run()
