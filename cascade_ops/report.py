"""Incident reports: what was wrong, what was done, is it fixed. JSON files in state_dir/incidents/.

Written on the host after every run that changed or failed something, pruned to keep_incidents.
The JWT secret is scrubbed from the document before it is written, whatever field it hid in.
"""

import json
import os
import time
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional, Tuple

from .agent.files import REDACTED
from .errors import HostCommandError
from .hangkind import classify
from .steps import HostRun

INCIDENT_DIR = "incidents"
PREFIX = "incident-"


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds")


def build(run: HostRun, steps: List[dict], outcome: str, started_at: float) -> Dict[str, Any]:
    diagnosis = run.diagnosis.to_json() if run.diagnosis else None
    # A hang is named only when the diagnosis found the backend unhealthy: a healthy one replaced
    # for new files was a planned restart, whatever its stacks looked like at that moment.
    planned = run.diagnosis is not None and run.diagnosis.left_alone(run.vars["restart_slow"]) and run.restarted
    doc = {"host": run.host, "port": run.vars["port"], "outcome": outcome,
           "started_at": _iso(started_at), "finished_at": _iso(time.time()),
           "duration_s": round(time.time() - started_at, 3), "diagnosis": diagnosis,
           "hang": None if planned else classify(diagnosis, run.evidence, run.terminated),
           "evidence": run.evidence, "actions": steps,
           "verification": [c.__dict__ for c in run.checks], "rollback": run.rollback}
    if run.socket is not None:  # what clients saw: the accept queue kept across the restart, or why not
        doc["socket"] = run.socket
    if planned:
        doc["planned_restart"] = "files changed: %s" % ", ".join(run.changed_files)
    return doc


def redact(value: Any, secret: str) -> Any:
    """``value`` with ``secret`` replaced in every string it holds. Done on values, before
    serialising: in JSON text a secret holding a quote or a backslash no longer looks like itself."""
    if isinstance(value, str):
        return value.replace(secret, REDACTED)
    if isinstance(value, dict):
        return {redact(k, secret): redact(v, secret) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v, secret) for v in value]
    return value


def _secret(run: HostRun) -> Optional[str]:
    try:
        return run.transport.agent("read_secret", path=run.vars["jwt_secret_file"]) or None
    except HostCommandError:
        return None


def write(run: HostRun, document: Dict[str, Any]) -> str:
    """Store the report on the host; returns its path."""
    secret = _secret(run)
    text = json.dumps(redact(document, secret) if secret else document, indent=2, default=str)
    directory = os.path.join(run.vars["state_dir"], INCIDENT_DIR)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    path = os.path.join(directory, "%s%s.json" % (PREFIX, stamp))
    run.transport.agent("write_file", path=path, content=text)
    run.transport.agent("prune", directory=directory, prefix=PREFIX, keep=run.vars["keep_incidents"])
    return path


def stored(transport, host_vars) -> List[str]:
    directory = os.path.join(host_vars["state_dir"], INCIDENT_DIR)
    names = transport.agent("list_dir", path=directory) or []
    return [os.path.join(directory, n) for n in names if n.startswith(PREFIX) and n.endswith(".json")]


def newest(transport, paths: List[str]) -> Optional[Tuple[str, Dict[str, Any], List[str]]]:
    """The newest of ``paths`` that holds a report, and the newer ones that do not ("PATH: why"): a
    torn or foreign file is named, and the report before it shown."""
    unreadable = []
    for path in reversed(paths):
        text = transport.agent("read_text", path=path)
        try:
            doc = json.loads(text or "")
        except ValueError as exc:
            unreadable.append("%s: not a JSON report (%s)" % (path, exc))
            continue
        if isinstance(doc, dict) and "host" in doc and "outcome" in doc:
            return path, doc, unreadable
        unreadable.append("%s: not an incident report" % path)
    return ("", {}, unreadable) if unreadable else None
