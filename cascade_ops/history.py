"""The run history: every run on a host (not only the ones that changed something) leaves one JSON
line in ``state_dir/history.jsonl``, rotated like the watch log. It holds names, statuses and
timings, and a failed step's first line (already scrubbed of the JWT secret): nothing else."""

import json
import os
import time
from typing import TYPE_CHECKING, Any, Dict, List

from .errors import CascadeError

if TYPE_CHECKING:
    from .runner import HostResult
    from .transport import Transport

FILE = "history.jsonl"


def path(v: Dict[str, Any]) -> str:
    return os.path.join(v["state_dir"], FILE)


def record(transport: "Transport", v: Dict[str, Any], result: "HostResult", run_id: str, name: str,
           started_at: float) -> None:
    """Append this run's line; failing to is a warning on the result, never a failed run."""
    steps = []
    for step in result.steps:
        entry: Dict[str, Any] = {"name": step.name, "status": step.status, "duration_s": round(step.duration_s, 4)}
        if step.status == "failed":
            entry["message"] = (step.message.splitlines() or [""])[0][:300]
        steps.append(entry)
    line = {"run_id": run_id, "playbook": name, "host": result.host, "started_at": round(started_at, 3),
            "duration_s": round(result.duration_s, 4), "status": result.status, "exit_code": result.exit_code,
            "steps": steps, "incident_report": result.incident_report, "recorded_at": round(time.time(), 3)}
    try:
        transport.agent("append_log", path=path(v), line=json.dumps(line), max_bytes=v["history_max_bytes"],
                        keep=v["keep_history"])
    except CascadeError as exc:
        result.warnings.append("run history not written: %s" % exc)


def read(transport: "Transport", v: Dict[str, Any], last: int) -> List[Dict[str, Any]]:
    """The host's last ``last`` runs, oldest first (lines that do not parse are skipped)."""
    lines = transport.agent("tail", path=path(v), lines=last) or []
    runs = []
    for text in lines:
        try:
            runs.append(json.loads(text))
        except ValueError:
            continue
    return runs
