"""What a run produced: each step's result, each host's, the whole run's. The engine fills them in;
reporting (the text output, the run history, the incident report) reads them."""

import enum
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from cascade_ops.errors import EXIT_FAILED, EXIT_LOCKED, EXIT_OK, EXIT_UNREACHABLE, worst_exit_code


class StepStatus(str, enum.Enum):
    OK = "ok"
    CHANGED = "changed"
    FAILED = "failed"
    SKIPPED = "skipped"

    def __str__(self) -> str:  # "%s" and f-strings give the word, on every Python the CLI runs on
        return str(self.value)


class HostStatus(str, enum.Enum):
    """How a host's run ended, one word (the recap's ``status``, the history's, the watch log's)."""

    OK = "ok"
    CHANGED = "changed"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"  # the release failed; the previous files run again, verified
    UNREACHABLE = "unreachable"  # could not connect (refused, timed out, authentication, host key)
    LOCKED = "locked"  # another run held the host's lock: nothing was done
    NOT_RUN = "not_run"  # the rollout stopped before this host's batch
    INTERRUPTED = "interrupted"  # a signal stopped the run at a safe point

    def __str__(self) -> str:
        return str(self.value)


class Tone(str, enum.Enum):
    """How a status reads at a glance; the terminal and the HTML page each give a tone its colour."""

    GOOD = "good"
    CHANGE = "change"
    BAD = "bad"
    ELSEWHERE = "elsewhere"  # the host could not be worked on (unreachable, locked)
    QUIET = "quiet"  # nothing was done (skipped, not run)


# Every step and host status, once (a word both kinds share has one tone).
TONES: Dict[str, Tone] = {
    "ok": Tone.GOOD,
    "changed": Tone.CHANGE,
    "failed": Tone.BAD,
    "rolled_back": Tone.BAD,
    "interrupted": Tone.BAD,
    "unreachable": Tone.ELSEWHERE,
    "locked": Tone.ELSEWHERE,
    "skipped": Tone.QUIET,
    "not_run": Tone.QUIET,
}


@dataclass
class StepResult:
    name: str
    status: StepStatus
    message: str
    duration_s: float = 0.0
    diff: str = ""

    @property
    def changed(self) -> bool:
        return self.status is StepStatus.CHANGED

    def to_json(self) -> Dict[str, Any]:
        doc: Dict[str, Any] = {
            "name": self.name,
            "status": self.status.value,
            "changed": self.changed,
            "message": self.message,
            "duration_s": round(self.duration_s, 4),
        }
        if self.diff:
            doc["diff"] = self.diff
        return doc


@dataclass
class HostResult:
    host: str
    steps: List[StepResult] = field(default_factory=list)
    duration_s: float = 0.0
    # Set when the run ends other than by its steps (unreachable, locked, not run, rolled back,
    # interrupted); otherwise the steps say it: failed, changed or ok.
    ending: Optional[HostStatus] = None
    signal: Optional[int] = None  # the signal that stopped this host's run at a safe point
    started_at: float = 0.0  # time.time() when the host's run began
    incident_report: Optional[str] = None
    warnings: List[str] = field(default_factory=list)  # worth knowing, not a failure of the run
    notes: List[str] = field(default_factory=list)  # what the connection did (a host key recorded)

    @property
    def failed(self) -> bool:
        return any(s.status is StepStatus.FAILED for s in self.steps)

    @property
    def changed(self) -> bool:
        return any(s.changed for s in self.steps)

    @property
    def first_failure(self) -> Optional[StepResult]:
        return next((s for s in self.steps if s.status is StepStatus.FAILED), None)

    @property
    def status(self) -> HostStatus:
        if self.ending is not None:
            return self.ending
        return HostStatus.FAILED if self.failed else HostStatus.CHANGED if self.changed else HostStatus.OK

    def end(self, ending: HostStatus, signum: Optional[int] = None) -> None:
        """Record how the run ended; an interruption is never overwritten by what comes after it."""
        if self.ending is not HostStatus.INTERRUPTED:
            self.ending, self.signal = ending, signum

    @property
    def exit_code(self) -> int:
        status = self.status
        if status is HostStatus.INTERRUPTED:
            return 128 + (self.signal or 0)
        if status is HostStatus.UNREACHABLE:
            return EXIT_UNREACHABLE
        if self.failed:
            return EXIT_FAILED
        return EXIT_LOCKED if status is HostStatus.LOCKED else EXIT_OK

    def recap(self) -> Dict[str, Any]:
        """Counts of steps by status, as Ansible's recap counts tasks: ``ok`` includes the changed ones;
        an unreachable host counts as unreachable, not failed."""
        counts = {s.value: sum(1 for r in self.steps if r.status is s) for s in StepStatus}
        counts["ok"] += counts["changed"]
        unreachable = self.status is HostStatus.UNREACHABLE
        if unreachable:
            counts["failed"] = 0
        return dict(
            counts, unreachable=int(unreachable), status=self.status.value, duration_s=round(self.duration_s, 3)
        )

    def to_json(self) -> Dict[str, Any]:
        doc: Dict[str, Any] = {"steps": [s.to_json() for s in self.steps], "recap": self.recap()}
        if self.incident_report:
            doc["incident_report"] = self.incident_report
        if self.warnings:
            doc["warnings"] = self.warnings
        if self.notes:
            doc["notes"] = self.notes
        return doc


@dataclass
class RunResult:
    hosts: Dict[str, HostResult]

    @property
    def exit_code(self) -> int:
        return worst_exit_code(h.exit_code for h in self.hosts.values())

    def to_json(self) -> Dict[str, Any]:
        return {"hosts": {name: h.to_json() for name, h in self.hosts.items()}}
