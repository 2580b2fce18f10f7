"""Run a playbook's bound steps on hosts, in rolling batches (``serial``), through the scheduler,
and collect typed results: rollback when a release fails, an incident report when a run changed
or failed something."""

import contextlib
import math
import os
import signal
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, List, Optional, Union

from . import history, interrupts
from .agent.files import REDACTED
from .errors import (
    EXIT_FAILED,
    EXIT_LOCKED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    CascadeError,
    ConfigError,
    HostCutOff,
    HostUnreachable,
    LockHeld,
    worst_exit_code,
)
from .facts import read_diagnosis
from .hostvars import Host
from .interrupts import Interrupted
from .scheduler import DEFAULT_FORKS, HostOutcome, run_each
from .steps import CHANGED, FAILED, OK, SKIPPED, BoundStep, HostRun, Preflight, StepResult
from .transport import Transport

StepCallback = Callable[[str, StepResult], None]
ROLLBACK_STEPS = ("terminate", "start", "verify")


@dataclass
class RunOptions:
    check: bool = False
    diff: bool = False
    rollback: bool = True
    accept_new_host_keys: bool = False
    become_password: Optional[str] = field(default=None, repr=False)  # for sudo's prompt; never printed
    ssh_password: Optional[str] = field(default=None, repr=False)  # SSH's password login (-k); never printed
    forks: int = DEFAULT_FORKS
    serial: Union[int, str, None] = None  # hosts per batch: a count or "N%"; None: all at once
    max_fail_percentage: Optional[float] = None  # of a batch; more failures stop the rollout
    on_begin: Optional[Callable[[str, str], None]] = None  # (host, what): a step or the connection starts
    run_id: str = ""  # shared by every host of one run, in the run history (made up when empty)
    name: str = ""  # the playbook's name, for the run history


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
    interrupted: Optional[int] = None  # the signal that stopped this host's run at a safe point
    warnings: List[str] = field(default_factory=list)  # worth knowing, not a failure of the run
    notes: List[str] = field(default_factory=list)  # what the connection did (a host key recorded)

    @property
    def failed(self) -> bool:
        return any(s.status == FAILED for s in self.steps)

    @property
    def changed(self) -> bool:
        return any(s.changed for s in self.steps)

    @property
    def first_failure(self) -> Optional[StepResult]:
        return next((s for s in self.steps if s.status == FAILED), None)

    @property
    def status(self) -> str:
        for flag, name in ((self.interrupted, "interrupted"), (self.rolled_back, "rolled_back"),
                           (self.unreachable, "unreachable"),
                           (self.failed, FAILED), (self.locked, "locked"), (self.not_run, "not_run"),
                           (self.changed, CHANGED)):
            if flag:
                return name
        return OK

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 128 + self.interrupted
        if self.unreachable:
            return EXIT_UNREACHABLE
        if self.failed:
            return EXIT_FAILED
        return EXIT_LOCKED if self.locked else EXIT_OK

    def recap(self) -> Dict[str, Any]:
        """Counts of steps by status, as Ansible's recap counts tasks: ``ok`` includes the changed ones;
        an unreachable host counts as unreachable, not failed."""
        counts = {status: sum(1 for s in self.steps if s.status == status) for status in (OK, CHANGED, FAILED, SKIPPED)}
        counts[OK] += counts[CHANGED]
        if self.unreachable:
            counts[FAILED] = 0
        return dict(counts, unreachable=int(self.unreachable), status=self.status, duration_s=round(self.duration_s, 3))

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


def lock_path(host_vars: Dict[str, Any]) -> str:
    return os.path.join(host_vars["state_dir"], "run.lock")


def run_host(host: Host, transport: Transport, bound: List[BoundStep], options: Optional[RunOptions] = None,
             on_step: Optional[StepCallback] = None, result: Optional[HostResult] = None,
             lock: bool = True) -> HostResult:
    """Run bound steps in order on one host; the first failure ends that host's run.

    A run that can change the host holds the host's lock throughout (``lock``; a caller that
    holds it already passes False); when another run holds it, nothing is done and the result
    says ``locked``. When a step fails after files were replaced, the previous files are put back
    and the backend restarted and verified on them (unless ``options.rollback`` is off). A run
    that changed or failed something leaves an incident report on the host.
    """
    started, started_at = time.monotonic(), time.time()
    options = options or RunOptions()
    result = result or HostResult(host.name)
    phase = "preflight"

    scrub = _Scrubber(transport, host.vars)
    result.notes.extend(transport.notes)

    def report(step_result: StepResult) -> None:
        if step_result.status == FAILED:  # a failure may quote a backend's log or answer
            step_result.message = scrub(step_result.message)
        result.steps.append(step_result)
        if on_step:
            on_step(host.name, step_result)

    try:
        run = HostRun(host.name, host.vars, transport, check=options.check, diff=options.diff)
        # Read-only, and before the lock: a lock file must not create a mistyped app_dir.
        if not _run_steps(run, [BoundStep(Preflight(), {})], report):
            result.duration_s = time.monotonic() - started
            return result
        phase = "lock"
        with transport.lock(lock_path(host.vars)) if lock and not options.check else contextlib.nullcontext():
            phase = "steps"
            try:
                _run_steps(run, bound, report, begin=lambda name: options.on_begin(host.name, name)
                           if options.on_begin else None)
            except Interrupted as exc:  # a safe point: between two steps; no rollback, as asked
                result.interrupted = exc.signum
                report(StepResult("interrupted", FAILED, "%s; %s" % (exc, _state_now(run))))
            if result.failed and run.installed and options.rollback and not options.check and not result.interrupted:
                result.rolled_back = _roll_back(run, bound, report)
            if not options.check and (result.failed or result.changed):
                phase = "incident_report"
                result.duration_s = time.monotonic() - started
                _write_report(run, result, started_at)
            phase = "unlock"
    except LockHeld as exc:
        result.locked = True
        report(StepResult("lock", SKIPPED, str(exc)))
    except Interrupted as exc:  # before the lock, or during a rollback: nothing more is done
        result.interrupted = exc.signum
        report(StepResult("interrupted", FAILED, str(exc)))
    except CascadeError as exc:
        report(StepResult(phase, FAILED, str(exc)))
    except Exception as exc:  # a bug in a step: reported on this host, the others go on
        report(StepResult(phase, FAILED, "unexpected %s: %s" % (type(exc).__name__, exc)))
    result.duration_s = time.monotonic() - started
    result.notes.extend(n for n in transport.notes if n not in result.notes)  # learnt during the run
    # A dry run leaves nothing on the host. An interrupted one is recorded too once a step ran (one
    # stopped before its first step touches nothing), unless its host was cut off.
    began = any(s.name not in ("preflight", "interrupted") for s in result.steps)
    if not options.check and not transport.cancelled and (began or not result.interrupted):
        history.record(transport, host.vars, result, options.run_id or new_run_id(), options.name, started_at)
    return result


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + os.urandom(3).hex()


def _state_now(run: HostRun) -> str:
    """What an interrupted run leaves behind, in words: who holds the port, and what this run did."""
    try:
        d = read_diagnosis(run.transport, run.vars, probe=False)
    except CascadeError as exc:
        return "the port could not be read (%s)" % exc
    signalled = ["pid %d %s" % (o["pid"], o["outcome"]) for o in run.terminated]
    done = ("%s; " % ", ".join(signalled)) if signalled else ""
    started = "pid %d was started by this run and not verified" % run.started_pid if run.started_pid else \
        "nothing was started"
    holders = "; ".join("pid %d (%s)" % (h.pid, h.process.state) for h in d.in_the_way)
    where = "port %d is held by %s" % (d.port, holders) if holders else "nothing serves port %d" % d.port
    return "%s%s; %s" % (done, where, started)


class _Scrubber:
    """Replaces the host's JWT secret in text meant for output; reads it once, and only when asked."""

    def __init__(self, transport: Transport, host_vars: Dict[str, Any]):
        self.transport, self.path = transport, host_vars["jwt_secret_file"]
        self.secret: Optional[str] = None
        self.read = False

    def __call__(self, text: str) -> str:
        if not self.read:
            self.read = True
            try:
                self.secret = self.transport.agent("read_secret", path=self.path) or None
            except CascadeError:
                self.secret = None  # none yet, or unreadable: nothing of it can be in the text
        return text.replace(self.secret, REDACTED) if self.secret else text


def _write_report(run: HostRun, result: HostResult, started_at: float) -> None:
    """Store the incident report; failing to is a warning, never a failed recovery."""
    from . import report as incident
    try:
        document = incident.build(run, [s.to_json() for s in result.steps], result.status, started_at)
        result.incident_report = incident.write(run, document)
    except CascadeError as exc:
        result.warnings.append("incident report not written: %s" % exc)


def _run_steps(run: HostRun, bound: List[BoundStep], report: Callable[[StepResult], None],
               prefix: str = "", begin: Optional[Callable[[str], None]] = None) -> bool:
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


def _roll_back(run: HostRun, bound: List[BoundStep], report: Callable[[StepResult], None]) -> bool:
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
    if not run.restarted:  # the backend still runs the code it ran before: only the files were this run's
        report(StepResult("rollback", CHANGED, "; ".join(undone + ["the backend was not restarted by this run: "
                                                                   "left running"]), time.monotonic() - started))
        run.rollback = {"ok": True, "files": undone, "verification": []}
        return True
    report(StepResult("rollback", CHANGED, "; ".join(undone), time.monotonic() - started))
    again = HostRun(run.host, run.vars, run.transport, changed_files=[dest for dest, _ in run.installed])
    steps = [BoundStep(b.step, dict(b.args, always=True) if b.step.name == "verify" else b.args)
             for b in bound if b.step.name in ROLLBACK_STEPS and not b.skip_reason and b.args is not None]
    ok = _run_steps(again, steps, report, prefix="rollback:")
    run.rollback = {"ok": ok, "files": undone, "verification": [c.__dict__ for c in again.checks]}
    return ok


def batch_size(serial: Union[int, str, None], total: int, field: str = "serial") -> int:
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


def _unfinished(live: HostResult, outcome: HostOutcome) -> HostResult:
    """A host whose run never started (unreachable, interrupted) or was cut off at its deadline."""
    error = outcome.error
    if isinstance(error, Interrupted):
        return HostResult(live.host, [StepResult("interrupted", SKIPPED, str(error))], interrupted=error.signum)
    if isinstance(error, HostCutOff):
        spent = outcome.duration_s - sum(s.duration_s for s in live.steps)
        return HostResult(live.host, list(live.steps) + [StepResult("deadline", FAILED, str(error), spent)],
                          outcome.duration_s)
    return HostResult(live.host, [StepResult("connect", FAILED, str(error), outcome.duration_s)],
                      outcome.duration_s, unreachable=isinstance(error, HostUnreachable))


def _connecting(on_begin: Optional[Callable[[str, str], None]]) -> Optional[Callable[[Host], None]]:
    if on_begin is None:
        return None
    return lambda host: on_begin(host.name, "connect")


def run_hosts(hosts: List[Host], bound: Dict[str, List[BoundStep]], options: Optional[RunOptions] = None,
              on_step: Optional[StepCallback] = None) -> RunResult:
    """Run each host's bound steps, batch after batch. With ``serial``, a batch whose failed share
    exceeds ``max_fail_percentage`` (default 0) stops the rollout: later hosts are ``not_run``."""
    run_options = options or RunOptions()
    if not run_options.run_id:
        run_options = replace(run_options, run_id=new_run_id())
    size = batch_size(run_options.serial, len(hosts))
    batches = [hosts[i:i + size] for i in range(0, len(hosts), size)]
    lock = threading.Lock()

    def report(host_name: str, step_result: StepResult) -> None:  # one whole line at a time
        if on_step:
            with lock:
                on_step(host_name, step_result)

    results: Dict[str, HostResult] = {}
    for index, batch in enumerate(batches):
        live = {h.name: HostResult(h.name) for h in batch}

        def work(host: Host, transport: Transport, live: Dict[str, HostResult] = live) -> HostResult:
            return run_host(host, transport, bound[host.name], run_options, report, live[host.name])

        def done(host: Host, outcome: HostOutcome, live: Dict[str, HostResult] = live) -> None:
            if outcome.error is not None:
                results[host.name] = _unfinished(live[host.name], outcome)
                report(host.name, results[host.name].steps[-1])
            elif outcome.value is not None:
                results[host.name] = outcome.value

        run_each(batch, work, run_options.forks, {"accept_new_host_keys": run_options.accept_new_host_keys,
                                                   "become_password": run_options.become_password,
                                                   "ssh_password": run_options.ssh_password}, on_done=done,
                 on_start=_connecting(run_options.on_begin))
        signum = interrupts.requested()
        if signum is not None and index + 1 < len(batches):
            for host in (h for later in batches[index + 1:] for h in later):
                why = "not touched: interrupted by %s" % signal.Signals(signum).name
                results[host.name] = HostResult(host.name, [StepResult("interrupted", SKIPPED, why)],
                                                interrupted=signum)
            break
        bad = [h.name for h in batch if results[h.name].failed]
        if (run_options.serial is not None and bad
                and 100.0 * len(bad) / len(batch) > (run_options.max_fail_percentage or 0)):
            why = "rollout stopped after batch %d of %d (%s failed)" % (index + 1, len(batches), ", ".join(bad))
            for later in batches[index + 1:]:
                for host in later:
                    results[host.name] = HostResult(host.name, [StepResult("rollout", SKIPPED, "not touched: " + why)],
                                                    not_run=True)
            break
    return RunResult({h.name: results[h.name] for h in hosts})
