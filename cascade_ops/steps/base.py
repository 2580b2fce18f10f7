"""What a step is: gather facts, compute a plan, apply it unless in check mode.

Check mode runs exactly the same ``gather`` and ``plan`` as a real run and stops before
``apply``: a dry run can only differ from a real one by the change itself.
"""

import time
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Dict, List, Optional, Tuple, Union

from cascade_ops.config.hostvars import HostVars
from cascade_ops.errors import CascadeError, HostCommandError
from cascade_ops.model.facts import Diagnosis
from cascade_ops.model.results import StepResult, StepStatus
from cascade_ops.transport import Transport

OK, CHANGED, FAILED, SKIPPED = StepStatus.OK, StepStatus.CHANGED, StepStatus.FAILED, StepStatus.SKIPPED


class StepFailed(CascadeError):
    """The step cannot do its job; the message tells the operator what to look at."""


@dataclass
class Plan:
    """A change to make: ``summary`` completes "would ..." / "did ..."; ``diff`` for --diff."""

    summary: str
    diff: str = ""
    payload: Any = None


@dataclass
class Unchanged:
    message: str


@dataclass
class Skipped:
    message: str


@dataclass
class HostRun:
    """One host's run: its variables, its transport, and what earlier steps found or planned."""

    host: str
    vars: HostVars
    transport: Transport
    check: bool = False
    diff: bool = False
    diagnosis: Optional[Diagnosis] = None
    diagnosed_at: float = 0.0  # time.monotonic() of the diagnosis
    changed_files: List[str] = field(default_factory=list)
    restart_planned: bool = False
    route: Any = None  # ownership.Route: through whom terminate stopped the backend (start follows it)
    restarted: bool = False  # this run signalled or started the backend (a rollback restarts it only then)
    installed: List[Tuple[str, Optional[str]]] = field(default_factory=list)  # (file, its backup or None)
    evidence: Optional[Dict[str, Any]] = None  # captured before terminate signalled anything
    terminated: List[Dict[str, Any]] = field(default_factory=list)  # terminate's outcome per pid
    started_pid: Optional[int] = None  # the backend the start step launched
    checks: List[Any] = field(default_factory=list)  # the verify step's results
    rollback: Optional[Dict[str, Any]] = None
    handover: Any = None  # takeover.Handover: the listening socket kept across this restart
    handover_fd: Optional[int] = None  # the agent's copy of it, for the start step
    socket: Optional[Dict[str, Any]] = None  # what clients saw: kept or why not, waiting, unaccepted_s


def left_alone(run: HostRun) -> bool:
    """The diagnosis found nothing to mend (healthy, or slow and ``restart_slow`` off) and no earlier
    step changed a file the backend runs: nothing is signalled, started or re-verified."""
    return run.diagnosis is not None and run.diagnosis.left_alone(run.vars.restart_slow) and not run.changed_files


Outcome = Union[Plan, Unchanged, Skipped]
Args = Dict[str, Any]


@dataclass(frozen=True)
class Arg:
    parse: Callable[[str], Any] = str
    default: Any = None
    required: bool = False


class Step:
    name: ClassVar[str]
    args: ClassVar[Dict[str, Arg]] = {}

    def gather(self, run: HostRun, args: Args) -> Any:
        """Read what ``plan`` needs from the host (nothing by default)."""
        return None

    def plan(self, run: HostRun, args: Args, facts: Any) -> Outcome:
        """Return Unchanged, Skipped or a Plan; record in ``run`` what later steps must know."""
        raise NotImplementedError

    def apply(self, run: HostRun, args: Args, plan: Plan) -> str:
        """Make the change; return what was done, in words."""
        raise NotImplementedError

    def rollback_args(self, args: Args) -> Optional[Args]:
        """The arguments this step runs with when a failed release is rolled back, after its files are
        put back; None (the default): it does not run then."""
        return None

    def execute(self, run: HostRun, args: Args) -> StepResult:
        started = time.monotonic()
        diff = ""
        try:
            outcome = self.plan(run, args, self.gather(run, args))
            if isinstance(outcome, Unchanged):
                status, message = OK, outcome.message
            elif isinstance(outcome, Skipped):
                status, message = SKIPPED, outcome.message
            else:
                diff = outcome.diff if run.diff else ""
                message = "would " + outcome.summary if run.check else self.apply(run, args, outcome)
                status = CHANGED
        except (StepFailed, HostCommandError) as exc:
            status, message = FAILED, str(exc)
        return StepResult(self.name, status, message, time.monotonic() - started, diff)


@dataclass(frozen=True)
class BoundStep:
    """A step with its arguments rendered for one host, or the reason it is skipped there."""

    step: Step
    args: Optional[Dict[str, Any]]
    skip_reason: Optional[str] = None
