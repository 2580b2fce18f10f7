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
from typing import List, Optional, Tuple

from cascade_ops import agent
from cascade_ops.config.hostvars import SPECS, Host, owner_vars
from cascade_ops.errors import HostCommandError
from cascade_ops.model.paths import StatePaths
from cascade_ops.transport import Transport
from cascade_ops.watchdog.calendars import period

MARKER = "# cascade-ops watch id="
# Not carried to a host-local inventory: files on the controller (deploys are the controller's job).
CONTROLLER_ONLY = ("auth_module", "app_seed")


def host_local_inventory(host: Host) -> str:
    """An inventory of this host alone, as the host itself sees it: ``connection: local`` and the
    backend's resolved variables (no SSH, no controller files), for a watchdog that needs no controller."""
    lines = [
        "# Written by cascade-ops cron-install for %s: the host's own watchdog reads it." % host.name,
        "all:",
        "  hosts:",
        "    %s:" % json.dumps(host.name),
        "      connection: local",
    ]
    for name in sorted(dict(SPECS, **owner_vars())):
        value = host.vars.get(name)
        if value is not None and name not in CONTROLLER_ONLY:
            lines.append("      %s: %s" % (name, json.dumps(value)))
    return "\n".join(lines) + "\n"


def schedule(every: str) -> str:
    """A cron schedule from a duration (see ``calendars``)."""
    return period(every, "cron").cron


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


def watch_command(
    runner: List[str], workdir: str, inventory: str, limit: Optional[str], vars: List[str], log: str
) -> str:
    """The shell command cron runs, from ``workdir`` (a checkout for its tasks, else the watched
    inventory's directory: a path that exists on that host); every value quoted, and ``%`` escaped
    (cron turns it into a newline)."""
    argv = watch_argv(runner, inventory, limit, vars)
    command = "mkdir -p %s && cd %s && %s >> %s 2>&1" % (
        shlex.quote(os.path.dirname(log)),
        shlex.quote(workdir),
        " ".join(map(shlex.quote, argv)),
        shlex.quote(log),
    )
    return command.replace("%", "\\%")


@dataclass
class WatchJob:
    """What a scheduled watchdog runs on its host, for cron and systemd timers alike: which inventory
    it watches (on another host, a host-local one written there), with what, logging where."""

    watched: str
    local_inventory: Optional[Tuple[str, str]]  # (path, text): written on the host before the job is installed
    limit: Optional[str]
    vars: List[str]
    log: str
    python: Optional[str]
    project: Optional[str]

    @classmethod
    def plan(
        cls,
        inventory: str,
        limit: Optional[str],
        vars: List[str],
        log: Optional[str],
        python: Optional[str],
        project: Optional[str],
        host_inventory: Optional[str],
        target: Optional[Host],
    ) -> "WatchJob":
        local = None
        if target is not None and host_inventory is None:
            host_inventory = StatePaths.of(target.vars).watch_inventory
            local = (host_inventory, host_local_inventory(target))
        watched = host_inventory or os.path.abspath(inventory)
        log = log or os.path.join(os.path.dirname(watched), ".cascade", "cron.log")
        # the host-local inventory has --limit and --var resolved already
        return cls(watched, local, None if local else limit, [] if local else list(vars), log, python, project)

    def prepare(self, transport: Transport) -> None:
        if self.local_inventory:
            path, text = self.local_inventory
            transport.call(agent.files.write_file, path=path, content=text, mode=0o600)

    def runner(self, transport: Transport, here: bool, installed_here: Optional[str], project_dir: str) -> List[str]:
        """The installed CLI there (beside ``python``, else where ``bootstrap`` installs it) when
        cascade-ops is installed, else a checkout's: ``project``, or here this one. On another host
        with neither, no entry: the controller's checkout is not there."""
        cli = None
        if self.project is None:
            if self.python is None and here:
                cli = installed_here
            else:
                prefix = os.path.dirname(os.path.dirname(self.python)) if self.python else None
                there = transport.call(agent.install.installed_cli, prefix=prefix)
                cli = there["cli"] if there["version"] else None
                if cli is None and self.python is None and not here:
                    venv = os.path.dirname(os.path.dirname(there["cli"]))
                    raise HostCommandError(
                        transport.host,
                        "cron",
                        "cascade-ops is not installed at %s on this host: "
                        "`fab -H HOST bootstrap` first, or give --python (the venv there) or "
                        "--project (a checkout there)" % venv,
                    )
        return runner(self.python or sys.executable, self.project or project_dir, cli)

    def workdir(self, runner: List[str], project_dir: str) -> str:
        """Where the tick runs: a checkout's tasks from the checkout; an installed CLI from the
        watched inventory's directory, which is on that host."""
        return os.path.dirname(self.watched) if len(runner) == 1 else (self.project or project_dir)


def marker(inventory: str) -> str:
    return MARKER + entry_id(inventory)


def find(transport: Transport, inventory: str, user: Optional[str] = None) -> Optional[str]:
    """Our entry in the crontab of the transport's host, or None."""
    wanted = marker(inventory)
    lines = transport.call(agent.crontab.crontab_lines, user=user)
    return next((line for line in lines if line.endswith(wanted)), None)


def install(transport: Transport, inventory: str, schedule_text: str, command: str, user: Optional[str] = None) -> bool:
    """Add or replace our entry; other entries stay byte for byte. Returns True when it changed."""
    entry = "%s %s %s" % (schedule_text, command, marker(inventory))
    return transport.call(agent.crontab.crontab_entry, marker=marker(inventory), entry=entry, user=user)["changed"]


def remove(transport: Transport, inventory: str, user: Optional[str] = None) -> bool:
    return transport.call(agent.crontab.crontab_entry, marker=marker(inventory), entry=None, user=user)["changed"]


def command_of(entry: str) -> str:
    """The shell command part of a crontab line (what cron hands to /bin/sh), unescaped."""
    command = entry.split(None, 5)[5]
    return command[: command.rindex(MARKER)].rstrip().replace("\\%", "%")
