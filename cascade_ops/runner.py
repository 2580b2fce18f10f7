"""Run a playbook's steps on hosts: in parallel (``forks``), in rolling batches (``serial``), each host
under its own deadline, and collect typed results.

Fabric's ThreadingGroup joins its threads without a timeout, so one hung host would hang the run;
here every host runs in its own daemon thread and the scheduler never waits past a host's deadline.
"""

import contextlib
import math
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Union

from .errors import (EXIT_FAILED, EXIT_LOCKED, EXIT_OK, EXIT_UNREACHABLE, CascadeError, ConfigError,
                     HostUnreachable, LockHeld)
from .hostvars import Host
from .steps import CHANGED, FAILED, OK, SKIPPED, BoundStep, HostRun, StepResult
from .transport import connect

StepCallback = Callable[[str, StepResult], None]
ROLLBACK_STEPS = ("terminate", "start", "verify")


@dataclass
class RunOptions:
    check: bool = False
    diff: bool = False
    rollback: bool = True
    accept_new_host_keys: bool = False
    forks: int = 10
    serial: Union[int, str, None] = None  # hosts per batch: a count or "N%"; None: all at once
    max_fail_percentage: Optional[float] = None  # of a batch; more failures stop the rollout


@dataclass
class HostResult:
    host: str
    steps: List[StepResult] = field(default_factory=list)
    duration_s: float = 0.0
    unreachable: bool = False  # could not connect (refused, timed out, authentication, host key)
    locked: bool = False  # another run held the host's lock: nothing was done
    not_run: bool = False  # the rollout stopped before this host's batch
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
        for flag, name in ((self.rolled_back, "rolled_back"), (self.unreachable, "unreachable"),
                           (self.failed, FAILED), (self.locked, "locked"), (self.not_run, "not_run"),
                           (self.changed, CHANGED)):
            if flag:
                return name
        return OK

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
        results = self.hosts.values()
        for bad, code in ((lambda h: h.failed and not h.unreachable, EXIT_FAILED),
                          (lambda h: h.unreachable, EXIT_UNREACHABLE), (lambda h: h.locked, EXIT_LOCKED)):
            if any(bad(h) for h in results):
                return code
        return EXIT_OK

    def to_json(self) -> dict:
        return {"hosts": {name: h.to_json() for name, h in self.hosts.items()}}


def lock_path(host_vars) -> str:
    return os.path.join(host_vars["state_dir"], "run.lock")


def run_host(host: Host, bound: List[BoundStep], options: Optional[RunOptions] = None,
             on_step: Optional[StepCallback] = None, transport=None, result: Optional[HostResult] = None,
             on_connect: Optional[Callable] = None) -> HostResult:
    """Run bound steps in order on one host; the first failure ends that host's run.

    A run that can change the host holds the host's lock throughout; when another run holds it,
    nothing is done and the result says ``locked``. A caller that already holds the lock passes
    its ``transport``, and the lock is not taken again. When a step fails after files were
    replaced, the previous files are put back and the backend restarted and verified on them
    (unless ``options.rollback`` is off). A run that changed or failed something leaves an
    incident report on the host.
    """
    started, started_at = time.monotonic(), time.time()
    options = options or RunOptions()
    result = result or HostResult(host.name)
    own_transport = transport is None

    def report(step_result):
        result.steps.append(step_result)
        if on_step:
            on_step(host.name, step_result)

    try:
        if own_transport:
            transport = connect(host.vars, options.accept_new_host_keys)
        if on_connect:
            on_connect(transport)
        locking = own_transport and not options.check
        with transport.lock(lock_path(host.vars)) if locking else contextlib.nullcontext():
            run = HostRun(host.name, host.vars, transport, check=options.check, diff=options.diff)
            _run_steps(run, bound, report)
            if result.failed and run.installed and options.rollback and not options.check:
                result.rolled_back = _roll_back(run, bound, report)
            if not options.check and (result.failed or result.changed):
                from . import report as incident
                result.duration_s = time.monotonic() - started
                document = incident.build(run, [s.to_json() for s in result.steps], result.status, started_at)
                result.incident_report = incident.write(run, document)
    except HostUnreachable as exc:
        result.unreachable = True
        report(StepResult("connect", FAILED, str(exc)))
    except LockHeld as exc:
        result.locked = True
        report(StepResult("lock", SKIPPED, str(exc)))
    except CascadeError as exc:
        report(StepResult("connect", FAILED, str(exc)))
    except Exception as exc:  # one host's surprise must not take the other hosts' results with it
        report(StepResult("error", FAILED, "unexpected %s: %s" % (type(exc).__name__, exc)))
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


def batch_size(serial, total: int, field: str = "serial") -> int:
    """Hosts per rolling batch from ``serial``: a count, or a percentage of all hosts."""
    if serial is None:
        return max(1, total)
    text = str(serial).strip()
    try:
        if text.endswith("%"):
            percent = float(text[:-1])
            if not 0 < percent <= 100:
                raise ValueError
            return max(1, math.ceil(total * percent / 100))
        count = int(text)
        if count < 1:
            raise ValueError
        return count
    except ValueError:
        raise ConfigError("expected a count of hosts (1, 2, ...) or a percentage (25%%), got %r" % serial,
                          field=field) from None


def _run_batch(hosts: List[Host], bound, options: RunOptions, on_step) -> Dict[str, HostResult]:
    """Run hosts ``options.forks`` at a time; a host past its ``host_timeout`` is cut off."""
    finished: "queue.Queue[str]" = queue.Queue()
    results: Dict[str, HostResult] = {}
    pending = list(hosts)
    running: Dict[str, tuple] = {}  # name -> (deadline, live result, holder of its transport)

    def work(host, live, holder):
        try:
            run_host(host, bound[host.name], options, on_step, result=live,
                     on_connect=lambda t: holder.append(t))
        finally:
            finished.put(host.name)

    while pending or running:
        while pending and len(running) < max(1, options.forks):
            host = pending.pop(0)
            live, holder = HostResult(host.name), []
            running[host.name] = (time.monotonic() + host.vars["host_timeout"], live, holder, host)
            threading.Thread(target=work, args=(host, live, holder), daemon=True, name="host-" + host.name).start()
        nearest = min(entry[0] for entry in running.values())
        try:
            name = finished.get(timeout=max(0.0, nearest - time.monotonic()))
            if name in running:
                results[name] = running.pop(name)[1]
        except queue.Empty:
            pass
        now = time.monotonic()
        for name, (deadline, live, holder, host) in list(running.items()):
            if now >= deadline:
                del running[name]
                results[name] = _cut_off(host, live, holder, on_step)
    return results


def _cut_off(host: Host, live: HostResult, holder: list, on_step) -> HostResult:
    """A host that overran its deadline: report it and drop its connection (its thread is abandoned)."""
    connected = bool(holder)
    cut = HostResult(host.name, list(live.steps), host.vars["host_timeout"], unreachable=not connected)
    step = StepResult("deadline", FAILED, "%s: cut off after host_timeout %.0fs (%s)" % (
        host.name, host.vars["host_timeout"], "mid-run" if connected else "never connected"))
    cut.steps.append(step)
    if on_step:
        on_step(host.name, step)
    for transport in holder:
        threading.Thread(target=transport.close, daemon=True).start()
    return cut


def run_hosts(hosts: List[Host], bound: Dict[str, List[BoundStep]], options: Optional[RunOptions] = None,
              on_step: Optional[StepCallback] = None) -> RunResult:
    """Run each host's bound steps, batch after batch. With ``serial``, a batch whose failed share
    exceeds ``max_fail_percentage`` (default 0) stops the rollout: later hosts are ``not_run``."""
    options = options or RunOptions()
    size = batch_size(options.serial, len(hosts))
    batches = [hosts[i:i + size] for i in range(0, len(hosts), size)]
    lock = threading.Lock()

    def report(host_name, step_result):  # one whole line at a time, whichever thread reports
        if on_step:
            with lock:
                on_step(host_name, step_result)

    results: Dict[str, HostResult] = {}
    for index, batch in enumerate(batches):
        results.update(_run_batch(batch, bound, options, report))
        bad = [h.name for h in batch if results[h.name].failed]
        if options.serial is not None and bad and 100.0 * len(bad) / len(batch) > (options.max_fail_percentage or 0):
            why = "rollout stopped after batch %d of %d (%s failed)" % (index + 1, len(batches), ", ".join(bad))
            for later in batches[index + 1:]:
                for host in later:
                    results[host.name] = HostResult(host.name, [StepResult("rollout", SKIPPED, "not touched: " + why)],
                                                    not_run=True)
            break
    return RunResult({h.name: results[h.name] for h in hosts})
