"""The scheduled watchdog's commands: a crontab entry, a systemd timer or the resident follower's
service, here or on a host (fab -H). The three kinds take the same options but for where they keep
their entries (a user's crontab, a unit directory): each task is made from one declaration of them."""

import inspect
import json
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple, TypeVar

from invoke import Context, Task

from cascade_ops.cli.common import HELP, _cron_target, _each_text, _finish, _guard, _inventory, task

if TYPE_CHECKING:
    from cascade_ops.api import PerHost
    from cascade_ops.api.schedules import Watch

T = TypeVar("T")
Options = Dict[str, Any]


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


def _watch(c: Context, options: Options) -> "Watch":
    """The watch the options describe; with ``fab -H``, installed on that host."""
    from cascade_ops.api.schedules import Watch

    path = _inventory(options.get("inventory"))
    var = options.get("var") or ()
    return Watch(
        path,
        options.get("limit"),
        tuple(var),
        options.get("log"),
        options.get("project"),
        options.get("python"),
        options.get("host_inventory"),
        _cron_target(c, path, var),
    )


def _report(done: "PerHost[T]", text: Callable[[str, T], str]) -> None:
    """Each host's line, then the exit code of the hosts that could not answer."""
    print(_each_text(done, text))
    _finish(done)


def _task(
    name: str, doc: str, help: Dict[str, str], options: Options, body: Callable[[Context, Options], None]
) -> Task:
    """A task named ``name`` taking ``options`` (name: default, in this order, as invoke reads a
    signature); ``body`` gets them by name."""

    def run(c: Context, **given: Any) -> None:
        body(c, given)

    run.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter("c", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        + [inspect.Parameter(k, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=v) for k, v in options.items()]
    )
    run.__name__ = run.__qualname__ = name
    run.__doc__ = doc
    made: Task = task(help={k: help[k] for k in options}, iterable=["var"] if "var" in options else [])(run)
    return made


# Where each kind keeps its entries, and how often it runs by default.
PLACE = {"cron": "user", "timer": "unit_dir", "service": "unit_dir"}
EVERY = {"cron": "5m", "timer": "5m", "service": "0.5s"}
WATCH_OPTIONS = ("inventory", "limit", "var")
RUN_OPTIONS = ("log", "project", "python", "host_inventory")


def _install(kind: str, what: str, help: Dict[str, str], doc: str) -> Task:
    from cascade_ops.api import schedules

    place = PLACE[kind]
    options = dict({"every": EVERY[kind]}, **dict.fromkeys(WATCH_OPTIONS + (place,) + RUN_OPTIONS))

    def body(c: Context, given: Options) -> None:
        call = getattr(schedules, kind + "_install")
        _report(_guard(lambda: call(_watch(c, given), given["every"], given[place])), _installed(what))

    return _task(kind + "_install", doc, help, options, body)


def _remove(kind: str, what: str, help: Dict[str, str], doc: str, options: Tuple[str, ...]) -> Task:
    from cascade_ops.api import schedules

    place = PLACE[kind]

    def body(c: Context, given: Options) -> None:
        watch = _watch(c, given)
        call = getattr(schedules, kind + "_remove")
        _report(_guard(lambda: call(watch, given[place])), _removed(what, watch.inventory))

    return _task(kind + "_remove", doc, help, dict.fromkeys(options), body)


def _status(kind: str, line: Callable[[str, Any], str], help: Dict[str, str], doc: str) -> Task:
    from cascade_ops.api import schedules

    def body(c: Context, given: Options) -> None:
        call = getattr(schedules, kind + "_status")
        _report(_guard(lambda: call(_watch(c, given))), line)

    return _task(kind + "_status", doc, help, dict.fromkeys(("inventory", "host_inventory")), body)


cron_install = _install(
    "cron",
    "crontab entry: ",
    CRON_HELP,
    "\n".join(
        [
            "Install (or update) one crontab entry running `watch` with absolute paths. Idempotent.",
            "",
            "With `fab -H host cron-install` the entry goes into that host's crontab: a self-healing",
            "fleet with no central controller (cascade-ops must be installed there at --project).",
        ]
    ),
)
cron_remove = _remove(
    "cron",
    "crontab entry",
    CRON_HELP,
    "\n".join(
        [
            "Remove this inventory's watch entry from the crontab; other entries stay untouched.",
            "",
            "The inventory is checked (with --limit and --var) as cron.install checks it. With",
            "`fab -H host cron-remove`, the entry cron-install put in that host's crontab.",
        ]
    ),
    ("inventory", "limit", "var", "user", "host_inventory"),
)


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
    from cascade_ops.api import schedules as scheduled

    watch = _watch(c, dict(inventory=inventory, limit=limit, var=var, host_inventory=host_inventory))
    inventory, target = watch.inventory, watch.target
    entry = _guard(lambda: scheduled.cron_entry(watch, user))
    print(_each_text(entry, lambda host, line: "crontab: %s" % (line or "no entry (cron-install)")))
    from cascade_ops.api import records

    ticks = _guard(lambda: records.last_ticks(inventory, limit, var or (), hosts=[target] if target else None))
    print(
        _each_text(
            ticks,
            lambda host, rec: "%-12s last tick: %s" % (host, json.dumps(rec.to_json()) if rec else "none yet"),
        )
    )
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


timer_install = _install(
    "timer",
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
timer_remove = _remove(
    "timer",
    "systemd timer",
    TIMER_HELP,
    "Stop, disable and delete this inventory's watchdog timer and its service.",
    ("inventory", "unit_dir", "host_inventory"),
)
timer_status = _status(
    "timer",
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

service_install = _install(
    "service",
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
service_remove = _remove(
    "service",
    "follower",
    SERVICE_HELP,
    "Stop and remove this inventory's follower (its systemd service, or its detached process).",
    ("inventory", "unit_dir", "host_inventory"),
)
service_status = _status(
    "service",
    lambda host, said: "%s: %s" % (host, said),
    SERVICE_HELP,
    "Show this inventory's follower as what supervises it sees it: state, main pid, restarts.",
)
