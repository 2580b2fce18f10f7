"""What a run leaves behind and reads back: typed records whose JSON round-trips, and whose reader
names the first bad field of a torn or foreign record instead of failing half-way through a page."""

import json

import pytest

from cascade_ops.model.records import IncidentReport, RunRecord, StepRecord
from cascade_ops.model.results import HostResult, StepResult, StepStatus
from cascade_ops.watchdog.tick import Tick, WatchRecord, WatchState

pytestmark = pytest.mark.unit


def test_a_run_record_keeps_names_statuses_timings_and_only_a_failed_steps_message():
    result = HostResult("web1")
    result.steps += [
        StepResult("diagnose", StepStatus.OK, "backend hung", 0.012345),
        StepResult("start", StepStatus.FAILED, "x" * 5000, 1.5),
    ]
    rec = RunRecord.of(result, "20261204T090000-abcdef", "recover", 1000.0)
    doc = json.loads(json.dumps(rec.to_json()))
    assert doc["status"] == "failed" and doc["exit_code"] == result.exit_code
    assert doc["steps"][0] == {"name": "diagnose", "status": "ok", "duration_s": 0.0123}
    assert len(doc["steps"][1]["message"]) == 4000
    assert RunRecord.from_json(doc) == rec


@pytest.mark.parametrize(
    "change, named",
    [
        ({"started_at": "yesterday"}, "started_at is str"),
        ({"host": None}, "host is NoneType"),
        ({"steps": [{"name": "start", "status": "ok"}]}, "step: no duration_s"),
        ({"exit_code": True}, "exit_code is bool"),
    ],
)
def test_a_bad_run_record_is_refused_naming_its_field(change, named):
    good = RunRecord("r", "recover", "web1", 1.0, 0.5, "ok", 0, (StepRecord("diagnose", "ok", 0.1),), None, 2.0)
    doc = dict(good.to_json(), **change)
    with pytest.raises(ValueError, match=named):
        RunRecord.from_json(doc)
    with pytest.raises(ValueError, match="expected an object"):
        RunRecord.from_json(["not", "a", "record"])


def test_watch_state_round_trips_and_an_older_file_takes_defaults():
    state = WatchState(2, [10.0, 20.5], None, 4, 20.5, {"start": 0.8})
    assert WatchState.from_json(json.loads(json.dumps(state.to_json()))) == state
    assert WatchState.from_json({"fail_streak": 1}) == WatchState(fail_streak=1)
    for bad in ({"restarts": ["soon"]}, {"fail_streak": "2"}, {"last_steps": {"start": "slow"}}, []):
        with pytest.raises(ValueError):
            WatchState.from_json(bad)


def test_a_watch_log_line_round_trips_without_the_recovery():
    tick = Tick("web1", False, "hung", "recover", "recovered", recovery={"steps": []}, note="rebuilt")
    line = WatchRecord(tick, 123.0, {"ok": False, "error": "timed out"}).to_json()
    assert "recovery" not in line and line["time"] == 123.0
    back = WatchRecord.from_json(json.loads(json.dumps(line)))
    assert back.tick.outcome == "recovered" and back.tick.recovery is None and back.probe == line["probe"]
    with pytest.raises(ValueError, match="healthy is str"):
        WatchRecord.from_json(dict(line, healthy="yes"))


def test_an_incident_report_round_trips_and_a_foreign_json_file_is_not_one():
    report = IncidentReport(
        "web1",
        8000,
        "changed",
        "2026-12-04T09:00:00.000+00:00",
        "2026-12-04T09:00:01.000+00:00",
        1.0,
        {"verdict": "hung"},
        None,
        None,
        ({"name": "terminate", "status": "changed"},),
        (),
        None,
        socket={"kept": True, "why": "", "waiting": 3},
    )
    doc = json.loads(json.dumps(report.to_json()))
    assert "planned_restart" not in doc and doc["socket"]["waiting"] == 3
    assert IncidentReport.from_json(doc) == report
    with pytest.raises(ValueError, match="no host"):
        IncidentReport.from_json({"name": "package.json"})
    with pytest.raises(ValueError, match="an action or a check is not an object"):
        IncidentReport.from_json(dict(doc, actions=["terminate"]))
