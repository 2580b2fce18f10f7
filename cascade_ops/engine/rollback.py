"""Running bound steps in order, and undoing a failed release: its files put back, then the steps
that declare a part in a rollback (``Step.rollback_args``) run again on them."""

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from cascade_ops import agent
from cascade_ops.engine import interrupts
from cascade_ops.errors import CascadeError
from cascade_ops.model.facts import read_diagnosis
from cascade_ops.model.results import StepResult
from cascade_ops.steps import CHANGED, FAILED, SKIPPED, BoundStep, HostRun
from cascade_ops.steps.outputs import Check, FileChanged, Installed, Restarted, Signalled, Started, Verified

Report = Callable[[StepResult], None]


@dataclass(frozen=True)
class RolledBack:
    """The engine's output when it rolled a failed release back: the files it put back, and the
    checks the previous files passed (or the error that stopped it)."""

    ok: bool
    files: Tuple[str, ...]
    error: Optional[str] = None
    verification: Tuple[Check, ...] = ()

    def to_json(self) -> Dict[str, Any]:
        doc: Dict[str, Any] = {"ok": self.ok, "files": list(self.files)}
        if self.error is not None:
            doc["error"] = self.error
        else:
            doc["verification"] = [dataclasses.asdict(c) for c in self.verification]
        return doc


def run_steps(
    run: HostRun,
    bound: List[BoundStep],
    report: Report,
    prefix: str = "",
    begin: Optional[Callable[[str], None]] = None,
) -> bool:
    """Execute steps in order until one fails; False when one did. Interrupted between two steps."""
    done = "before any step"
    for item in bound:
        interrupts.check(done)
        done = "after step %s%s" % (prefix, item.step.name)
        if begin:
            begin(prefix + item.step.name)
        if item.skip_reason or item.args is None:
            step_result = StepResult(item.step.name, SKIPPED, item.skip_reason or "")
        else:
            step_result = item.step.execute(run, item.args)
        step_result.name = prefix + step_result.name
        report(step_result)
        if step_result.status == FAILED:
            return False
    return True


def roll_back(run: HostRun, bound: List[BoundStep], report: Report) -> bool:
    """Put the replaced files back (newest first), then run the steps that take part in a rollback."""
    started = time.monotonic()
    undone = []
    installed = run.every(Installed)
    try:
        for dest, backup in ((i.path, i.backup) for i in reversed(installed)):
            if backup:
                run.transport.call(agent.files.restore_file, backup=backup, dest=dest)
                undone.append("restored %s from %s" % (dest, backup))
            else:
                run.transport.call(agent.files.remove_file, path=dest)
                undone.append("removed %s (new in the failed release)" % dest)
    except CascadeError as exc:
        report(StepResult("rollback", FAILED, "; ".join(undone + [str(exc)]), time.monotonic() - started))
        run.register(RolledBack(False, tuple(undone), error=str(exc)))
        return False
    if run.last(Restarted) is None:  # the backend still runs the code it ran before: only the files were this run's
        report(
            StepResult(
                "rollback",
                CHANGED,
                "; ".join(undone + ["the backend was not restarted by this run: left running"]),
                time.monotonic() - started,
            )
        )
        run.register(RolledBack(True, tuple(undone)))
        return True
    report(StepResult("rollback", CHANGED, "; ".join(undone), time.monotonic() - started))
    again = HostRun(run.host, run.vars, run.transport)
    again.register(*(FileChanged(i.path) for i in installed))
    steps = [
        BoundStep(b.step, args)
        for b in bound
        if not b.skip_reason and b.args is not None and (args := b.step.rollback_args(b.args)) is not None
    ]
    ok = run_steps(again, steps, report, prefix="rollback:")
    verified = again.last(Verified)
    run.register(RolledBack(ok, tuple(undone), verification=verified.checks if verified else ()))
    return ok


def state_now(run: HostRun) -> str:
    """What an interrupted run leaves behind, in words: who holds the port, and what this run did."""
    try:
        d = read_diagnosis(run.transport, run.vars, probe=False)
    except CascadeError as exc:
        return "the port could not be read (%s)" % exc
    signalled = ["pid %d %s" % (o["pid"], o["outcome"]) for s in run.every(Signalled) for o in s.outcomes]
    started = run.last(Started)
    done = ("%s; " % ", ".join(signalled)) if signalled else ""
    began = (
        "pid %d was started by this run and not verified" % started.pid
        if started is not None and started.pid
        else "nothing was started"
    )
    holders = "; ".join("pid %d (%s)" % (h.pid, h.process.state) for h in d.in_the_way)
    where = "port %d is held by %s" % (d.port, holders) if holders else "nothing serves port %d" % d.port
    return "%s%s; %s" % (done, where, began)
