"""Incident reports: what was wrong, what was done, is it fixed. JSON files in state_dir/incidents/.

Written on the host after every run that changed or failed something, pruned to keep_incidents.
The JWT secret is scrubbed from the document before it is written, whatever field it hid in.
"""

import json
import os
import time
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional

from .errors import HostCommandError
from .facts import Diagnosis
from .steps import HostRun

INCIDENT_DIR = "incidents"
PREFIX = "incident-"
REDACTED = "[REDACTED]"


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds")


def diagnosis_json(d: Optional[Diagnosis]) -> Optional[Dict[str, Any]]:
    if d is None:
        return None
    return {"verdict": d.verdict(), "healthy": d.healthy, "port": d.port, "backlog": d.backlog,
            "probe": d.probe.__dict__ if d.probe else None,
            "holders": [{"pid": h.pid, "ppid": h.process.ppid, "user": h.process.user, "state": h.process.state,
                         "age_s": h.process.age_s, "rss": h.process.rss, "cpu_s": h.process.cpu_s,
                         "threads": h.process.threads, "command": h.process.command,
                         "listen": [s.endpoint for s in h.sockets], "backlog": h.backlog} for h in d.holders]}


def build(run: HostRun, steps: List[dict], outcome: str, started_at: float) -> Dict[str, Any]:
    return {"host": run.host, "port": run.vars["port"], "outcome": outcome,
            "started_at": _iso(started_at), "finished_at": _iso(time.time()),
            "duration_s": round(time.time() - started_at, 3),
            "diagnosis": diagnosis_json(run.diagnosis), "evidence": run.evidence, "actions": steps,
            "verification": [c.__dict__ for c in run.checks], "rollback": run.rollback}


def _secret(run: HostRun) -> Optional[str]:
    try:
        return run.transport.agent("read_secret", path=run.vars["jwt_secret_file"]) or None
    except HostCommandError:
        return None


def write(run: HostRun, document: Dict[str, Any]) -> str:
    """Store the report on the host; returns its path."""
    text = json.dumps(document, indent=2, default=str)
    secret = _secret(run)
    if secret:
        text = text.replace(secret, REDACTED)
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


def load(transport, path: str) -> Dict[str, Any]:
    return json.loads(transport.agent("read_text", path=path))
