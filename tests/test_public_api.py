"""The public API is what ``cascade_ops.__all__`` says, no more and no less (as httpx holds its own)."""

import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import cascade_ops

pytestmark = pytest.mark.unit  # a pure decision, parsing or layout: pytest -m unit

API = sorted(
    [
        "recover",
        "diagnose",
        "verify",
        "watch",
        "hang",
        "invite",
        "incidents",
        "last_incident",
        "last_ticks",
        "html_report",
        "cron_install",
        "cron_remove",
        "cron_entry",
        "timer_install",
        "timer_remove",
        "timer_status",
        "follow",
        "service_install",
        "service_remove",
        "service_status",
        "PerHost",
        "ConnectOptions",
        "RunResult",
        "HostResult",
        "StepResult",
        "HostStatus",
        "StepStatus",
        "CascadeError",
        "ConfigError",
        "HostCommandError",
        "HostUnreachable",
        "HostCutOff",
        "LockHeld",
    ]
)


def test_exported_members():
    assert cascade_ops.__all__ == API
    exported = [name for name in dir(cascade_ops) if not name.startswith("_")]
    assert sorted(exported) == API
    for name in API:
        member = getattr(cascade_ops, name)
        assert member.__name__ == name and (inspect.isclass(member) or inspect.isfunction(member))


def test_what_the_readme_calls_is_exported():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    called = set(re.findall(r"cascade_ops\.([A-Za-z_]+)\(", readme))
    assert called and called <= set(API), called - set(API)


def test_importing_the_package_loads_no_engine():
    """``import cascade_ops`` is what the watchdog's hot path pays: no engine, no SSH client."""
    probe = (
        "import cascade_ops, sys; print(sorted(m for m in sys.modules if m.startswith(('cascade_ops.', 'paramiko'))))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert loaded.stdout.strip() == "[]"


def test_every_option_of_every_command_has_its_help_however_often_it_is_asked():
    """Invoke hands out an option's help once: a task named twice (cron.install and cron-install)
    must still show it the second time."""
    from cascade_ops.cli import ns

    for name in ns.task_names:
        for _ in range(2):
            missing = [a.name for a in ns[name].get_arguments() if not a.help]
            assert not missing, "%s: %s without help" % (name, missing)
