"""The user's crontab, edited one marked line at a time."""

import subprocess
from typing import Any, Dict, List, Optional

from .registry import AgentError, command


def _crontab(args: List[str], user: Optional[str], stdin: Optional[str] = None) -> "subprocess.CompletedProcess[str]":
    argv = ["crontab"] + (["-u", user] if user else []) + args
    try:
        return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=10, start_new_session=True)
    except FileNotFoundError:
        raise AgentError("crontab is not installed (Debian: apt-get install cron)") from None
    except subprocess.TimeoutExpired:
        raise AgentError("crontab %s did not finish within 10s" % " ".join(args)) from None


@command
def crontab_lines(user: Optional[str] = None) -> List[str]:
    """The user's crontab, line by line ([] when there is none)."""
    done = _crontab(["-l"], user)
    if done.returncode != 0:
        if "no crontab" in done.stderr:
            return []
        raise AgentError("crontab -l failed: %s" % done.stderr.strip())
    return done.stdout.splitlines()


@command
def crontab_entry(marker: str, entry: Optional[str] = None, user: Optional[str] = None) -> Dict[str, Any]:
    """Set (``entry``) or remove (None) the one line ending with ``marker``; every other line stays
    byte for byte. Returns the line found before and whether anything changed."""
    lines = crontab_lines(user)
    current = next((line for line in lines if line.endswith(marker)), None)
    if current == entry:
        return {"previous": current, "changed": False}
    kept = [line for line in lines if line != current] + ([entry] if entry else [])
    done = _crontab(["-"], user, "\n".join(kept) + "\n" if kept else "")
    if done.returncode != 0:
        raise AgentError("crontab - failed: %s" % done.stderr.strip())
    return {"previous": current, "changed": True}
