"""What a run leaves behind and is read back later: typed records with ``to_json``/``from_json``.

What is read back comes off a host's disk (a torn write, an older version's line, a hand edit):
``from_json`` checks every field's type and raises ValueError naming the first that is wrong, so a
reader skips a bad record instead of failing on it half-way through a page.
"""

import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple, Type, TypeVar, Union

from cascade_ops.model.results import HostResult, StepStatus

T = TypeVar("T")
_REQUIRED = object()
MESSAGE_CHARS = 4000  # a failed step's cause (a log tail, a traceback) is kept whole, within reason


class Fields:
    """One JSON object's fields, read by type; a missing or mistyped one is a ValueError naming it."""

    def __init__(self, doc: Any, what: str):
        if not isinstance(doc, dict):
            raise ValueError("%s: expected an object, got %s" % (what, type(doc).__name__))
        self.doc, self.what = doc, what

    def get(self, name: str, kind: Union[Type[T], Tuple[type, ...]], default: Any = _REQUIRED) -> Any:
        if name not in self.doc or (self.doc[name] is None and default is not _REQUIRED):
            if default is _REQUIRED:
                raise ValueError("%s: no %s" % (self.what, name))
            return default
        value = self.doc[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise ValueError("%s: %s is %s" % (self.what, name, type(value).__name__))
        return value

    def items(self, name: str) -> List[Any]:
        return list(self.get(name, list, []))


@dataclass(frozen=True)
class StepRecord:
    name: str
    status: str
    duration_s: float
    message: Optional[str] = None  # a failed step's cause

    def to_json(self) -> Dict[str, Any]:
        doc: Dict[str, Any] = {"name": self.name, "status": self.status, "duration_s": self.duration_s}
        if self.message is not None:
            doc["message"] = self.message
        return doc

    @classmethod
    def from_json(cls, doc: Any) -> "StepRecord":
        f = Fields(doc, "step")
        return cls(f.get("name", str), f.get("status", str), f.get("duration_s", float), f.get("message", str, None))


@dataclass(frozen=True)
class RunRecord:
    """One run on one host, as the run history keeps it: names, statuses and timings, and a failed
    step's first lines (already scrubbed of the JWT secret); nothing else."""

    run_id: str
    playbook: str
    host: str
    started_at: float
    duration_s: float
    status: str
    exit_code: int
    steps: Tuple[StepRecord, ...]
    incident_report: Optional[str]
    recorded_at: float

    @classmethod
    def of(cls, result: HostResult, run_id: str, playbook: str, started_at: float) -> "RunRecord":
        steps = tuple(
            StepRecord(
                s.name,
                str(s.status),
                round(s.duration_s, 4),
                s.message[:MESSAGE_CHARS] if s.status is StepStatus.FAILED else None,
            )
            for s in result.steps
        )
        return cls(
            run_id,
            playbook,
            result.host,
            round(started_at, 3),
            round(result.duration_s, 4),
            str(result.status),
            result.exit_code,
            steps,
            result.incident_report,
            round(time.time(), 3),
        )

    def to_json(self) -> Dict[str, Any]:
        return {
            "run_id": self.run_id,
            "playbook": self.playbook,
            "host": self.host,
            "started_at": self.started_at,
            "duration_s": self.duration_s,
            "status": self.status,
            "exit_code": self.exit_code,
            "steps": [s.to_json() for s in self.steps],
            "incident_report": self.incident_report,
            "recorded_at": self.recorded_at,
        }

    @classmethod
    def from_json(cls, doc: Any) -> "RunRecord":
        f = Fields(doc, "run record")
        return cls(
            f.get("run_id", str),
            f.get("playbook", str, ""),
            f.get("host", str),
            f.get("started_at", float),
            f.get("duration_s", float),
            f.get("status", str),
            f.get("exit_code", int),
            tuple(StepRecord.from_json(s) for s in f.items("steps")),
            f.get("incident_report", str, None),
            f.get("recorded_at", float, 0.0),
        )


@dataclass(frozen=True)
class IncidentReport:
    """What was wrong, what was done, is it fixed: written on the host after a run that changed or
    failed something. Its parts from the host (the diagnosis, the evidence, the hang) stay JSON."""

    host: str
    port: int
    outcome: str
    started_at: str  # ISO 8601, UTC
    finished_at: str
    duration_s: float
    diagnosis: Optional[Dict[str, Any]]
    hang: Optional[Dict[str, Any]]
    evidence: Optional[Dict[str, Any]]
    actions: Tuple[Dict[str, Any], ...]  # each step's result
    verification: Tuple[Dict[str, Any], ...]  # each check: name, ok, detail, elapsed_s
    rollback: Optional[Dict[str, Any]]
    socket: Optional[Dict[str, Any]] = None  # what clients saw: the listening socket kept, or why not
    planned_restart: Optional[str] = None  # a healthy backend restarted for changed files: which

    def to_json(self) -> Dict[str, Any]:
        doc: Dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "outcome": self.outcome,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "duration_s": self.duration_s,
            "diagnosis": self.diagnosis,
            "hang": self.hang,
            "evidence": self.evidence,
            "actions": list(self.actions),
            "verification": list(self.verification),
            "rollback": self.rollback,
        }
        if self.socket is not None:
            doc["socket"] = self.socket
        if self.planned_restart is not None:
            doc["planned_restart"] = self.planned_restart
        return doc

    @classmethod
    def from_json(cls, doc: Any) -> "IncidentReport":
        f = Fields(doc, "incident report")
        parts = [f.get(name, dict, None) for name in ("diagnosis", "hang", "evidence")]
        if not all(isinstance(a, dict) for a in f.items("actions") + f.items("verification")):
            raise ValueError("incident report: an action or a check is not an object")
        return cls(
            f.get("host", str),
            f.get("port", int),
            f.get("outcome", str),
            f.get("started_at", str),
            f.get("finished_at", str, ""),
            f.get("duration_s", float),
            parts[0],
            parts[1],
            parts[2],
            tuple(f.items("actions")),
            tuple(f.items("verification")),
            f.get("rollback", dict, None),
            f.get("socket", dict, None),
            f.get("planned_restart", str, None),
        )
