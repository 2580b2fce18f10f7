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

    @property
    def failed(self) -> bool:
        return any(s.status == FAILED for s in self.steps)

    @property
    def changed(self) -> bool:
        return any(s.changed for s in self.steps)

    @property
    def status(self) -> str:
        return FAILED if self.failed else "locked" if self.locked else CHANGED if self.changed else OK

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
        if any(h.failed for h in self.hosts.values()):
            return EXIT_FAILED
        return EXIT_LOCKED if any(h.locked for h in self.hosts.values()) else EXIT_OK

    def to_json(self) -> dict:
        return {"hosts": {name: h.to_json() for name, h in self.hosts.items()}}


def lock_path(host_vars) -> str:
    return os.path.join(host_vars["state_dir"], "run.lock")


def run_host(host: Host, bound: List[BoundStep], check: bool = False, diff: bool = False,
             on_step: Optional[StepCallback] = None, transport=None) -> HostResult:
    """Run bound steps in order on one host; the first failure ends that host's run.

    A run that can change the host holds the host's lock throughout; when another run holds it,
    nothing is done and the result says ``locked``. A caller that already holds the lock passes
    its ``transport``, and the lock is not taken again.
    """
    started = time.monotonic()
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
            for item in bound:
                if item.skip_reason:
                    report(StepResult(item.step.name, SKIPPED, item.skip_reason))
                else:
                    report(item.step.execute(run, item.args))
                if result.steps[-1].status == FAILED:
                    break
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


def run_playbook(hosts: List[Host], playbook: Playbook, check: bool = False, diff: bool = False,
                 on_step: Optional[StepCallback] = None) -> RunResult:
    """Bind the playbook to every host first (so a bad value stops the run before any change),
    then run the hosts one after another."""
    bound = {h.name: [bind(call, h.vars) for call in playbook.steps] for h in hosts}
    return RunResult({h.name: run_host(h, bound[h.name], check, diff, on_step) for h in hosts})
