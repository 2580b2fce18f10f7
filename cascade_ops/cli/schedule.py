"""The scheduled watchdog's commands: a crontab entry or a systemd timer, here or on a host (fab -H)."""

from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple, TypeVar

from invoke import Context, Task

from cascade_ops.cli.common import HELP, _cron_target, _each_text, _finish, _guard, _inventory, task

if TYPE_CHECKING:
    from cascade_ops.api import PerHost

T = TypeVar("T")


def _installed(what: str) -> Callable[[str, Tuple[bool, str]], str]:
    """The line an install prints for a host: what it installed (or left unchanged) there."""
    return lambda host, result: "%s: %s %s%s" % (host, "installed" if result[0] else "unchanged", what, result[1])


def _removed(what: str, inventory: str) -> Callable[[str, bool], str]:
    return lambda host, removed: (
        "%s: %s" % (host, "removed the %s" % what if removed else "no %s for %s" % (what, inventory))
    )


CRON_HELP = dict(
    {k: HELP[k] for k in ("inventory", "limit", "var")},
    user="whose crontab (default: the current user's)",
    every="how often: 1m-30m dividing an hour, or 1h-24h dividing a day",
    log="where cron appends the ticks' output (default: .cascade/cron.log beside the inventory)",
    project="a checkout of cascade-ops to run the watch from (default: the installed CLI, else this one)",
    python="the interpreter of cascade-ops's venv (default: the installed CLI from `bootstrap`, else the same as here)",
    host_inventory="with fab -H: the inventory the host's watch reads (default: this one's path)",
)


@task(iterable=["var"], help=CRON_HELP)
def cron_install(
    c: Context,
    every: str = "5m",
    inventory: Optional[str] = None,
    limit: Optional[str] = None,
    var: Optional[List[str]] = None,
    user: Optional[str] = None,
    log: Optional[str] = None,
    project: Optional[str] = None,
    python: Optional[str] = None,
    host_inventory: Optional[str] = None,
) -> None:
    """Install (or update) one crontab entry running `watch` with absolute paths. Idempotent.

    With `fab -H host cron-install` the entry goes into that host's crontab: a self-healing
    fleet with no central controller (cascade-ops must be installed there at --project)."""
    inventory = _inventory(inventory)
    from cascade_ops.api import schedules as scheduled

    done = _guard(
        lambda: scheduled.cron_install(
            every,
            inventory,
            limit,
            var or (),
            user,
            log,
            project,
            python,
            host_inventory,
            target=_cron_target(c, inventory, var),
        )
    )
    print(_each_text(done, _installed("crontab entry: ")))
    _finish(done)


@task(iterable=["var"], help={k: CRON_HELP[k] for k in ("inventory", "limit", "var", "user", "host_inventory")})
def cron_remove(
    c: Context,
    inventory: Optional[str] = None,
    limit: Optional[str] = None,
    var: Optional[List[str]] = None,
    user: Optional[str] = None,
    host_inventory: Optional[str] = None,
) -> None:
    """Remove this inventory's watch entry from the crontab; other entries stay untouched.

    The inventory is checked (with --limit and --var) as cron.install checks it. With
    `fab -H host cron-remove`, the entry cron-install put in that host's crontab."""
    inventory = _inventory(inventory)
    from cascade_ops import api
    from cascade_ops.api import schedules as scheduled

    _guard(lambda: api.select_hosts(inventory, limit, var or ()))
    done = _guard(
        lambda: scheduled.cron_remove(
            inventory, user, target=_cron_target(c, inventory, var), host_inventory=host_inventory
        )
    )
    print(
        _each_text(
            done,
            lambda host, removed: "removed the crontab entry" if removed else "no crontab entry for %s" % inventory,
        )
    )
    _finish(done)


@task(iterable=["var"], help={k: CRON_HELP[k] for k in ("inventory", "limit", "var", "user", "host_inventory")})
def cron_status(
    c: Context,
    inventory: Optional[str] = None,
    limit: Optional[str] = None,
    var: Optional[List[str]] = None,
    user: Optional[str] = None,
    host_inventory: Optional[str] = None,
) -> None:
    """Show this inventory's crontab entry and each host's last watchdog tick.

    With `fab -H host cron-status`: the entry in that host's crontab, and its last tick."""
    inventory = _inventory(inventory)
    from cascade_ops.api import schedules as scheduled

    target = _cron_target(c, inventory, var)
    entry = _guard(lambda: scheduled.cron_entry(inventory, user, target=target, host_inventory=host_inventory))
    print(_each_text(entry, lambda host, line: "crontab: %s" % (line or "no entry (cron-install)")))
    from cascade_ops.api import records

    ticks = _guard(lambda: records.last_ticks(inventory, limit, var or (), hosts=[target] if target else None))
    print(_each_text(ticks, lambda host, line: "%-12s last tick: %s" % (host, line or "none yet")))
    _finish(ticks)
    _finish(entry)


TIMER_HELP = dict(
    {k: CRON_HELP[k] for k in ("inventory", "limit", "var", "every", "log", "project", "python", "host_inventory")},
    unit_dir="where the units go (default /etc/systemd/system)",
)

SERVICE_HELP = dict(
    {k: TIMER_HELP[k] for k in ("inventory", "limit", "var", "log", "project", "python", "host_inventory", "unit_dir")},
    every="how often the follower probes (default 0.5s)",
)


def _report(done: "PerHost[T]", text: Callable[[str, T], str]) -> None:
    """Each host's line, then the exit code of the hosts that could not answer."""
    print(_each_text(done, text))
    _finish(done)


def _named(name: str, doc: str, body: Callable[..., None], help: Dict[str, str], **options: Any) -> Task:
    body.__name__ = body.__qualname__ = name
    body.__doc__ = doc
    made: Task = task(help=help, **options)(body)
    return made


# A timer and the follower's service are both units of the scheduled watchdog: the same three tasks,
# differing only in what they call and say.
def _unit_install(name: str, every_default: str, what: str, help: Dict[str, str], doc: str) -> Task:
    def body(
        c: Context,
        every: str = every_default,
        inventory: Optional[str] = None,
        limit: Optional[str] = None,
        var: Optional[List[str]] = None,
        unit_dir: Optional[str] = None,
        log: Optional[str] = None,
        project: Optional[str] = None,
        python: Optional[str] = None,
        host_inventory: Optional[str] = None,
    ) -> None:
        from cascade_ops.api import schedules

        path = _inventory(inventory)
        _report(
            _guard(
                lambda: getattr(schedules, name)(
                    every,
                    path,
                    limit,
                    var or (),
                    unit_dir,
                    log,
                    project,
                    python,
                    host_inventory,
                    target=_cron_target(c, path, var),
                )
            ),
            _installed(what),
        )

    return _named(name, doc, body, help, iterable=["var"])


def _unit_remove(name: str, what: str, help: Dict[str, str], doc: str) -> Task:
    def body(
        c: Context,
        inventory: Optional[str] = None,
        unit_dir: Optional[str] = None,
        host_inventory: Optional[str] = None,
    ) -> None:
        from cascade_ops.api import schedules

        path = _inventory(inventory)
        _report(
            _guard(lambda: getattr(schedules, name)(path, unit_dir, _cron_target(c, path, ()), host_inventory)),
            _removed(what, path),
        )

    return _named(name, doc, body, {k: help[k] for k in ("inventory", "unit_dir", "host_inventory")})


def _unit_status(name: str, line: Callable[[str, Any], str], help: Dict[str, str], doc: str) -> Task:
    def body(c: Context, inventory: Optional[str] = None, host_inventory: Optional[str] = None) -> None:
        from cascade_ops.api import schedules

        path = _inventory(inventory)
        _report(_guard(lambda: getattr(schedules, name)(path, _cron_target(c, path, ()), host_inventory)), line)

    return _named(name, doc, body, {k: help[k] for k in ("inventory", "host_inventory")})


timer_install = _unit_install(
    "timer_install",
    "5m",
    "systemd timer ",
    TIMER_HELP,
    "\n".join(
        [
            "Install (or update) a systemd timer + service running `watch`, where systemd runs. Idempotent.",
            "",
            "Persistent= (a tick missed while down runs at boot) and RandomizedDelaySec= (a fleet's ticks spread",
            "out). With `fab -H host timer-install` on that host, watching a host-local inventory, as cron-install.",
        ]
    ),
)
timer_remove = _unit_remove(
    "timer_remove",
    "systemd timer",
    TIMER_HELP,
    "Stop, disable and delete this inventory's watchdog timer and its service.",
)
timer_status = _unit_status(
    "timer_status",
    lambda host, s: (
        "%s: %s %s/%s, last %s, next %s"
        % (
            host,
            s["Id"],
            s.get("LoadState"),
            s.get("ActiveState"),
            s.get("LastTriggerUSec") or "never",
            s.get("NextElapseUSecRealtime") or "-",
        )
    ),
    TIMER_HELP,
    "Show this inventory's watchdog timer as systemd sees it: loaded, active, last and next run.",
)

service_install = _unit_install(
    "service_install",
    "0.5s",
    "",
    SERVICE_HELP,
    "\n".join(
        [
            "Install the resident watchdog (`watch --follow`), supervised (a systemd service, else detached).",
            "",
            "A systemd service has Restart=always, Type=notify and WatchdogSec=: a follower that hangs is",
            "restarted. With `fab -H host service-install` on that host, watching a host-local inventory, as",
            "cron-install.",
        ]
    ),
)
service_remove = _unit_remove(
    "service_remove",
    "follower",
    SERVICE_HELP,
    "Stop and remove this inventory's follower (its systemd service, or its detached process).",
)
service_status = _unit_status(
    "service_status",
    lambda host, said: "%s: %s" % (host, said),
    SERVICE_HELP,
    "Show this inventory's follower as what supervises it sees it: state, main pid, restarts.",
)
