"""What a step is: gather facts, compute a plan, apply it unless in check mode.

Check mode runs exactly the same ``gather`` and ``plan`` as a real run and stops before
``apply``: a dry run can only differ from a real one by the change itself.
"""

import time
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Dict, Generic, List, Optional, Tuple, Type, TypeVar, Union

from cascade_ops.config.hostvars import HostVars
from cascade_ops.errors import CascadeError, HostCommandError
from cascade_ops.model.results import StepResult, StepStatus
from cascade_ops.transport import Transport

OK, CHANGED, FAILED, SKIPPED = StepStatus.OK, StepStatus.CHANGED, StepStatus.FAILED, StepStatus.SKIPPED


class StepFailed(CascadeError):
    """The step cannot do its job; the message tells the operator what to look at. ``register``: what
    it found before it failed, for the incident report (the checks that failed, say)."""

    def __init__(self, message: str, register: "Tuple[Output, ...]" = ()):
        super().__init__(message)
        self.register = register


Output = object  # what a step hands to later ones: a frozen dataclass its module declares
Out = TypeVar("Out")
F = TypeVar("F")  # a step's facts: what its gather read
P = TypeVar("P")  # a step's plan payload: what its apply needs of the decision


@dataclass
class Plan(Generic[P]):
    """A change to make: ``summary`` completes "would ..." / "did ..."; ``diff`` for --diff;
    ``payload`` what apply needs; ``register`` what later steps may plan on, in check mode too."""

    summary: str
    diff: str = ""
    payload: P = None  # type: ignore[assignment]
    register: Tuple[Output, ...] = ()


@dataclass
class Unchanged:
    message: str
    register: Tuple[Output, ...] = ()


@dataclass
class Skipped:
    message: str
    register: Tuple[Output, ...] = ()


@dataclass(frozen=True)
class Context:
    """What a plan may read besides its facts: the host's variables and how the run was asked for."""

    vars: HostVars
    check: bool = False
    diff: bool = False


@dataclass
class HostRun:
    """One host's run: its variables and transport, and what its steps registered, in order (Ansible's
    ``register:``): only the engine (from a plan) and a step's apply (as it acts) add to it."""

    host: str
    vars: HostVars
    transport: Transport
    check: bool = False
    diff: bool = False
    outputs: List[Output] = field(default_factory=list)

    @property
    def context(self) -> Context:
        return Context(self.vars, self.check, self.diff)

    def register(self, *outputs: Output) -> None:
        self.outputs.extend(outputs)

    def last(self, kind: Type[Out]) -> Optional[Out]:
        """The latest output of this type, or None."""
        return next((o for o in reversed(self.outputs) if isinstance(o, kind)), None)

    def every(self, kind: Type[Out]) -> List[Out]:
        return [o for o in self.outputs if isinstance(o, kind)]


Outcome = Union[Plan[P], Unchanged, Skipped]
Args = Dict[str, Any]


@dataclass(frozen=True)
class Arg:
    parse: Callable[[str], Any] = str
    default: Any = None
    required: bool = False


class Step(Generic[F, P]):
    """gather reads the host (and what earlier steps registered); plan decides from those facts
    alone, with no I/O; apply makes the change."""

    name: ClassVar[str]
    args: ClassVar[Dict[str, Arg]] = {}

    def gather(self, run: HostRun, args: Args) -> F:
        """Read what ``plan`` needs from the host and from earlier steps' outputs."""
        raise NotImplementedError

    def plan(self, facts: F, args: Args, ctx: Context) -> "Outcome[P]":
        """Unchanged, Skipped or a Plan, from the facts alone; raise StepFailed to refuse."""
        raise NotImplementedError

    def apply(self, run: HostRun, args: Args, plan: Plan[P]) -> str:
        """Make the change, registering what it did; return what was done, in words."""
        raise NotImplementedError

    def rollback_args(self, args: Args) -> Optional[Args]:
        """The arguments this step runs with when a failed release is rolled back, after its files are
        put back; None (the default): it does not run then."""
        return None

    def execute(self, run: HostRun, args: Args) -> StepResult:
        started = time.monotonic()
        diff = ""
        try:
            outcome = self.plan(self.gather(run, args), args, run.context)
            run.register(*outcome.register)
            if isinstance(outcome, Unchanged):
                status, message = OK, outcome.message
            elif isinstance(outcome, Skipped):
                status, message = SKIPPED, outcome.message
            else:
                diff = outcome.diff if run.diff else ""
                message = "would " + outcome.summary if run.check else self.apply(run, args, outcome)
                status = CHANGED
        except StepFailed as exc:
            run.register(*exc.register)
            status, message = FAILED, str(exc)
        except HostCommandError as exc:
            status, message = FAILED, str(exc)
        return StepResult(self.name, status, message, time.monotonic() - started, diff)


@dataclass(frozen=True)
class BoundStep:
    """A step with its arguments rendered for one host, or the reason it is skipped there."""

    step: Step
    args: Optional[Dict[str, Any]]
    skip_reason: Optional[str] = None
