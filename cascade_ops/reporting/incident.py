"""Incident reports: what was wrong, what was done, is it fixed. JSON files in state_dir/incidents/.

Written on the host after every run that changed or failed something, pruned to keep_incidents.
The JWT secret is scrubbed from the document before it is written, whatever field it hid in.
"""

import dataclasses
import json
import os
import time
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional, Tuple

from cascade_ops import agent
from cascade_ops.config.hostvars import HostVars
from cascade_ops.engine.events import RunListener
from cascade_ops.engine.rollback import RolledBack
from cascade_ops.errors import CascadeError
from cascade_ops.model.paths import StatePaths
from cascade_ops.model.records import IncidentReport
from cascade_ops.model.results import HostResult
from cascade_ops.reporting.hangkinds import classify
from cascade_ops.reporting.redaction import SecretScrubber
from cascade_ops.steps import HostRun
from cascade_ops.steps.outputs import (
    Diagnosed,
    Evidence,
    FileChanged,
    HandedOver,
    Restarted,
    Signalled,
    StopPlanned,
    Verified,
)
from cascade_ops.transport import Transport

PREFIX = "incident-"


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds")


def build(run: HostRun, steps: List[Dict[str, Any]], outcome: str, started_at: float) -> IncidentReport:
    diagnosed = run.last(Diagnosed)
    diagnosis = diagnosed.diagnosis.to_json() if diagnosed else None
    evidence = run.last(Evidence)
    evidence_doc = evidence.document if evidence else None
    verified, rolled_back = run.last(Verified), run.last(RolledBack)
    # A hang is named only when the diagnosis found the backend unhealthy: a healthy one replaced
    # for new files was a planned restart, whatever its stacks looked like at that moment.
    planned = (
        diagnosed is not None
        and diagnosed.diagnosis.left_alone(run.vars.restart_slow)
        and run.last(Restarted) is not None
    )
    signalled = [o for s in run.every(Signalled) for o in s.outcomes]
    stop = run.last(StopPlanned)
    socket: Optional[Dict[str, Any]] = None
    if stop is not None:  # what clients saw: the accept queue kept across the restart, or why not
        socket = {"kept": stop.socket.kept, "why": stop.socket.why, "waiting": stop.socket.waiting}
        handed = run.last(HandedOver)
        if handed is not None:
            socket.update(started_pid=handed.started_pid, unaccepted_s=handed.unaccepted_s)
    now = time.time()
    return IncidentReport(
        run.host,
        run.vars.port,
        outcome,
        _iso(started_at),
        _iso(now),
        round(now - started_at, 3),
        diagnosis,
        None if planned else classify(diagnosis, evidence_doc, signalled),
        evidence_doc,
        tuple(steps),
        tuple(dataclasses.asdict(c) for c in verified.checks) if verified else (),
        rolled_back.to_json() if rolled_back else None,
        socket,
        "files changed: %s" % ", ".join(f.path for f in run.every(FileChanged)) if planned else None,
    )


class IncidentWriter(RunListener):
    """Stores the report of every real run that changed or failed something, while the host's lock
    is still held; failing to is a warning on the result, never a failed recovery."""

    def __init__(self, scrubber: SecretScrubber):
        self.scrubber = scrubber

    def steps_done(self, run: HostRun, result: HostResult) -> None:
        if run.check or not (result.failed or result.changed):
            return
        try:
            report = build(run, [s.to_json() for s in result.steps], result.status.value, result.started_at)
            result.incident_report = write(run, self.scrubber.scrub(run, report.to_json()))
        except CascadeError as exc:
            result.warnings.append("incident report not written: %s" % exc)


def write(run: HostRun, document: Dict[str, Any]) -> str:
    """Store the report (already scrubbed) on the host; returns its path."""
    text = json.dumps(document, indent=2, default=str)
    directory = StatePaths.of(run.vars).incidents
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    path = os.path.join(directory, "%s%s.json" % (PREFIX, stamp))
    run.transport.call(agent.files.write_file, path=path, content=text)
    run.transport.call(agent.files.prune, directory=directory, prefix=PREFIX, keep=run.vars.keep_incidents)
    return path


def stored(transport: Transport, host_vars: HostVars) -> List[str]:
    directory = StatePaths.of(host_vars).incidents
    names = transport.call(agent.files.list_dir, path=directory) or []
    return [os.path.join(directory, n) for n in names if n.startswith(PREFIX) and n.endswith(".json")]


def newest(transport: Transport, paths: List[str]) -> Optional[Tuple[str, Optional[IncidentReport], List[str]]]:
    """The newest of ``paths`` that holds a report, and the newer ones that do not ("PATH: why"): a
    torn or foreign file is named, and the report before it shown; ("", None, why) when none does."""
    unreadable = []
    for path in reversed(paths):
        text = transport.call(agent.files.read_text, path=path)
        try:
            doc = json.loads(text or "")
        except ValueError as exc:
            unreadable.append("%s: not a JSON report (%s)" % (path, exc))
            continue
        try:
            return path, IncidentReport.from_json(doc), unreadable
        except ValueError as exc:
            unreadable.append("%s: not an incident report (%s)" % (path, exc))
    return ("", None, unreadable) if unreadable else None
