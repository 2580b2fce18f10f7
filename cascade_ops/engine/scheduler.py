"""The one scheduler every command reaches hosts through: ``forks`` hosts at once, each connected,
worked on and closed in its own thread under its own deadline (``host_timeout``).

Fabric's ThreadingGroup joins its threads without a timeout, so one hung host would hang the run;
here the scheduler never waits past a host's deadline. A host cut off at its deadline is cancelled:
its transport refuses every further agent command and its connection is closed, so it stops acting.
An unreachable host is one outcome among the others, never the end of the whole answer.
"""

import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, Generic, List, Optional, Sequence, Tuple, TypeVar

from cascade_ops.config.hostvars import Reachable
from cascade_ops.engine import interrupts
from cascade_ops.engine.interrupts import Interrupted
from cascade_ops.errors import EXIT_OK, CascadeError, HostCommandError, HostCutOff, HostUnreachable
from cascade_ops.transport import ConnectOptions, Transport, connect, prepare

T = TypeVar("T")
H = TypeVar("H", bound=Reachable)  # a Host, or the controller
Work = Callable[[H, Transport], T]

DEFAULT_FORKS = 10
# Hosts in flight at once cost a thread and a few descriptors each (the SSH socket, and for a moment
# a verification tunnel's pair): the ceiling keeps a run inside the process's descriptor limit.
FDS_PER_FORK = 8
FORKS_CEILING = 256


def max_forks() -> int:
    """The most hosts this process can work on at once: FORKS_CEILING, or less under a low RLIMIT_NOFILE."""
    import resource

    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return FORKS_CEILING if soft == resource.RLIM_INFINITY else max(1, min(FORKS_CEILING, (soft - 64) // FDS_PER_FORK))


STOP_WAIT_S = 5.0  # at most, for cut-off hosts to stop acting before the run returns


@dataclass
class HostOutcome(Generic[T]):
    """What ``work`` returned on one host, or the error that stopped it there."""

    host: str
    value: Optional[T] = None
    error: Optional[CascadeError] = None
    duration_s: float = 0.0
    connected: bool = False

    @property
    def exit_code(self) -> int:
        return self.error.exit_code if self.error else EXIT_OK


class _Slot(Generic[H]):
    """One host's place in the run: its transport once connected, and whether it was cut off."""

    def __init__(self, host: H):
        self.host = host
        self.deadline = time.monotonic() + host.vars["host_timeout"]
        self.transport: Optional[Transport] = None
        self.cut: Optional[str] = None
        self.stopping: Optional[threading.Thread] = None  # the cancellation of a cut-off host
        self.lock = threading.Lock()

    def connected(self, transport: Transport) -> None:
        with self.lock:
            self.transport = transport
            if self.cut:  # cut off while connecting: it must not start acting now
                transport.cancel(self.cut)

    def cut_off(self) -> HostOutcome:
        timeout = self.host.vars["host_timeout"]
        with self.lock:
            self.cut = "cut off after host_timeout %.0fs" % timeout
            transport = self.transport
        name = self.host.name
        if transport is None:
            return HostOutcome(
                name,
                error=HostUnreachable(name, "not connected within host_timeout %.0fs" % timeout),
                duration_s=timeout,
            )
        # Closing may block on a dead peer: not on the scheduler's thread.
        self.stopping = threading.Thread(target=transport.cancel, args=(self.cut,), daemon=True)
        self.stopping.start()
        return HostOutcome(name, error=HostCutOff(name, timeout), duration_s=timeout, connected=True)


def _attempt(slot: "_Slot[H]", work: "Work[H, T]", connect_options: Optional[ConnectOptions]) -> HostOutcome[T]:
    started = time.monotonic()
    host = slot.host
    outcome: HostOutcome[T] = HostOutcome(host.name)
    transport = None
    try:
        transport = connect(host.vars, connect_options)
        slot.connected(transport)
        outcome.connected = True
        outcome.value = work(host, transport)
    except CascadeError as exc:
        outcome.error = exc
    except Exception as exc:  # one host's surprise must not take the other hosts' results with it
        outcome.error = HostCommandError(host.name, "error", "unexpected %s: %s" % (type(exc).__name__, exc))
    finally:
        if transport is not None:
            transport.close()
    outcome.duration_s = time.monotonic() - started
    return outcome


def run_each(
    hosts: Sequence[H],
    work: "Work[H, T]",
    forks: int = DEFAULT_FORKS,
    connect_options: Optional[ConnectOptions] = None,
    on_done: Optional[Callable[[H, HostOutcome[T]], None]] = None,
    on_start: Optional[Callable[[H], None]] = None,
) -> Dict[str, HostOutcome[T]]:
    """Run ``work(host, transport)`` on every host, ``forks`` at a time; outcomes in host order.

    ``connect_options`` go to every transport (``transport.connect``). ``on_done`` is called (from
    the scheduler's thread) as each host finishes or is cut off.
    """
    prepare(h.vars["connection"] for h in hosts)
    finished: queue.Queue[Tuple[str, HostOutcome[T]]] = queue.Queue()
    outcomes: Dict[str, HostOutcome[T]] = {}
    pending = list(hosts)
    running: Dict[str, _Slot[H]] = {}
    cut: List[_Slot[H]] = []

    def thread(slot: _Slot[H]) -> None:
        finished.put((slot.host.name, _attempt(slot, work, connect_options)))

    def record(host: H, outcome: HostOutcome[T]) -> None:
        outcomes[host.name] = outcome
        if on_done:
            on_done(host, outcome)

    while pending or running:
        while pending and len(running) < max(1, forks):
            signum = interrupts.requested()
            if signum is not None:  # stopping: the hosts not started yet are left alone
                host = pending.pop(0)
                record(host, HostOutcome(host.name, error=Interrupted(signum, "before %s was started" % host.name)))
                continue
            slot = _Slot(pending.pop(0))
            running[slot.host.name] = slot
            if on_start:
                on_start(slot.host)
            threading.Thread(target=thread, args=(slot,), daemon=True, name="host-" + slot.host.name).start()
        if not running:
            break
        nearest = min(slot.deadline for slot in running.values())
        try:
            name, outcome = finished.get(timeout=max(0.0, nearest - time.monotonic()))
            if name in running:
                record(running.pop(name).host, outcome)
        except queue.Empty:
            pass
        now = time.monotonic()
        for name, slot in list(running.items()):
            if now >= slot.deadline:
                del running[name]
                record(slot.host, slot.cut_off())
                cut.append(slot)
    # Give the cut-off hosts' cancellations a moment to stop their agents: a CLI exits right after.
    until = time.monotonic() + STOP_WAIT_S
    for slot in cut:
        if slot.stopping is not None:
            slot.stopping.join(max(0.0, until - time.monotonic()))
    return {h.name: outcomes[h.name] for h in hosts}
