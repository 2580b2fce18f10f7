"""The watchdog: one tick per host probes fast and recovers only when unhealthy.

A healthy tick reads the host and writes one log line, nothing else: no playbook, no steps, no
HTTP client, no lock. An unhealthy one (``fail_threshold`` ticks in a row) takes the host's lock,
looks again (another run may have fixed it), checks the restart budget, and runs the recovery
playbook. Budget and streak live in ``state_dir/watch-state.json`` between ticks.
"""

import dataclasses
import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from cascade_ops import agent
from cascade_ops.config.hostvars import Host, HostVars
from cascade_ops.errors import (
    EXIT_BUDGET,
    EXIT_FAILED,
    EXIT_LOCKED,
    EXIT_OK,
    CascadeError,
    HostUnreachable,
    LockHeld,
    worst_exit_code,
)
from cascade_ops.model.facts import Diagnosis, read_diagnosis
from cascade_ops.model.paths import StatePaths
from cascade_ops.model.records import Fields
from cascade_ops.model.results import HostStatus
from cascade_ops.transport import Transport

RECOVERY_PREFIX = "watch: "  # the run history's name for a watchdog's recovery
HISTORY_LOOKBACK = 500  # run history lines read to rebuild a corrupt state file
PlaybookLoader = Callable[[], Any]


@dataclass
class WatchState:
    fail_streak: int = 0
    restarts: List[float] = field(default_factory=list)  # times of recoveries, pruned to the window
    budget_alerted_at: Optional[float] = None
    recoveries_total: int = 0  # for the metrics: never pruned
    last_recovery_at: float = 0.0
    last_steps: Dict[str, float] = field(default_factory=dict)  # step -> seconds, of the last recovery

    def prune(self, now: float, window: float) -> None:
        self.restarts = [t for t in self.restarts if now - t < window]
        if not self.restarts:
            self.budget_alerted_at = None

    def to_json(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, doc: Any) -> "WatchState":
        """A missing field takes its default (an older version's file); a mistyped one is a ValueError."""
        f = Fields(doc, "watch state")
        restarts = [float(t) for t in f.items("restarts") if _number(t)]
        if len(restarts) != len(f.items("restarts")):
            raise ValueError("watch state: restarts holds something other than times")
        steps = f.get("last_steps", dict, {})
        if not all(isinstance(k, str) and _number(t) for k, t in steps.items()):
            raise ValueError("watch state: last_steps is not step -> seconds")
        return cls(
            f.get("fail_streak", int, 0),
            restarts,
            f.get("budget_alerted_at", float, None),
            f.get("recoveries_total", int, 0),
            f.get("last_recovery_at", float, 0.0),
            {k: float(t) for k, t in steps.items()},
        )


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass
class Tick:
    host: str
    healthy: bool
    verdict: str
    action: str  # none, wait, recover, budget_exhausted, locked
    outcome: str
    exit_code: int = EXIT_OK
    duration_s: float = 0.0
    recovery: Optional[dict] = None
    incident_report: Optional[str] = None
    alert_error: Optional[str] = None
    ping_error: Optional[str] = None  # the dead-man monitor could not be reached (logged, never fatal)
    note: Optional[str] = None  # worth telling: a corrupt state file, rebuilt from the run history

    def to_json(self) -> Dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    @classmethod
    def from_json(cls, doc: Any) -> "Tick":
        f = Fields(doc, "tick")
        return cls(
            f.get("host", str),
            f.get("healthy", bool),
            f.get("verdict", str),
            f.get("action", str),
            f.get("outcome", str),
            f.get("exit_code", int, EXIT_OK),
            f.get("duration_s", float, 0.0),
            f.get("recovery", dict, None),
            f.get("incident_report", str, None),
            f.get("alert_error", str, None),
            f.get("ping_error", str, None),
            f.get("note", str, None),
        )


@dataclass(frozen=True)
class WatchRecord:
    """One line of the watch log: a tick (without its recovery, which the run history holds), when
    it ended, and what the health probe saw."""

    tick: Tick
    time: float
    probe: Optional[Dict[str, Any]]

    def to_json(self) -> Dict[str, Any]:
        doc = dict(self.tick.to_json(), time=self.time, probe=self.probe)
        doc.pop("recovery", None)
        return doc

    @classmethod
    def from_json(cls, doc: Any) -> "WatchRecord":
        f = Fields(doc, "watch record")
        return cls(Tick.from_json(doc), f.get("time", float), f.get("probe", dict, None))


def failed_tick(host: str, error: CascadeError) -> Tick:
    """The tick of a host that could not be reached or read: the other hosts still tick."""
    action = "unreachable" if isinstance(error, HostUnreachable) else "error"
    return Tick(host, False, "not probed", action, str(error), error.exit_code)


def _load_state(transport: Transport, path: str, v: HostVars, now: float) -> Tuple[WatchState, Optional[str]]:
    """The state between ticks, and a note when the file was corrupt. A torn or foreign file must
    not stop the watchdog, nor silently give back a spent restart budget: the recoveries of the
    window are counted again from the run history."""
    text = transport.call(agent.files.read_text, path=path)
    if not text:
        return WatchState(), None
    try:
        return WatchState.from_json(json.loads(text)), None
    except ValueError:
        pass
    from cascade_ops.reporting import history

    restarts = [
        r.started_at
        for r in history.read(transport, v, HISTORY_LOOKBACK)
        if r.playbook.startswith(RECOVERY_PREFIX) and now - r.started_at < v.window
    ]
    note = "%s was not valid watch state: counting again from the run history (%d recoveries in the last %.0fs)" % (
        path,
        len(restarts),
        v.window,
    )
    return WatchState(restarts=restarts, recoveries_total=len(restarts)), note


def _save_state(transport: Transport, path: str, state: WatchState) -> None:
    transport.call(agent.files.write_file, path=path, content=json.dumps(state.to_json()))


def tick_host(
    host: Host,
    transport: Transport,
    playbook_loader: PlaybookLoader,
    reset: bool = False,
    now: Callable[[], float] = time.time,
) -> Tick:
    """One watchdog tick on one host."""
    started = time.monotonic()
    v = host.vars
    paths = StatePaths.of(v)
    state_path, log_path = paths.watch_state, paths.watch_log
    if reset:
        transport.call(agent.files.remove_file, path=state_path)
    state, note = _load_state(transport, state_path, v, now())
    diagnosis = read_diagnosis(transport, v)
    state.prune(now(), v.window)
    if diagnosis.left_alone(v.restart_slow):
        state.fail_streak = 0
        tick = Tick(
            host.name,
            diagnosis.healthy,
            diagnosis.verdict(),
            "none",
            "healthy" if diagnosis.healthy else "slow, not hung: not restarted (restart_slow is off)",
        )
    else:
        state.fail_streak += 1
        if state.fail_streak < v.fail_threshold:
            tick = Tick(
                host.name,
                False,
                diagnosis.verdict(),
                "wait",
                "unhealthy %d/%d ticks" % (state.fail_streak, v.fail_threshold),
            )
        else:
            tick = _recover(host, transport, state, state_path, diagnosis, playbook_loader, now)
    _save_state(transport, state_path, state)
    tick.note = note
    tick.duration_s = round(time.monotonic() - started, 4)
    if v.metrics_file:
        _write_metrics(v.metrics_file, host, transport, state, tick, now())
    record = WatchRecord(tick, now(), diagnosis.probe.__dict__ if diagnosis.probe else None)
    transport.call(
        agent.files.append_log,
        path=log_path,
        line=json.dumps(record.to_json()),
        max_bytes=v.watch_log_max_bytes,
        keep=v.watch_log_keep,
    )
    return tick


def _recover(
    host: Host,
    transport: Transport,
    state: WatchState,
    state_path: str,
    diagnosis: Diagnosis,
    playbook_loader: PlaybookLoader,
    now: Callable[[], float],
) -> Tick:
    from cascade_ops.engine.playbook import bind
    from cascade_ops.engine.runner import RunOptions, run_host
    from cascade_ops.reporting.history import new_run_id
    from cascade_ops.reporting.listeners import run_listeners

    v = host.vars
    playbook = playbook_loader()
    bound = [bind(call, v) for call in playbook.steps]  # validated before any change
    try:
        with transport.lock(StatePaths.of(v).lock):
            again = read_diagnosis(transport, v)
            if again.left_alone(v.restart_slow):
                state.fail_streak = 0
                return Tick(host.name, True, again.verdict(), "none", "healthy again (another run recovered it)")
            if len(state.restarts) >= v.max_restarts:
                return _budget_exhausted(host, state, diagnosis, now)
            state.restarts.append(now())
            _save_state(transport, state_path, state)  # a crash mid-recovery still spends the budget
            listeners = run_listeners(new_run_id(), RECOVERY_PREFIX + playbook.name)
            result = run_host(
                host, transport, bound, RunOptions(rollback=playbook.rollback, listeners=listeners), lock=False
            )
    except LockHeld as exc:
        return Tick(host.name, False, diagnosis.verdict(), "locked", str(exc), EXIT_LOCKED)
    state.recoveries_total += 1
    state.last_recovery_at = now()
    state.last_steps = {step.name: round(step.duration_s, 4) for step in result.steps}
    failed = result.failed
    first_failure = result.first_failure
    outcome = "recovered"
    if first_failure is not None:
        outcome = "failed at %s: %s" % (first_failure.name, (first_failure.message.splitlines() or [""])[0])
    if not failed:
        state.fail_streak = 0
    if result.status is HostStatus.ROLLED_BACK:
        outcome = "rolled back to the previous release after: " + outcome
    code = result.exit_code if result.status is HostStatus.INTERRUPTED else EXIT_FAILED if failed else EXIT_OK
    tick = Tick(
        host.name,
        False,
        diagnosis.verdict(),
        "recover",
        outcome,
        code,
        recovery=result.to_json(),
        incident_report=result.incident_report,
    )
    tick.alert_error = _alert(v, host.name, diagnosis, "recovery", outcome, now, result.incident_report)
    return tick


def _budget_exhausted(host: Host, state: WatchState, diagnosis: Diagnosis, now: Callable[[], float]) -> Tick:
    v = host.vars
    outcome = (
        "restart budget spent: %d recoveries within %.0fs; not restarting until the window passes "
        "or `invoke watch --reset`" % (len(state.restarts), v.window)
    )
    tick = Tick(host.name, False, diagnosis.verdict(), "budget_exhausted", outcome, EXIT_BUDGET)
    if state.budget_alerted_at is None:  # one alert per exhaustion, not one per tick
        tick.alert_error = _alert(v, host.name, diagnosis, "none (restart budget spent)", outcome, now)
        state.budget_alerted_at = now()
    return tick


def _alert(
    v: HostVars,
    host_name: str,
    diagnosis: Diagnosis,
    action: str,
    outcome: str,
    now: Callable[[], float],
    incident_report: Optional[str] = None,
) -> Optional[str]:
    if not v.alert_webhook:
        return None
    from cascade_ops.watchdog.alerts import send_alert, slack_payload

    alert = {
        "host": host_name,
        "problem": diagnosis.verdict(),
        "action": action,
        "outcome": outcome,
        "port": v.port,
        "time": now(),
        "incident_report": incident_report,
    }
    return send_alert(v.alert_webhook, slack_payload(alert) if v.alert_format == "slack" else alert)


def _write_metrics(path: str, host: Host, transport: Transport, state: WatchState, tick: Tick, now: float) -> None:
    from cascade_ops.watchdog.metrics import exposition

    v = host.vars
    text = exposition(
        host.name,
        {
            "cascade_backend_healthy": 1 if tick.healthy or tick.outcome == "recovered" else 0,
            "cascade_recoveries_total": state.recoveries_total,
            "cascade_last_recovery_timestamp_seconds": state.last_recovery_at,
            "cascade_restart_budget_remaining": max(0, v.max_restarts - len(state.restarts)),
            "cascade_tick_duration_seconds": tick.duration_s,
            "cascade_last_tick_timestamp_seconds": now,
        },
        state.last_steps,
    )
    transport.call(agent.files.write_file, path=path, content=text, mode=0o644)  # node_exporter reads it


def exit_code(ticks: Dict[str, Tick]) -> int:
    return worst_exit_code(t.exit_code for t in ticks.values())
