"""Run a playbook's steps on hosts and collect typed results."""

import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

from .errors import EXIT_FAILED, EXIT_OK, CascadeError
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

    @property
    def failed(self) -> bool:
        return any(s.status == FAILED for s in self.steps)

    @property
    def changed(self) -> bool:
        return any(s.changed for s in self.steps)

    @property
    def status(self) -> str:
        return FAILED if self.failed else CHANGED if self.changed else OK

    def recap(self) -> Dict[str, object]:
        counts = {status: sum(1 for s in self.steps if s.status == status) for status in (OK, CHANGED, FAILED, SKIPPED)}
        return dict(counts, status=self.status, duration_s=round(self.duration_s, 3))

    def to_json(self) -> dict:
        return {"steps": [s.to_json() for s in self.steps], "recap": self.recap()}


@dataclass
class RunResult:
    hosts: Dict[str, HostResult]

    @property
    def exit_code(self) -> int:
        return EXIT_FAILED if any(h.failed for h in self.hosts.values()) else EXIT_OK

    def to_json(self) -> dict:
        return {"hosts": {name: h.to_json() for name, h in self.hosts.items()}}


def run_host(host: Host, bound: List[BoundStep], check: bool = False, diff: bool = False,
             on_step: Optional[StepCallback] = None) -> HostResult:
    """Run bound steps in order on one host; the first failure ends that host's run."""
    started = time.monotonic()
    result = HostResult(host.name)
    transport = None
    try:
        transport = connect(host.vars)
        run = HostRun(host.name, host.vars, transport, check=check, diff=diff)
        for item in bound:
            if item.skip_reason:
                step_result = StepResult(item.step.name, SKIPPED, item.skip_reason)
            else:
                step_result = item.step.execute(run, item.args)
            result.steps.append(step_result)
            if on_step:
                on_step(host.name, step_result)
            if step_result.status == FAILED:
                break
    except CascadeError as exc:
        failed = StepResult("connect", FAILED, str(exc))
        result.steps.append(failed)
        if on_step:
            on_step(host.name, failed)
    finally:
        if transport is not None:
            transport.close()
    result.duration_s = time.monotonic() - started
    return result


def run_playbook(hosts: List[Host], playbook: Playbook, check: bool = False, diff: bool = False,
                 on_step: Optional[StepCallback] = None) -> RunResult:
    """Bind the playbook to every host first (so a bad value stops the run before any change),
    then run the hosts one after another."""
    bound = {h.name: [bind(call, h.vars) for call in playbook.steps] for h in hosts}
    return RunResult({h.name: run_host(h, bound[h.name], check, diff, on_step) for h in hosts})
