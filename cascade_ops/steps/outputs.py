"""What steps hand to later ones (Ansible's ``register:``): typed, frozen records a step registers
on its host's run, and a later step's ``gather`` (or a listener, after the run) reads by type with
``run.last(T)`` or ``run.every(T)``. One registered by a plan is registered in check mode too, so a
dry run plans each step against the same hand-overs as a real run; one registered by ``apply``
says what was done, as it was done (a step that fails half-way has still registered its first half).
"""

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from cascade_ops.model.facts import Diagnosis
from cascade_ops.steps.ownership import Route
from cascade_ops.steps.takeover import Handover


@dataclass(frozen=True)
class Diagnosed:
    """diagnose (plan): what it found, and when (time.monotonic())."""

    diagnosis: Diagnosis
    at: float


@dataclass(frozen=True)
class FileChanged:
    """A file step's plan: a file the backend runs changes (in check mode, would); a healthy backend
    is restarted for it."""

    path: str


@dataclass(frozen=True)
class Installed:
    """A file step's apply: a file put in place, and its backup (None: it is new), for a rollback."""

    path: str
    backup: Optional[str]


@dataclass(frozen=True)
class SocketPlan:
    """What clients will see of the restart: whether the listening socket (and its queue) is kept,
    why not, and how many connections were waiting in it."""

    kept: bool
    why: str
    waiting: Optional[int]


@dataclass(frozen=True)
class RestartPlanned:
    """terminate (plan): the backend is to be (re)started, whether or not anything holds its port."""


@dataclass(frozen=True)
class StopPlanned:
    """terminate (plan): the stale backend is to be stopped, through whom, and whether its listening
    socket is kept for the replacement; start follows the same route."""

    route: Route
    handover: Optional[Handover]
    socket: SocketPlan
    hung: bool  # known hung (stopped, or failed the probe): hung_grace, not grace


@dataclass(frozen=True)
class Evidence:
    """terminate (apply): stacks, states and log lines captured before anything was signalled."""

    document: Dict[str, Any]


@dataclass(frozen=True)
class SocketKept:
    """terminate (apply): the agent's copy of the kept listening socket, for start to hand over."""

    fd: int


@dataclass(frozen=True)
class Restarted:
    """terminate or start (apply): this run signalled or started the backend (a rollback restarts
    it only then)."""


@dataclass(frozen=True)
class Signalled:
    """terminate or start (apply): each stale process signalled and how it ended (pid, outcome)."""

    outcomes: Tuple[Dict[str, Any], ...]


@dataclass(frozen=True)
class Started:
    """start (apply): the backend it started or had its owner start (its main pid, if known)."""

    pid: Optional[int]


@dataclass(frozen=True)
class HandedOver:
    """start (apply): the replacement took the kept socket; what clients waited, at most."""

    started_pid: int
    unaccepted_s: float


@dataclass(frozen=True)
class Check:
    """One verification check and how it went."""

    name: str
    ok: bool
    detail: str
    elapsed_s: float

    def describe(self) -> str:
        return "%s %s (%s, %.0f ms)" % (self.name, "ok" if self.ok else "FAILED", self.detail, self.elapsed_s * 1000)


@dataclass(frozen=True)
class Verified:
    """verify (plan): its checks, passed or not."""

    checks: Tuple[Check, ...]
