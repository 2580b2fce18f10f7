"""The scheduled watchdog's commands: a crontab entry or a systemd timer, here or on a host (fab -H)."""


from cascade_ops.cli.common import HELP, _cron_target, _each_text, _finish, _guard, _inventory, task

CRON_HELP = dict({k: HELP[k] for k in ("inventory", "limit", "var")},
                 user="whose crontab (default: the current user's)",
                 every="how often: 1m-30m dividing an hour, or 1h-24h dividing a day",
                 log="where cron appends the ticks' output (default: .cascade/cron.log beside the inventory)",
                 project="a checkout of cascade-ops to run the watch from (default: the installed CLI, else this one)",
                 python="the interpreter of cascade-ops's venv (default: the installed CLI from `bootstrap`, else "
                        "the same as here)",
                 host_inventory="with fab -H: the inventory the host's watch reads (default: this one's path)")

@task(iterable=["var"], help=CRON_HELP)
def cron_install(c, every="5m", inventory=None, limit=None, var=None, user=None, log=None,
                 project=None, python=None, host_inventory=None):
    """Install (or update) one crontab entry running `watch` with absolute paths. Idempotent.

    With `fab -H host cron-install` the entry goes into that host's crontab: a self-healing
    fleet with no central controller (cascade-ops must be installed there at --project)."""
    inventory = _inventory(inventory)
    from cascade_ops.api import schedules as scheduled
    done = _guard(lambda: scheduled.cron_install(every, inventory, limit, var or (), user, log, project, python,
                                                 host_inventory, target=_cron_target(c, inventory, var)))
    print(_each_text(done, lambda host, result: "%s: %s crontab entry: %s" % (
        host, "installed" if result[0] else "unchanged", result[1])))
    _finish(done)

@task(iterable=["var"], help={k: CRON_HELP[k] for k in ("inventory", "limit", "var", "user", "host_inventory")})
def cron_remove(c, inventory=None, limit=None, var=None, user=None, host_inventory=None):
    """Remove this inventory's watch entry from the crontab; other entries stay untouched.

    The inventory is checked (with --limit and --var) as cron.install checks it. With
    `fab -H host cron-remove`, the entry cron-install put in that host's crontab."""
    inventory = _inventory(inventory)
    from cascade_ops import api
    from cascade_ops.api import schedules as scheduled
    _guard(lambda: api.select_hosts(inventory, limit, var or ()))
    done = _guard(lambda: scheduled.cron_remove(inventory, user, target=_cron_target(c, inventory, var),
                                                host_inventory=host_inventory))
    print(_each_text(done, lambda host, removed: "removed the crontab entry" if removed
                     else "no crontab entry for %s" % inventory))
    _finish(done)

@task(iterable=["var"], help={k: CRON_HELP[k] for k in ("inventory", "limit", "var", "user", "host_inventory")})
def cron_status(c, inventory=None, limit=None, var=None, user=None, host_inventory=None):
    """Show this inventory's crontab entry and each host's last watchdog tick.

    With `fab -H host cron-status`: the entry in that host's crontab, and its last tick."""
    inventory = _inventory(inventory)
    from cascade_ops import api
    from cascade_ops.api import schedules as scheduled
    target = _cron_target(c, inventory, var)
    entry = _guard(lambda: scheduled.cron_entry(inventory, user, target=target, host_inventory=host_inventory))
    print(_each_text(entry, lambda host, line: "crontab: %s" % (line or "no entry (cron-install)")))
    ticks = _guard(lambda: api.last_ticks(inventory, limit, var or (), hosts=[target] if target else None))
    print(_each_text(ticks, lambda host, line: "%-12s last tick: %s" % (host, line or "none yet")))
    _finish(ticks)
    _finish(entry)

TIMER_HELP = dict({k: CRON_HELP[k] for k in ("inventory", "limit", "var", "every", "log", "project", "python",
                                              "host_inventory")},
                  unit_dir="where the units go (default /etc/systemd/system)")

@task(iterable=["var"], help=TIMER_HELP)
def timer_install(c, every="5m", inventory=None, limit=None, var=None, unit_dir=None, log=None,
                  project=None, python=None, host_inventory=None):
    """Install (or update) a systemd timer + service running `watch`, where systemd runs. Idempotent.

    Persistent= (a tick missed while down runs at boot) and RandomizedDelaySec= (a fleet's ticks spread
    out). With `fab -H host timer-install` on that host, watching a host-local inventory, as cron-install."""
    inventory = _inventory(inventory)
    from cascade_ops.api import schedules as scheduled
    done = _guard(lambda: scheduled.timer_install(every, inventory, limit, var or (), unit_dir, log, project, python,
                                                  host_inventory, target=_cron_target(c, inventory, var)))
    print(_each_text(done, lambda host, result: "%s: %s systemd timer %s" % (
        host, "installed" if result[0] else "unchanged", result[1])))
    _finish(done)

@task(help={k: TIMER_HELP[k] for k in ("inventory", "unit_dir", "host_inventory")})
def timer_remove(c, inventory=None, unit_dir=None, host_inventory=None):
    """Stop, disable and delete this inventory's watchdog timer and its service."""
    inventory = _inventory(inventory)
    from cascade_ops.api import schedules as scheduled
    done = _guard(lambda: scheduled.timer_remove(inventory, unit_dir, _cron_target(c, inventory, ()), host_inventory))
    print(_each_text(done, lambda host, removed: "%s: %s" % (host, "removed the systemd timer" if removed
                                                               else "no systemd timer for %s" % inventory)))
    _finish(done)

@task(help={k: TIMER_HELP[k] for k in ("inventory", "host_inventory")})
def timer_status(c, inventory=None, host_inventory=None):
    """Show this inventory's watchdog timer as systemd sees it: loaded, active, last and next run."""
    inventory = _inventory(inventory)
    from cascade_ops.api import schedules as scheduled
    done = _guard(lambda: scheduled.timer_status(inventory, _cron_target(c, inventory, ()), host_inventory))
    print(_each_text(done, lambda host, s: "%s: %s %s/%s, last %s, next %s" % (
        host, s["Id"], s.get("LoadState"), s.get("ActiveState"), s.get("LastTriggerUSec") or "never",
        s.get("NextElapseUSecRealtime") or "-")))
    _finish(done)

SERVICE_HELP = dict({k: TIMER_HELP[k] for k in ("inventory", "limit", "var", "log", "project", "python",
                                               "host_inventory", "unit_dir")},
                    every="how often the follower probes (default 0.5s)")

@task(iterable=["var"], help=SERVICE_HELP)
def service_install(c, every="0.5s", inventory=None, limit=None, var=None, unit_dir=None, log=None,
                    project=None, python=None, host_inventory=None):
    """Install the resident watchdog (`watch --follow`), supervised: a systemd service (Restart=always,
    Type=notify, WatchdogSec=: a follower that hangs is restarted), else a detached process.

    With `fab -H host service-install` on that host, watching a host-local inventory, as cron-install."""
    inventory = _inventory(inventory)
    from cascade_ops.api import schedules as scheduled
    done = _guard(lambda: scheduled.service_install(every, inventory, limit, var or (), unit_dir, log, project,
                                                    python, host_inventory, target=_cron_target(c, inventory, var)))
    print(_each_text(done, lambda host, result: "%s: %s %s" % (
        host, "installed" if result[0] else "unchanged", result[1])))
    _finish(done)

@task(help={k: SERVICE_HELP[k] for k in ("inventory", "unit_dir", "host_inventory")})
def service_remove(c, inventory=None, unit_dir=None, host_inventory=None):
    """Stop and remove this inventory's follower (its systemd service, or its detached process)."""
    inventory = _inventory(inventory)
    from cascade_ops.api import schedules as scheduled
    done = _guard(lambda: scheduled.service_remove(inventory, unit_dir, _cron_target(c, inventory, ()),
                                                   host_inventory))
    print(_each_text(done, lambda host, removed: "%s: %s" % (host, "removed the follower" if removed
                                                               else "no follower for %s" % inventory)))
    _finish(done)

@task(help={k: SERVICE_HELP[k] for k in ("inventory", "host_inventory")})
def service_status(c, inventory=None, host_inventory=None):
    """Show this inventory's follower as what supervises it sees it: state, main pid, restarts."""
    inventory = _inventory(inventory)
    from cascade_ops.api import schedules as scheduled
    done = _guard(lambda: scheduled.service_status(inventory, _cron_target(c, inventory, ()), host_inventory))
    print(_each_text(done, lambda host, said: "%s: %s" % (host, said)))
    _finish(done)
