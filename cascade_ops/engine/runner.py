"""Run a playbook's bound steps on hosts, in rolling batches (``serial``), through the scheduler,
and collect typed results: rollback when a release fails, an incident report when a run changed
or failed something."""

import contextlib
import math
import signal
import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

from cascade_ops.config.hostvars import Host
from cascade_ops.engine import interrupts
from cascade_ops.engine.events import RunListener, StepCallback
from cascade_ops.engine.interrupts import Interrupted
from cascade_ops.engine.rollback import roll_back, run_steps, state_now
from cascade_ops.engine.scheduler import DEFAULT_FORKS, HostOutcome, run_each
from cascade_ops.errors import CascadeError, HostCutOff, HostUnreachable, LockHeld
from cascade_ops.model.paths import StatePaths
from cascade_ops.model.results import HostResult, HostStatus, RunResult, StepResult
from cascade_ops.steps import FAILED, SKIPPED, BoundStep, HostRun, Preflight
from cascade_ops.steps.outputs import Installed
from cascade_ops.transport import ConnectOptions, Transport
from cascade_ops.transport.base import DEFAULT_CONNECT


@dataclass
class RunOptions:
    check: bool = False
    diff: bool = False
    rollback: bool = True
    connect: ConnectOptions = DEFAULT_CONNECT
    forks: int = DEFAULT_FORKS
    serial: Optional[str] = None  # hosts per batch: a count or "N%" (see parse_serial); None: all at once
    max_fail_percentage: Optional[float] = None  # of a batch; more failures stop the rollout
    on_begin: Optional[Callable[[str, str], None]] = None  # (host, what): a step or the connection starts
    listeners: Sequence[RunListener] = ()  # told of each step and host (reporting's, attached by the API)


def run_host(
    host: Host,
    transport: Transport,
    bound: List[BoundStep],
    options: Optional[RunOptions] = None,
    on_step: Optional[StepCallback] = None,
    result: Optional[HostResult] = None,
    lock: bool = True,
) -> HostResult:
    """Run bound steps in order on one host; the first failure ends that host's run.

    A run that can change the host holds the host's lock throughout (``lock``; a caller that
    holds it already passes False); when another run holds it, nothing is done and the result
    says ``locked``. When a step fails after files were replaced, the previous files are put back
    and the backend restarted and verified on them (unless ``options.rollback`` is off). The
    options' listeners hear of every step and of the host's end.
    """
    started = time.monotonic()
    options = options or RunOptions()
    result = result or HostResult(host.name)
    result.started_at = time.time()
    listeners = options.listeners
    phase = "preflight"
    result.notes.extend(transport.notes)
    run = HostRun(host.name, host.vars, transport, check=options.check, diff=options.diff)

    def report(step_result: StepResult) -> None:
        for listener in listeners:
            listener.step_done(run, step_result)
        result.steps.append(step_result)
        if on_step:
            on_step(host.name, step_result)

    try:
        # Read-only, and before the lock: a lock file must not create a mistyped app_dir.
        if not run_steps(run, [BoundStep(Preflight(), {})], report):
            result.duration_s = time.monotonic() - started
            for listener in listeners:
                listener.host_done(run, result)
            return result
        phase = "lock"
        with transport.lock(StatePaths.of(host.vars).lock) if lock and not options.check else contextlib.nullcontext():
            phase = "steps"
            try:
                run_steps(
                    run,
                    bound,
                    report,
                    begin=lambda name: options.on_begin(host.name, name) if options.on_begin else None,
                )
            except Interrupted as exc:  # a safe point: between two steps; no rollback, as asked
                result.end(HostStatus.INTERRUPTED, exc.signum)
                report(StepResult("interrupted", FAILED, "%s; %s" % (exc, state_now(run))))
            if (
                result.failed
                and run.every(Installed)
                and options.rollback
                and not options.check
                and result.status is not HostStatus.INTERRUPTED
                and roll_back(run, bound, report)
            ):
                result.end(HostStatus.ROLLED_BACK)
            phase = "listeners"
            result.duration_s = time.monotonic() - started
            for listener in listeners:
                listener.steps_done(run, result)
            phase = "unlock"
    except LockHeld as exc:
        result.end(HostStatus.LOCKED)
        report(StepResult("lock", SKIPPED, str(exc)))
    except Interrupted as exc:  # before the lock, or during a rollback: nothing more is done
        result.end(HostStatus.INTERRUPTED, exc.signum)
        report(StepResult("interrupted", FAILED, str(exc)))
    except CascadeError as exc:
        report(StepResult(phase, FAILED, str(exc)))
    except Exception as exc:  # a bug in a step: reported on this host, the others go on
        report(StepResult(phase, FAILED, "unexpected %s: %s" % (type(exc).__name__, exc)))
    result.duration_s = time.monotonic() - started
    result.notes.extend(n for n in transport.notes if n not in result.notes)  # learnt during the run
    for listener in listeners:
        listener.host_done(run, result)
    return result


def batch_size(serial: Optional[str], total: int) -> int:
    """Hosts per rolling batch from ``serial`` (checked by ``parse_serial``): a count, or a percentage
    of all hosts; all of them at once when None."""
    if serial is None:
        return max(1, total)
    if serial.endswith("%"):
        return max(1, math.ceil(total * float(serial[:-1]) / 100))
    return int(serial)


def _unfinished(live: HostResult, outcome: HostOutcome) -> HostResult:
    """A host whose run never started (unreachable, interrupted) or was cut off at its deadline."""
    error = outcome.error
    if isinstance(error, Interrupted):
        return HostResult(
            live.host,
            [StepResult("interrupted", SKIPPED, str(error))],
            ending=HostStatus.INTERRUPTED,
            signal=error.signum,
        )
    if isinstance(error, HostCutOff):
        spent = outcome.duration_s - sum(s.duration_s for s in live.steps)
        return HostResult(
            live.host, list(live.steps) + [StepResult("deadline", FAILED, str(error), spent)], outcome.duration_s
        )
    return HostResult(
        live.host,
        [StepResult("connect", FAILED, str(error), outcome.duration_s)],
        outcome.duration_s,
        ending=HostStatus.UNREACHABLE if isinstance(error, HostUnreachable) else None,
    )


def _connecting(on_begin: Optional[Callable[[str, str], None]]) -> Optional[Callable[[Host], None]]:
    if on_begin is None:
        return None
    return lambda host: on_begin(host.name, "connect")


def run_hosts(
    hosts: List[Host],
    bound: Dict[str, List[BoundStep]],
    options: Optional[RunOptions] = None,
    on_step: Optional[StepCallback] = None,
) -> RunResult:
    """Run each host's bound steps, batch after batch. With ``serial``, a batch whose failed share
    exceeds ``max_fail_percentage`` (default 0) stops the rollout: later hosts are ``not_run``."""
    run_options = options or RunOptions()
    size = batch_size(run_options.serial, len(hosts))
    batches = [hosts[i : i + size] for i in range(0, len(hosts), size)]
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

        run_each(
            batch,
            work,
            run_options.forks,
            run_options.connect,
            on_done=done,
            on_start=_connecting(run_options.on_begin),
        )
        signum = interrupts.requested()
        if signum is not None and index + 1 < len(batches):
            for host in (h for later in batches[index + 1 :] for h in later):
                why = "not touched: interrupted by %s" % signal.Signals(signum).name
                results[host.name] = HostResult(
                    host.name, [StepResult("interrupted", SKIPPED, why)], ending=HostStatus.INTERRUPTED, signal=signum
                )
            break
        bad = [h.name for h in batch if results[h.name].failed]
        if (
            run_options.serial is not None
            and bad
            and 100.0 * len(bad) / len(batch) > (run_options.max_fail_percentage or 0)
        ):
            why = "rollout stopped after batch %d of %d (%s failed)" % (index + 1, len(batches), ", ".join(bad))
            for later in batches[index + 1 :]:
                for host in later:
                    results[host.name] = HostResult(
                        host.name, [StepResult("rollout", SKIPPED, "not touched: " + why)], ending=HostStatus.NOT_RUN
                    )
            break
    return RunResult({h.name: results[h.name] for h in hosts})
