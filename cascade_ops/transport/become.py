"""``become`` over SSH: the agent runs as root through sudo. The password, when sudo wants one,
is the run's (``-K``) or read from a file only its owner may read; it only ever travels on the
agent session's stdin, as the answer to sudo's own prompt (a marker of ours)."""

import os
import shlex
import stat
from typing import Any, Mapping, Optional

from cascade_ops.errors import HostCommandError


def password_from_file(host: str, path: Optional[str]) -> Optional[str]:
    """The password in ``become_password_file``; refused when others may read the file."""
    if not path:
        return None
    try:
        mode = os.stat(path).st_mode
        with open(path) as f:
            password = f.read().rstrip("\n")
    except OSError as exc:
        raise HostCommandError(host, "become", "become_password_file %s: %s" % (path, exc.strerror)) from None
    if mode & 0o077:
        raise HostCommandError(
            host,
            "become",
            "become_password_file %s is readable by other users (mode %o): chmod 600 it" % (path, stat.S_IMODE(mode)),
        )
    return password


def sudo_prefix(become: bool, prompt: str, has_password: bool) -> str:
    """How the agent is run as root: with no prompt at all, or answering only our own prompt."""
    if not become:
        return ""
    return "sudo -S -p %s -- " % shlex.quote(prompt) if has_password else "sudo -n -- "


def explain(host_vars: Mapping[str, Any], said: str) -> str:
    """What an SSH-level failure means, for the person who has to fix it."""
    if host_vars["become"] and ("password is required" in said or "terminal is required" in said):
        return (
            "become: sudo on this host wants a password for %s and none was given: run with "
            "--ask-become-pass or set become_password_file, or give that user NOPASSWD sudo (sudo said: %s)"
            % (host_vars["user"] or "the SSH user", said)
        )
    return "SSH: %s" % said
