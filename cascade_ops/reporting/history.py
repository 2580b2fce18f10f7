"""The run history: every run on a host (not only the ones that changed something) leaves one JSON
line in ``state_dir/history.jsonl``, rotated like the watch log. It holds names, statuses and
timings, and a failed step's first line (already scrubbed of the JWT secret): nothing else."""

import json
import os
import time
from typing import Dict, List

from cascade_ops import agent
from cascade_ops.agent.files import append_log, tail
from cascade_ops.config.hostvars import HostVars
from cascade_ops.engine.events import RunListener
from cascade_ops.errors import CascadeError
from cascade_ops.model.paths import StatePaths
from cascade_ops.model.records import RunRecord
from cascade_ops.model.results import HostResult, HostStatus
from cascade_ops.steps import HostRun
from cascade_ops.transport import Transport

# The controller's own record of the hosts a run could not reach or never started (unreachable,
# cut off, a stopped rollout): their history cannot be on them. Beside the inventory.
CONTROLLER_FILE = os.path.join(".cascade", "history.jsonl")
CONTROLLER_MAX_BYTES, CONTROLLER_KEEP = 1 << 20, 3


def controller_path(inventory: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(inventory)), CONTROLLER_FILE)


def new_run_id() -> str:
    """The id every host of one run shares in the history: when it began, and 6 random hex digits."""
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + os.urandom(3).hex()


class HistoryRecorder(RunListener):
    """Appends each host's line when its run ends. A dry run leaves nothing on the host; nor does a
    host cut off at its deadline, one interrupted before its first step (which touched nothing), or
    one its preflight refused (the state_dir may be what it refused)."""

    def __init__(self, run_id: str, playbook: str):
        self.run_id, self.playbook = run_id, playbook

    def host_done(self, run: HostRun, result: HostResult) -> None:
        began = any(s.name not in ("preflight", "interrupted") for s in result.steps)
        refused = result.steps[:1] and result.steps[0].name == "preflight" and result.failed and not began
        if run.check or run.transport.cancelled or refused or (result.status is HostStatus.INTERRUPTED and not began):
            return
        record(run.transport, run.vars, result, self.run_id, self.playbook)


def line_of(result: HostResult, run_id: str, name: str, started_at: float) -> str:
    return json.dumps(RunRecord.of(result, run_id, name, started_at).to_json())


def _records(lines: List[str]) -> List[RunRecord]:
    """The lines that read as run records (a torn or foreign line is skipped)."""
    records = []
    for text in lines:
        try:
            records.append(RunRecord.from_json(json.loads(text)))
        except ValueError:
            continue
    return records


def record(transport: Transport, v: HostVars, result: HostResult, run_id: str, name: str) -> None:
    """Append this run's line; failing to is a warning on the result, never a failed run."""
    try:
        transport.call(
            agent.files.append_log,
            path=StatePaths.of(v).history,
            line=line_of(result, run_id, name, result.started_at),
            max_bytes=v.history_max_bytes,
            keep=v.keep_history,
        )
    except CascadeError as exc:
        result.warnings.append("run history not written: %s" % exc)


def reached(result: HostResult) -> bool:
    """Whether the run worked on the host (and so wrote its history line there)."""
    return bool(result.steps) and result.steps[0].name == "preflight" and result.steps[-1].name != "deadline"


def record_unreached(inventory: str, results: Dict[str, HostResult], run_id: str, name: str, started_at: float) -> None:
    """The hosts a run never worked on, in the controller's record: every host of a run is in the
    run history, an unreachable one too. Never fails the run: a read-only checkout just has no page."""
    # a host the run never started on began, for its record, when the run did
    lines = [line_of(r, run_id, name, r.started_at or started_at) for r in results.values() if not reached(r)]
    try:
        for line in lines:
            append_log(controller_path(inventory), line, CONTROLLER_MAX_BYTES, CONTROLLER_KEEP)
    except OSError:
        pass


def read_controller(inventory: str, hosts: List[str], last: int) -> Dict[str, List[RunRecord]]:
    """The controller's records of ``hosts``, the last ``last`` of each, oldest first."""
    found: Dict[str, List[RunRecord]] = {}
    for rec in _records(tail(controller_path(inventory), lines=last * max(1, len(hosts)))):
        if rec.host in hosts:
            found.setdefault(rec.host, []).append(rec)
    return {h: runs[-last:] for h, runs in found.items()}


def read(transport: Transport, v: HostVars, last: int) -> List[RunRecord]:
    """The host's last ``last`` runs, oldest first."""
    return _records(transport.call(agent.files.tail, path=StatePaths.of(v).history, lines=last) or [])
