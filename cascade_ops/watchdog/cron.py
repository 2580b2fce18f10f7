"""The crontab entry that runs the watchdog: one per inventory, found again by its marker comment.

The crontab itself is read and written by the agent, so ``fab -H host cron-install`` edits the
remote host's crontab with the very same code as a local ``invoke cron.install``.
"""

import hashlib
import json
import os
import shlex
import sys
from dataclasses import dataclass
from typing import List, Optional

from cascade_ops.config.hostvars import SPECS, Host, parse_duration
from cascade_ops.errors import ConfigError, HostCommandError

MARKER = "# cascade-ops watch id="
HOST_INVENTORY = "watch-inventory.yaml"  # in the host's state_dir, written by cron-install over SSH
# Not carried to a host-local inventory: files on the controller (deploys are the controller's job).
CONTROLLER_ONLY = ("auth_module", "app_seed")


def host_local_inventory(host: Host) -> str:
    """An inventory of this host alone, as the host itself sees it: ``connection: local`` and the
    backend's resolved variables (no SSH, no controller files), for a watchdog that needs no controller."""
    lines = ["# Written by cascade-ops cron-install for %s: the host's own watchdog reads it." % host.name,
             "all:", "  hosts:", "    %s:" % json.dumps(host.name), "      connection: local"]
    for name in sorted(SPECS):
        value = host.vars.get(name)
        if value is not None and name not in CONTROLLER_ONLY:
            lines.append("      %s: %s" % (name, json.dumps(value)))
    return "\n".join(lines) + "\n"


def schedule(every: str) -> str:
    """A cron schedule from a duration: 5m -> */5 * * * *, 1h -> 0 * * * *, 2h -> 0 */2 * * *."""
    try:
        seconds = parse_duration(every)
    except ValueError as exc:
        raise ConfigError(str(exc), field="--every")
    minutes = seconds / 60
    if minutes == 1:
        return "* * * * *"
    if minutes == int(minutes) and 1 < minutes < 60 and 60 % minutes == 0:
        return "*/%d * * * *" % minutes
    hours = minutes / 60
    if hours == 1:
        return "0 * * * *"
    if hours == int(hours) and 1 < hours <= 24 and 24 % hours == 0:
        return "0 */%d * * *" % hours if hours < 24 else "0 0 * * *"
    raise ConfigError("cron cannot run every %r evenly; use 1m-30m dividing an hour, or 1h-24h dividing a day"
                      % every, field="--every")


def runner(python: str, project_dir: str, cli: Optional[str]) -> List[str]:
    """How cron starts cascade-ops: its installed CLI when there is one, else the checkout's tasks."""
    return [cli] if cli else [python, "-m", "invoke", "-r", project_dir]


def entry_id(inventory: str) -> str:
    return hashlib.sha256(os.path.abspath(inventory).encode()).hexdigest()[:12]


def watch_argv(runner: List[str], inventory: str, limit: Optional[str], vars: List[str]) -> List[str]:
    """The watchdog tick's command line. ``runner``: the installed CLI (``[/abs/bin/cascade-ops]``),
    or a checkout's ``[python, -m, invoke, -r, project_dir]``."""
    argv = runner + ["watch", "--inventory", os.path.abspath(inventory)]
    if limit:
        argv += ["--limit", limit]
    for pair in vars:
        argv += ["--var", pair]
    return argv


def watch_command(runner: List[str], workdir: str, inventory: str, limit: Optional[str], vars: List[str],
                  log: str) -> str:
    """The shell command cron runs, from ``workdir`` (a checkout for its tasks, else the watched
    inventory's directory: a path that exists on that host); every value quoted, and ``%`` escaped
    (cron turns it into a newline)."""
    argv = watch_argv(runner, inventory, limit, vars)
    command = "mkdir -p %s && cd %s && %s >> %s 2>&1" % (
        shlex.quote(os.path.dirname(log)), shlex.quote(workdir), " ".join(map(shlex.quote, argv)), shlex.quote(log))
    return command.replace("%", "\\%")


@dataclass
class WatchJob:
    """What a scheduled watchdog runs on its host, for cron and systemd timers alike: which inventory
    it watches (on another host, a host-local one written there), with what, logging where."""

    watched: str
    local_inventory: Optional[str]  # written on the host before the job is installed
    limit: Optional[str]
    vars: List[str]
    log: str
    python: Optional[str]
    project: Optional[str]

    @classmethod
    def plan(cls, inventory: str, limit: Optional[str], vars: List[str], log: Optional[str],
             python: Optional[str], project: Optional[str], host_inventory: Optional[str],
             target: Optional[Host]) -> "WatchJob":
        local = None
        if target is not None and host_inventory is None:
            host_inventory = local = os.path.join(target.vars["state_dir"], HOST_INVENTORY)
        watched = host_inventory or os.path.abspath(inventory)
        log = log or os.path.join(os.path.dirname(watched), ".cascade", "cron.log")
        # the host-local inventory has --limit and --var resolved already
        return cls(watched, local, None if local else limit, [] if local else list(vars), log, python, project)

    def prepare(self, host: Host, transport) -> None:
        if self.local_inventory:
            transport.agent("write_file", path=self.local_inventory, content=host_local_inventory(host), mode=0o600)

    def runner(self, transport, here: bool, installed_here: Optional[str], project_dir: str) -> List[str]:
        """The installed CLI there (beside ``python``, else where ``bootstrap`` installs it) when
        cascade-ops is installed, else a checkout's: ``project``, or here this one. On another host
        with neither, no entry: the controller's checkout is not there."""
        cli = None
        if self.project is None:
            if self.python is None and here:
                cli = installed_here
            else:
                prefix = os.path.dirname(os.path.dirname(self.python)) if self.python else None
                there = transport.agent("installed_cli", prefix=prefix)
                cli = there["cli"] if there["version"] else None
                if cli is None and self.python is None and not here:
                    venv = os.path.dirname(os.path.dirname(there["cli"]))
                    raise HostCommandError(transport.host, "cron", "cascade-ops is not installed at %s on this host: "
                                           "`fab -H HOST bootstrap` first, or give --python (the venv there) or "
                                           "--project (a checkout there)" % venv)
        return runner(self.python or sys.executable, self.project or project_dir, cli)

    def workdir(self, runner: List[str], project_dir: str) -> str:
        """Where the tick runs: a checkout's tasks from the checkout; an installed CLI from the
        watched inventory's directory, which is on that host."""
        return os.path.dirname(self.watched) if len(runner) == 1 else (self.project or project_dir)


def marker(inventory: str) -> str:
    return MARKER + entry_id(inventory)


def find(transport, inventory: str, user: Optional[str] = None) -> Optional[str]:
    """Our entry in the crontab of the transport's host, or None."""
    wanted = marker(inventory)
    return next((line for line in transport.agent("crontab_lines", user=user) if line.endswith(wanted)), None)


def install(transport, inventory: str, schedule_text: str, command: str, user: Optional[str] = None) -> bool:
    """Add or replace our entry; other entries stay byte for byte. Returns True when it changed."""
    entry = "%s %s %s" % (schedule_text, command, marker(inventory))
    return transport.agent("crontab_entry", marker=marker(inventory), entry=entry, user=user)["changed"]


def remove(transport, inventory: str, user: Optional[str] = None) -> bool:
    return transport.agent("crontab_entry", marker=marker(inventory), entry=None, user=user)["changed"]


def command_of(entry: str) -> str:
    """The shell command part of a crontab line (what cron hands to /bin/sh), unescaped."""
    command = entry.split(None, 5)[5]
    return command[:command.rindex(MARKER)].rstrip().replace("\\%", "%")
