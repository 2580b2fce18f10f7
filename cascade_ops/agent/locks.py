"""The host's run lock: an exclusive flock held by the agent process itself."""

import fcntl
import os
from typing import Dict

from .registry import command

_held: Dict[str, int] = {}


@command
def lock(path: str) -> Dict[str, bool]:
    """Take an exclusive flock on ``path`` and keep it until ``unlock`` or until this process ends.

    A kernel lock held by the agent process: it lives exactly as long as the controller's
    session, so a crashed controller (or a dropped SSH connection) leaves no stale lock.
    """
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return {"locked": False}
    _held[path] = fd
    return {"locked": True}


@command
def unlock(path: str) -> Dict[str, bool]:
    fd = _held.pop(path, None)
    if fd is not None:
        os.close(fd)
    return {"unlocked": fd is not None}
