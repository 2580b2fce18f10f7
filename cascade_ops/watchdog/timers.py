"""The watchdog as a systemd timer, where systemd runs: a oneshot service that runs one tick and a
timer that starts it (``Persistent=``: a tick missed while the host was down runs at boot;
``RandomizedDelaySec=``: a fleet's ticks do not all land on the same second)."""

from typing import List, Tuple

from cascade_ops.watchdog.calendars import period
from cascade_ops.watchdog.cron import entry_id

UNIT_DIR = "/etc/systemd/system"


def unit_name(inventory: str) -> str:
    return "cascade-ops-watch-%s" % entry_id(inventory)


def on_calendar(every: str) -> Tuple[str, float]:
    """An ``OnCalendar=`` spec and the period in seconds (see ``calendars``)."""
    found = period(every, "a timer")
    return found.on_calendar, found.seconds


def _exec_quote(arg: str) -> str:
    """One argument of ``ExecStart=``: quoted, and systemd's own specifiers (% and $) escaped."""
    return '"%s"' % arg.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")


def units(argv: List[str], every: str, log: str, workdir: str, what: str) -> Tuple[str, str]:
    """The service and the timer, as text."""
    calendar, period = on_calendar(every)
    spread = max(1, min(60, int(period // 10)))
    service = "\n".join(
        [
            "# Written by cascade-ops timer.install: one watchdog tick for %s" % what,
            "[Unit]",
            "Description=cascade-ops watchdog tick (%s)" % what,
            # KillMode=process: a backend this tick starts detached outlives the tick (as under cron.service);
            # the default would kill the whole cgroup, backend included, when the tick ends.
            "[Service]",
            "Type=oneshot",
            "KillMode=process",
            "WorkingDirectory=%s" % workdir,
            "ExecStart=%s" % " ".join(_exec_quote(a) for a in argv),
            "StandardOutput=append:%s" % log,
            "StandardError=append:%s" % log,
            "",
        ]
    )
    timer = "\n".join(
        [
            "# Written by cascade-ops timer.install: the watchdog every %s for %s" % (every, what),
            "[Unit]",
            "Description=cascade-ops watchdog every %s (%s)" % (every, what),
            "[Timer]",
            "OnCalendar=%s" % calendar,
            "Persistent=true",
            "RandomizedDelaySec=%d" % spread,
            "AccuracySec=1s",
            "[Install]",
            "WantedBy=timers.target",
            "",
        ]
    )
    return service, timer


def follower_name(inventory: str) -> str:
    return "cascade-ops-follow-%s" % entry_id(inventory)


WATCHDOG_S = 10  # a follower whose loop has not said WATCHDOG=1 this long is restarted by systemd


def follower_unit(argv: List[str], log: str, workdir: str, what: str) -> str:
    """The resident watchdog as a service systemd supervises: restarted whenever it exits, and when
    its own loop stops saying it is alive (``Type=notify``, ``WatchdogSec=``)."""
    return "\n".join(
        [
            "# Written by cascade-ops service.install: the resident watchdog for %s" % what,
            "[Unit]",
            "Description=cascade-ops follower (%s)" % what,
            "After=network.target",
            # KillMode=process: a backend the follower starts detached outlives a restart of the follower.
            # TimeoutAbortSec: a follower that stopped answering gets SIGABRT, then SIGKILL soon, not 90 s later.
            "[Service]",
            "Type=notify",
            "NotifyAccess=main",
            "WatchdogSec=%d" % WATCHDOG_S,
            "TimeoutAbortSec=5",
            "Restart=always",
            "RestartSec=1",
            "KillMode=process",
            "WorkingDirectory=%s" % workdir,
            "ExecStart=%s" % " ".join(_exec_quote(a) for a in argv),
            "StandardOutput=append:%s" % log,
            "StandardError=append:%s" % log,
            "[Install]",
            "WantedBy=multi-user.target",
            "",
        ]
    )
