"""Ctrl-C (SIGINT), SIGTERM and SIGHUP (the terminal closed) to a run: it stops at the next safe
point, between two steps (never inside an agent command, so never between writing a file and
renaming it), says where it stopped and what state it leaves the backend in, writes that to the
incident report, releases the lock and exits 130 (SIGINT), 143 (SIGTERM) or 129 (SIGHUP). A second
signal ends the process at once.
"""

import contextlib
import os
import signal
import sys
import threading
from typing import Any, Iterator, Optional

from cascade_ops.errors import CascadeError

_requested: Optional[int] = None


class Interrupted(CascadeError):
    def __init__(self, signum: int, where: str):
        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__("interrupted by %s %s" % (signal.Signals(signum).name, where))


def requested() -> Optional[int]:
    """The signal that asked the run to stop, if any."""
    return _requested


def check(where: str) -> None:
    """A safe point: raise Interrupted when a stop was asked for."""
    if _requested is not None:
        raise Interrupted(_requested, where)


def _handler(signum: int, frame: Any) -> None:
    global _requested
    if _requested is not None:
        os._exit(128 + signum)  # the second signal: at once, as asked
    _requested = signum
    try:
        sys.stderr.write(
            "cascade-ops: %s: stopping at the next safe point (again to stop at once)\n" % signal.Signals(signum).name
        )
        sys.stderr.flush()
    except (OSError, ValueError):  # after SIGHUP the terminal may be gone: the run still stops cleanly
        pass


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """Install the handlers for the block (the main thread only, as Python requires)."""
    global _requested
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _handler) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    _requested = None
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
