"""The crontab entry that runs the watchdog: one per inventory, found again by its marker comment."""

import hashlib
import os
import shlex
import subprocess
from typing import List, Optional

from .errors import CascadeError, ConfigError
from .hostvars import parse_duration

MARKER = "# cascade-ops watch id="


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


def entry_id(inventory: str) -> str:
    return hashlib.sha256(os.path.abspath(inventory).encode()).hexdigest()[:12]


def watch_command(python: str, project_dir: str, inventory: str, limit: Optional[str], vars: List[str],
                  log: str) -> str:
    """The shell command cron runs; every value quoted, and ``%`` escaped (cron turns it into a newline)."""
    argv = [python, "-m", "invoke", "-r", project_dir, "watch", "--inventory", os.path.abspath(inventory)]
    if limit:
        argv += ["--limit", limit]
    for pair in vars:
        argv += ["--var", pair]
    command = "cd %s && %s >> %s 2>&1" % (shlex.quote(project_dir), " ".join(map(shlex.quote, argv)),
                                           shlex.quote(log))
    return command.replace("%", "\\%")


def _crontab(args: List[str], user: Optional[str], stdin: Optional[str] = None) -> subprocess.CompletedProcess:
    argv = ["crontab"] + (["-u", user] if user else []) + args
    try:
        return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=10)
    except FileNotFoundError:
        raise CascadeError("crontab is not installed (Debian: apt-get install cron)")


def read_crontab(user: Optional[str] = None) -> List[str]:
    done = _crontab(["-l"], user)
    if done.returncode != 0:
        if "no crontab" in done.stderr:
            return []
        raise CascadeError("crontab -l failed: %s" % done.stderr.strip())
    return done.stdout.splitlines()


def write_crontab(lines: List[str], user: Optional[str] = None) -> None:
    done = _crontab(["-"], user, "\n".join(lines) + "\n" if lines else "")
    if done.returncode != 0:
        raise CascadeError("crontab - failed: %s" % done.stderr.strip())


def find(lines: List[str], inventory: str) -> Optional[str]:
    marker = MARKER + entry_id(inventory)
    return next((line for line in lines if line.endswith(marker)), None)


def install(inventory: str, schedule_text: str, command: str, user: Optional[str] = None) -> bool:
    """Add or replace our entry; other entries stay byte for byte. Returns True when it changed."""
    lines = read_crontab(user)
    entry = "%s %s %s%s" % (schedule_text, command, MARKER, entry_id(inventory))
    current = find(lines, inventory)
    if current == entry:
        return False
    kept = [line for line in lines if line != current]
    write_crontab(kept + [entry], user)
    return True


def remove(inventory: str, user: Optional[str] = None) -> bool:
    lines = read_crontab(user)
    current = find(lines, inventory)
    if current is None:
        return False
    write_crontab([line for line in lines if line != current], user)
    return True


def command_of(entry: str) -> str:
    """The shell command part of a crontab line (what cron hands to /bin/sh), unescaped."""
    command = entry.split(None, 5)[5]
    return command[:command.rindex(MARKER)].rstrip().replace("\\%", "%")
