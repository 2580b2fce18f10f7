"""How the steps reach a host: run an agent command there, start a detached process, copy a tree.

Steps talk to a ``Transport`` only, so the same step code serves every kind of host. The local
transport calls the agent in-process (no subprocess, no serialisation: the healthy path stays
fast); only a detached start goes through a short-lived intermediate process.
"""

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
from typing import Any, ContextManager, Optional, Protocol, Tuple

from . import agent
from .errors import HostCommandError, LockHeld

_SPAWN_TIMEOUT = 30.0


class Transport(Protocol):
    host: str

    def agent(self, command: str, **kwargs: Any) -> Any:
        """Run one agent command on the host and return its result."""

    def spawn(self, **kwargs: Any) -> dict:
        """Start a detached process on the host (see ``agent.spawn``); returns {"pid": ...}."""

    def put_tree(self, src: str, dest: str) -> None:
        """Copy a directory from the controller to a new directory on the host."""

    def stage(self, dest: str, data: bytes) -> Optional[str]:
        """Upload ``data`` to a temporary file beside ``dest``; None when it can go inline."""

    def lock(self, path: str) -> ContextManager[None]:
        """Hold an exclusive lock on the host for the block, or raise LockHeld at once."""

    def tunnel(self, host: str, port: int) -> ContextManager[Tuple[str, int]]:
        """Where the controller reaches ``host:port`` as seen from the host, for the block."""

    def close(self) -> None:
        """Release the connection, if any."""


def decode_reply(host: str, command: str, stdout: str, stderr: str = "") -> Any:
    """The result of an agent run as a script (``agent.main``), or HostCommandError."""
    try:
        reply = json.loads(stdout)
    except ValueError:
        detail = (stderr or stdout).strip().splitlines()[-1:] or ["no output"]
        raise HostCommandError(host, command, "agent did not answer: %s" % detail[0])
    if "error" in reply:
        raise HostCommandError(host, command, reply["error"])
    return reply["result"]


class LocalTransport:
    """The machine cascade-ops runs on."""

    def __init__(self, host: str = "localhost"):
        self.host = host

    def agent(self, command: str, **kwargs: Any) -> Any:
        try:
            return agent.COMMANDS[command](**kwargs)
        except (agent.AgentError, OSError) as exc:
            raise HostCommandError(self.host, command, str(exc)) from exc

    def spawn(self, **kwargs: Any) -> dict:
        # The intermediate exits at once, so the backend is re-parented to init and never
        # becomes a zombie of a long-lived runner (a library caller, a test process).
        try:
            proc = subprocess.run([sys.executable, "-I", agent.__file__, "spawn"], input=json.dumps(kwargs) + "\n",
                                  capture_output=True, text=True, timeout=_SPAWN_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise HostCommandError(self.host, "spawn", "launcher did not return within %ds" % _SPAWN_TIMEOUT)
        return decode_reply(self.host, "spawn", proc.stdout, proc.stderr)

    def put_tree(self, src: str, dest: str) -> None:
        try:
            shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", ".cascade-ops"),
                            dirs_exist_ok=True)
        except OSError as exc:
            raise HostCommandError(self.host, "copy", "%s -> %s: %s" % (src, dest, exc)) from exc

    @contextlib.contextmanager
    def lock(self, path: str):
        # A kernel lock, not a pid file: it dies with its process, so a crash leaves nothing stale.
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LockHeld(self.host, path) from None
            yield
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def tunnel(self, host: str, port: int):
        yield host, port

    def stage(self, dest: str, data: bytes) -> Optional[str]:
        return None  # in-process: the bytes are passed as they are

    def close(self) -> None:
        pass


def connect(host_vars: dict, accept_new_host_keys: bool = False) -> Transport:
    """The transport for a host's ``connection`` variable (SSH's code loads only when needed)."""
    if host_vars["connection"] == "local":
        return LocalTransport(host_vars["host"])
    from .ssh import SSHTransport
    return SSHTransport(host_vars, accept_new_host_keys)

