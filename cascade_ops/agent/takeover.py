"""Keeping the listening socket across a restart: a copy of the stale holder's descriptor.

``pidfd_getfd(2)`` (Linux 5.6+) copies another process's file descriptor into this one when this
process may ptrace it (root, or the same user where Yama allows). While any process holds a
listening socket, its accept queue lives on: the replacement is started on the copy before the
stale holder is stopped, so no queued connection is reset and none is refused in between. Python
has no wrapper for the two syscalls: they go through libc's ``syscall``.

The copies live in this agent process between ``take_over`` and the ``spawn`` that hands them on
(``inherit``); ``release`` closes them.
"""

import ctypes
import errno
import os
import platform
from typing import Any, Dict, List, Optional

from .procfs import read_stat
from .registry import AgentError, command

# Syscall numbers are the same on x86_64 and aarch64 for these two (the unified table since 5.x).
_SYSCALLS = {"x86_64": (434, 438), "aarch64": (434, 438), "amd64": (434, 438), "arm64": (434, 438)}
_held: Dict[int, int] = {}  # socket inode -> this process's copy of it


def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def _fd_of(pid: int, inode: int) -> Optional[int]:
    """The descriptor number under which ``pid`` holds the socket ``inode``."""
    fd_dir = "/proc/%d/fd" % pid
    for name in os.listdir(fd_dir):
        try:
            if os.readlink(fd_dir + "/" + name) == "socket:[%d]" % inode:
                return int(name)
        except OSError:
            continue
    return None


def _copy(pid: int, start_ticks: int, inode: int) -> int:
    """A copy of ``pid``'s descriptor of socket ``inode`` in this process; AgentError saying why not."""
    numbers = _SYSCALLS.get(platform.machine().lower())
    if numbers is None:
        raise AgentError("pidfd_getfd: unknown syscall number on %s" % platform.machine())
    libc = _libc()
    pidfd = libc.syscall(numbers[0], pid, 0)
    if pidfd < 0:
        raise AgentError("pidfd_open(%d): %s" % (pid, os.strerror(ctypes.get_errno())))
    try:
        stat = read_stat(pid)
        if stat is None or int(stat[1][19]) != start_ticks:
            raise AgentError("pid %d is gone or was replaced" % pid)
        try:
            fd = _fd_of(pid, inode)
        except PermissionError:
            raise AgentError("pid %d's descriptors cannot be read by this user" % pid) from None
        if fd is None:
            raise AgentError("pid %d does not hold socket %d" % (pid, inode))
        copy = libc.syscall(numbers[1], pidfd, fd, 0)
        if copy < 0:
            code = ctypes.get_errno()
            why = {
                errno.EPERM: "no ptrace rights over pid %d (root, or the same user where Yama allows)" % pid,
                errno.ENOSYS: "this kernel has no pidfd_getfd (Linux 5.6+)",
            }.get(code, os.strerror(code))
            raise AgentError("pidfd_getfd: %s" % why)
        return int(copy)
    finally:
        os.close(pidfd)


@command
def take_over_check(pid: int, start_ticks: int, inode: int) -> Dict[str, Any]:
    """Whether the socket could be copied now: copied and closed at once (changes nothing)."""
    try:
        os.close(_copy(pid, start_ticks, inode))
    except AgentError as exc:
        return {"ok": False, "why": str(exc)}
    return {"ok": True}


@command
def take_over(pid: int, start_ticks: int, inode: int) -> Dict[str, int]:
    """Copy ``pid``'s listening socket ``inode`` into this process, kept for the next ``spawn``."""
    if inode not in _held:
        _held[inode] = _copy(pid, start_ticks, inode)
    return {"inode": inode, "fd": _held[inode]}


def held(inodes: List[int]) -> List[int]:
    """This process's copies of ``inodes`` (AgentError for one not taken over)."""
    missing = [i for i in inodes if i not in _held]
    if missing:
        raise AgentError("socket %s was not taken over in this agent" % ", ".join(map(str, missing)))
    return [_held[i] for i in inodes]


@command
def release(inodes: Optional[List[int]] = None) -> Dict[str, List[int]]:
    """Close this process's copies (all of them by default): the replacement holds its own."""
    done = []
    for inode in list(_held) if inodes is None else inodes:
        fd = _held.pop(inode, None)
        if fd is not None:
            os.close(fd)
            done.append(inode)
    return {"released": done}
