"""Run a playbook's steps on hosts and collect typed results."""

import contextlib
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

from .errors import EXIT_FAILED, EXIT_LOCKED, EXIT_OK, CascadeError, LockHeld
from .inventory import Host
from .playbook import BoundStep, Playbook, bind
from .steps import CHANGED, FAILED, OK, SKIPPED, HostRun, StepResult
from .transport import connect

StepCallback = Callable[[str, StepResult], None]


@dataclass
class HostResult:
    host: str
    steps: List[StepResult] = field(default_factory=list)
    duration_s: float = 0.0
    locked: bool = False  # another run held the host's lock: nothing was done
    rolled_back: bool = False  # the release failed; the previous files run again, verified
    incident_report: Optional[str] = None

    @property
    def failed(self) -> bool:
        return any(s.status == FAILED for s in self.steps)

    @property
    def changed(self) -> bool:
        return any(s.changed for s in self.steps)

    @property
    def status(self) -> str:
        if self.rolled_back:
            return "rolled_back"
        return FAILED if self.failed else "locked" if self.locked else CHANGED if self.changed else OK

    def recap(self) -> Dict[str, object]:
        counts = {status: sum(1 for s in self.steps if s.status == status) for status in (OK, CHANGED, FAILED, SKIPPED)}
        return dict(counts, status=self.status, duration_s=round(self.duration_s, 3))

    def to_json(self) -> dict:
        doc = {"steps": [s.to_json() for s in self.steps], "recap": self.recap()}
        if self.incident_report:
            doc["incident_report"] = self.incident_report
        return doc


@dataclass
class RunResult:
    hosts: Dict[str, HostResult]

    @property
    def exit_code(self) -> int:
        if any(h.failed for h in self.hosts.values()):
            return EXIT_FAILED
        return EXIT_LOCKED if any(h.locked for h in self.hosts.values()) else EXIT_OK

    def to_json(self) -> dict:
        return {"hosts": {name: h.to_json() for name, h in self.hosts.items()}}


def lock_path(host_vars) -> str:
    return os.path.join(host_vars["state_dir"], "run.lock")


ROLLBACK_STEPS = ("terminate", "start", "verify")


def run_host(host: Host, bound: List[BoundStep], check: bool = False, diff: bool = False,
             on_step: Optional[StepCallback] = None, transport=None, rollback: bool = True) -> HostResult:
    """Run bound steps in order on one host; the first failure ends that host's run.

    A run that can change the host holds the host's lock throughout; when another run holds it,
    nothing is done and the result says ``locked``. A caller that already holds the lock passes
    its ``transport``, and the lock is not taken again. When a step fails after files were
    replaced, the previous files are put back and the backend restarted and verified on them
    (unless ``rollback`` is off). A run that changed or failed something leaves an incident report.
    """
    started, started_at = time.monotonic(), time.time()
    result = HostResult(host.name)
    own_transport = transport is None

    def report(step_result):
        result.steps.append(step_result)
        if on_step:
            on_step(host.name, step_result)

    try:
        if own_transport:
            transport = connect(host.vars)
        guard = transport.lock(lock_path(host.vars)) if own_transport and not check else contextlib.nullcontext()
        with guard:
            run = HostRun(host.name, host.vars, transport, check=check, diff=diff)
            _run_steps(run, bound, report)
            if result.failed and run.installed and rollback and not check:
                result.rolled_back = _roll_back(run, bound, report)
            if not check and (result.failed or result.changed):
                from . import report as incident
                result.duration_s = time.monotonic() - started
                document = incident.build(run, [s.to_json() for s in result.steps], result.status, started_at)
                result.incident_report = incident.write(run, document)
    except LockHeld as exc:
        result.locked = True
        report(StepResult("lock", SKIPPED, str(exc)))
    except CascadeError as exc:
        report(StepResult("connect", FAILED, str(exc)))
    finally:
        if own_transport and transport is not None:
            transport.close()
    result.duration_s = time.monotonic() - started
    return result


def _run_steps(run: HostRun, bound: List[BoundStep], report, prefix: str = "") -> bool:
    """Execute steps in order until one fails; False when one did."""
    for item in bound:
        if item.skip_reason:
            step_result = StepResult(item.step.name, SKIPPED, item.skip_reason)
        else:
            step_result = item.step.execute(run, item.args)
        step_result.name = prefix + step_result.name
        report(step_result)
        if step_result.status == FAILED:
            return False
    return True


def _roll_back(run: HostRun, bound: List[BoundStep], report) -> bool:
    """Put the replaced files back (newest first), then terminate, start and verify on them."""
    started = time.monotonic()
    undone = []
    try:
        for dest, backup in reversed(run.installed):
            if backup:
                run.transport.agent("restore_file", backup=backup, dest=dest)
                undone.append("restored %s from %s" % (dest, backup))
            else:
                run.transport.agent("remove_file", path=dest)
                undone.append("removed %s (new in the failed release)" % dest)
    except CascadeError as exc:
        report(StepResult("rollback", FAILED, "; ".join(undone + [str(exc)]), time.monotonic() - started))
        run.rollback = {"ok": False, "files": undone, "error": str(exc)}
        return False
    report(StepResult("rollback", CHANGED, "; ".join(undone), time.monotonic() - started))
    again = HostRun(run.host, run.vars, run.transport, changed_files=[dest for dest, _ in run.installed])
    steps = [BoundStep(b.step, dict(b.args, always=True) if b.step.name == "verify" else b.args)
             for b in bound if b.step.name in ROLLBACK_STEPS and not b.skip_reason]
    ok = _run_steps(again, steps, report, prefix="rollback:")
    run.rollback = {"ok": ok, "files": undone, "verification": [c.__dict__ for c in again.checks]}
    return ok


def run_playbook(hosts: List[Host], playbook: Playbook, check: bool = False, diff: bool = False,
                 on_step: Optional[StepCallback] = None) -> RunResult:
    """Bind the playbook to every host first (so a bad value stops the run before any change),
    then run the hosts one after another."""
    bound = {h.name: [bind(call, h.vars) for call in playbook.steps] for h in hosts}
    return RunResult({h.name: run_host(h, bound[h.name], check, diff, on_step, rollback=playbook.rollback)
                      for h in hosts})
