"""What every transport is: run an agent command on a host, start a detached process, copy files,
hold the host's lock, reach a port as the host sees it.

Steps talk to a ``Transport`` only, so the same step code serves every kind of host. What is the
same for every transport (the lock, error mapping, cancellation) lives here once.
"""

from __future__ import annotations  # ParamSpec is named in annotations only: the controller runs on 3.9 too

import abc
import contextlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Dict, Iterator, List, Mapping, Optional, Tuple, TypeVar

from cascade_ops.agent import locks
from cascade_ops.errors import HostCommandError, LockHeld

if TYPE_CHECKING:
    from typing import ParamSpec

    P = ParamSpec("P")
R = TypeVar("R")


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


@dataclass(frozen=True)
class ConnectOptions:
    """How a run reaches every host, given on its command line (not per host); each transport takes
    what it knows. The passwords are never printed."""

    accept_new_host_keys: bool = False  # record an unknown host key instead of refusing it
    become_password: Optional[str] = field(default=None, repr=False)  # the answer to sudo's prompt
    ssh_password: Optional[str] = field(default=None, repr=False)  # SSH's password login (-k)


DEFAULT_CONNECT = ConnectOptions()  # no password, unknown host keys refused


class Transport(abc.ABC):
    """One host, reached one way, registered in ``config.connections`` under ``name``."""

    name: ClassVar[str]
    # The host's files are the controller's: a path here is a path there (nothing to copy over).
    shares_filesystem: ClassVar[bool] = False

    def __init__(self, host_vars: Mapping[str, Any], options: ConnectOptions = DEFAULT_CONNECT):
        """Take the host's variables and the run's connection options. Nothing is reached before
        ``connect``."""
        self.vars = host_vars
        self.host: str = host_vars["host"]
        self.cancelled: Optional[str] = None
        self.notes: List[str] = []  # worth telling the person running this (a host key recorded)

    def connect(self) -> None:  # noqa: B027  (a transport without a connection has nothing to open)
        """Open the connection (HostUnreachable when it cannot be opened)."""

    def call(self, command: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the agent command ``command`` (a function of ``cascade_ops.agent`` marked ``@command``)
        on the host and return its result; HostCommandError otherwise. The command is named by the
        function itself, so mypy checks every argument and the result's type at the call site.
        Arguments go by keyword: they travel as one JSON object."""
        if args:
            raise TypeError("%s: an agent command takes keyword arguments only" % command.__name__)
        result: R = self.agent(command.__name__, **kwargs)
        return result

    def agent(self, command: str, **kwargs: Any) -> Any:
        """Run the agent command named ``command``: for what knows only the name (the agent server,
        a test). Code that knows the function calls it through ``call``."""
        if self.cancelled:
            raise HostCommandError(self.host, command, "not run: %s" % self.cancelled)
        return self._agent(command, kwargs)

    @abc.abstractmethod
    def _agent(self, command: str, kwargs: Dict[str, Any]) -> Any:
        """Carry out ``agent``: every failure becomes HostCommandError, whatever the cause."""

    @abc.abstractmethod
    def put_tree(self, src: str, dest: str) -> None:
        """Copy a directory from the controller to a new directory on the host."""

    def stage(self, dest: str, data: bytes) -> Optional[str]:
        """Upload ``data`` to a temporary file beside ``dest``; None when it goes inline instead."""
        return None

    @contextlib.contextmanager
    def lock(self, path: str) -> Iterator[None]:
        """The host's run lock (the agent's flock) for the block; LockHeld at once when taken."""
        if not self.call(locks.lock, path=path)["locked"]:
            raise LockHeld(self.host, path)
        try:
            yield
        finally:
            if not self.cancelled:
                self.call(locks.unlock, path=path)

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
