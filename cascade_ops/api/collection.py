"""What the Ansible collection (``ansible/``, ``cascade.ops``) runs: on the controller, the engine as
it travels to a host and the check of a task's options; on the host, the task itself.

A module runs on the host, as Ansible's become made it, so the run there is a local one: the same
playbooks, steps and agent as ``cascade-ops recover`` with ``connection: local``. Nothing is forked:
the engine travels whole, with the pure-Python libraries its verify step uses, as one zip named by
its hash, so the host needs only its Python.
"""

import functools
import hashlib
import importlib
import io
import os
import time
import zipfile
from typing import Any, Dict, List, Mapping, Optional, Tuple

from cascade_ops.config.hostvars import SPECS, Host, Origin, RawVar, owner_vars, resolve
from cascade_ops.config.inventory import variables
from cascade_ops.errors import CascadeError, ConfigError
from cascade_ops.model.results import HostResult

TASKS = ("recover", "deploy", "diagnose", "verify")
WHERE = "task options"  # what an error about an option names as its place
# Variables that say how the host is reached or watched: Ansible's inventory says the first, the
# collection does not run the watchdog.
NOT_OPTIONS = frozenset(
    {
        "connection",
        "host_timeout",
        "fail_threshold",
        "max_restarts",
        "window",
        "alert_webhook",
        "alert_format",
        "ping_url",
        "metrics_file",
        "watch_log_max_bytes",
        "watch_log_keep",
    }
)
# The engine and what it imports on the host that is not the standard library: httpx and pyjwt for
# verify (with theirs), PyYAML for playbooks (its pure-Python half). The optional ones travel when
# the controller has them (backports an older host's Python may need).
SHIPPED = ("cascade_ops", "httpx", "httpcore", "h11", "anyio", "idna", "certifi", "jwt", "yaml")
SHIPPED_IF_PRESENT = ("sniffio", "typing_extensions", "exceptiongroup")


def option_names() -> List[str]:
    """Every option a module takes: the inventory variables of a backend, by the same names."""
    return sorted(name for name in dict(SPECS, **owner_vars()) if name not in NOT_OPTIONS and name != "host")


def controller_paths() -> List[str]:
    """Options naming a file or folder on the controller (sent to the host with the task)."""
    return sorted(name for name, spec in SPECS.items() if spec.path == "controller" and name not in NOT_OPTIONS)


def task_host(name: str, options: Mapping[str, Any], home: Optional[str] = None) -> Host:
    """The host a task acts on, from its options, checked with the inventory's rules (ConfigError
    naming the option otherwise). Relative host paths are relative to ``home`` (the user's)."""
    known = set(option_names())
    for key in options:
        if key not in known:
            raise ConfigError("unknown option (known: %s)" % ", ".join(sorted(known)), WHERE, field=key)
    origin = Origin(WHERE, None, home or os.path.expanduser("~"))
    raw = {key: RawVar(value, origin) for key, value in options.items() if value is not None}
    raw["connection"] = RawVar("local", origin)
    return Host(name, ("all",), resolve(raw, name, variables(), WHERE))


@functools.lru_cache(maxsize=1)
def engine_bundle() -> Tuple[str, bytes]:
    """(hash, zip) of the engine as it travels: SHIPPED packages' source and data, no bytecode, no
    compiled extension. The same code gives the same hash, so a host unpacks it once."""
    out = io.BytesIO()
    digest = hashlib.sha256()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as bundle:
        files = [f for name in SHIPPED + SHIPPED_IF_PRESENT for f in _package_files(name, name in SHIPPED)]
        for path, arcname in files + _package_data():
            with open(path, "rb") as f:
                data = f.read()
            digest.update(arcname.encode() + b"\0" + data + b"\0")
            # A fixed date: the zip's bytes, like the hash, depend on the content only.
            bundle.writestr(zipfile.ZipInfo(arcname, (2020, 1, 1, 0, 0, 0)), data, zipfile.ZIP_DEFLATED)
    return digest.hexdigest()[:16], out.getvalue()


def _package_data() -> List[Tuple[str, str]]:
    """From a checkout, the playbooks and the demo where a wheel has them (cascade_ops/_data)."""
    from cascade_ops import resources

    if not resources.CHECKOUT:
        return []  # a wheel's package data came with the package
    playbooks = os.path.dirname(resources.playbook("recover"))
    return _walk(playbooks, "cascade_ops/_data/playbooks") + _walk(resources.demo_backend(), "cascade_ops/_data/demo")


def _walk(root: str, prefix: str) -> List[Tuple[str, str]]:
    """(path, name in the zip) of every source and data file under ``root``."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for file in sorted(f for f in files if not f.endswith((".pyc", ".so", ".pyd"))):
            full = os.path.join(folder, file)
            found.append((full, "%s/%s" % (prefix, os.path.relpath(full, root))))
    return found


def _package_files(name: str, required: bool) -> List[Tuple[str, str]]:
    try:
        module = importlib.import_module(name)
    except ImportError:
        if required:
            raise ConfigError("the controller lacks %s, which the engine takes to the host" % name) from None
        return []
    path = module.__file__ or ""
    if os.path.basename(path) != "__init__.py":  # a single-file module
        return [(path, os.path.basename(path))]
    return _walk(os.path.dirname(path), name)


def run_task(task: str, options: Mapping[str, Any], check: bool, diff: bool) -> Dict[str, Any]:
    """Run one task on this host (the module's side) and answer as an Ansible module does:
    ``changed``, ``failed``, ``msg``, and what the task found."""
    if task not in TASKS:
        raise ConfigError("unknown task (known: %s)" % ", ".join(TASKS), WHERE, field="task")
    try:
        host = task_host("localhost", options)
        if task == "diagnose":
            return _diagnose(host)
        if task == "verify":
            return _verify(host)
        return _playbook(task, host, check, diff)
    except CascadeError as exc:
        return {"changed": False, "failed": True, "msg": str(exc)}


def _diagnose(host: Host) -> Dict[str, Any]:
    from cascade_ops.model.facts import read_diagnosis
    from cascade_ops.transport.local import LocalTransport

    found = read_diagnosis(LocalTransport(host.vars), host.vars)
    doc = found.to_json()
    return {"changed": False, "failed": False, "msg": "healthy" if found.healthy else "unhealthy", "diagnosis": doc}


def _verify(host: Host) -> Dict[str, Any]:
    import dataclasses

    from cascade_ops.steps.verify import run_checks
    from cascade_ops.transport.local import LocalTransport

    checks = run_checks(LocalTransport(host.vars), host.vars)
    failed = [c for c in checks if not c.ok]
    return {
        "changed": False,
        "failed": bool(failed),
        "msg": "; ".join("%s: %s" % (c.name, c.detail) for c in failed) or "every check passed",
        "checks": [dataclasses.asdict(c) for c in checks],
    }


def _playbook(task: str, host: Host, check: bool, diff: bool) -> Dict[str, Any]:
    from cascade_ops import resources
    from cascade_ops.engine.playbook import load_playbook, run_playbook
    from cascade_ops.engine.runner import RunOptions
    from cascade_ops.reporting import history
    from cascade_ops.reporting.listeners import run_listeners

    book = load_playbook(resources.playbook(task))
    run_id = history.new_run_id()
    started = time.monotonic()
    result = run_playbook([host], book, RunOptions(check=check, diff=diff, listeners=run_listeners(run_id, book.name)))
    return module_answer(result.hosts[host.name], time.monotonic() - started)


def module_answer(done: HostResult, duration_s: float) -> Dict[str, Any]:
    """A host's run as an Ansible module's result: the steps with their timing, the incident report,
    the evidence it holds, and the diffs in the form Ansible's callbacks print."""
    failure = done.first_failure
    answer: Dict[str, Any] = {
        "changed": done.changed,
        "failed": done.failed or done.exit_code != 0,
        "msg": ("%s: %s" % (failure.name, failure.message)) if failure else done.status.value,
        "status": done.status.value,
        "steps": [s.to_json() for s in done.steps],
        "duration_s": round(duration_s, 3),
        "incident_report": done.incident_report,
        "evidence": _evidence(done.incident_report),
    }
    diffs = [{"prepared": s.diff} for s in done.steps if s.diff]
    if diffs:
        answer["diff"] = diffs
    if done.warnings:
        answer["warnings"] = done.warnings
    return answer


def _evidence(report: Optional[str]) -> Optional[Dict[str, Any]]:
    if not report:
        return None
    import json

    from cascade_ops.model.records import IncidentReport

    try:
        with open(report) as f:
            return IncidentReport.from_json(json.load(f)).evidence
    except (OSError, ValueError):
        return None
