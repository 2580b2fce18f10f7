"""What every transport is: run an agent command on a host, start a detached process, copy files,
hold the host's lock, reach a port as the host sees it.

Steps talk to a ``Transport`` only, so the same step code serves every kind of host. What is the
same for every transport (the lock, error mapping, cancellation) lives here once.
"""

import abc
import contextlib
import json
from typing import Any, ClassVar, Dict, Iterator, List, Optional, Tuple

from cascade_ops.errors import HostCommandError, LockHeld


def decode_reply(host: str, command: str, reply: Any) -> Any:
    """The result of an agent reply ({"result"} or {"error"}), or HostCommandError."""
    if isinstance(reply, (str, bytes)):
        try:
            reply = json.loads(reply)
        except ValueError:
            text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
            detail = text.strip().splitlines()[-1:] or ["no output"]
            raise HostCommandError(host, command, "agent did not answer: %s" % detail[0]) from None
    if "error" in reply:
        raise HostCommandError(host, command, reply["error"])
    return reply["result"]


class Transport(abc.ABC):
    """One host, reached one way, registered in ``config.connections`` under ``name``."""

    name: ClassVar[str]
    # The host's files are the controller's: a path here is a path there (nothing to copy over).
    shares_filesystem: ClassVar[bool] = False

    def __init__(self, host_vars: Dict[str, Any], **options: Any):
        """Take the host's variables; ``options`` are the run's connection options (each transport
        takes what it knows). Nothing is reached before ``connect``."""
        self.vars = host_vars
        self.host: str = host_vars["host"]
        self.cancelled: Optional[str] = None
        self.notes: List[str] = []  # worth telling the person running this (a host key recorded)

    def connect(self) -> None:  # noqa: B027  (a transport without a connection has nothing to open)
        """Open the connection (HostUnreachable when it cannot be opened)."""

    def agent(self, command: str, **kwargs: Any) -> Any:
        """Run one agent command on the host and return its result; HostCommandError otherwise."""
        if self.cancelled:
            raise HostCommandError(self.host, command, "not run: %s" % self.cancelled)
        return self._agent(command, kwargs)

    @abc.abstractmethod
    def _agent(self, command: str, kwargs: Dict[str, Any]) -> Any:
        """Carry out ``agent``: every failure becomes HostCommandError, whatever the cause."""

    def spawn(self, **kwargs: Any) -> Dict[str, int]:
        """Start a detached process on the host (see ``agent.launch``); returns {"pid": ...}."""
        return self.agent("spawn", **kwargs)

    @abc.abstractmethod
    def put_tree(self, src: str, dest: str) -> None:
        """Copy a directory from the controller to a new directory on the host."""

    def stage(self, dest: str, data: bytes) -> Optional[str]:
        """Upload ``data`` to a temporary file beside ``dest``; None when it goes inline instead."""
        return None

    @contextlib.contextmanager
    def lock(self, path: str) -> Iterator[None]:
        """The host's run lock (the agent's flock) for the block; LockHeld at once when taken."""
        if not self.agent("lock", path=path)["locked"]:
            raise LockHeld(self.host, path)
        try:
            yield
        finally:
            if not self.cancelled:
                self.agent("unlock", path=path)

    @contextlib.contextmanager
    def tunnel(self, host: str, port: int) -> Iterator[Tuple[str, int]]:
        """Where the controller reaches ``host:port`` as seen from the host, for the block."""
        yield host, port

    def close(self) -> None:  # noqa: B027  (a transport without a connection has nothing to release)
        """Release the connection, if any."""

    def cancel(self, why: str) -> None:
        """Stop acting on this host: no further agent command runs, and the connection is released.
        Called from another thread (the scheduler's, at a host's deadline)."""
        self.cancelled = why
        self.close()
