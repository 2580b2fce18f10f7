"""How the steps reach a host: run an agent command there, start a detached process, copy a tree.

Steps talk to a ``Transport`` only, so the same step code serves every kind of host. The local
transport calls the agent in-process (no subprocess, no serialisation: the healthy path stays
fast); only a detached start goes through a short-lived intermediate process.
"""

import contextlib
import json
import shutil
from typing import Any, ContextManager, Optional, Protocol, Tuple

from . import agent
from .errors import HostCommandError, LockHeld


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


@contextlib.contextmanager
def hold_lock(transport: "Transport", path: str):
    """The host's run lock (the agent's flock) for the block; LockHeld at once when taken."""
    if not transport.agent("lock", path=path)["locked"]:
        raise LockHeld(transport.host, path)
    try:
        yield
    finally:
        transport.agent("unlock", path=path)


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
        return self.agent("spawn_detached", **kwargs)

    def put_tree(self, src: str, dest: str) -> None:
        try:
            shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", ".cascade-ops"),
                            dirs_exist_ok=True)
        except OSError as exc:
            raise HostCommandError(self.host, "copy", "%s -> %s: %s" % (src, dest, exc)) from exc

    def lock(self, path: str):
        return hold_lock(self, path)

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

