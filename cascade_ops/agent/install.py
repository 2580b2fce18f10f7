"""cascade-ops itself on a host: which version its CLI is, and installing one into a venv from
wheels the controller sent (no package index on the host)."""

import os
import subprocess
import sys
from typing import Any, Dict, Optional

from .registry import AgentError, command

DEFAULT_PREFIX = "~/.local/share/cascade-ops"
PIP_TIMEOUT_S = 300.0


def _prefix(prefix: Optional[str]) -> str:
    return os.path.abspath(os.path.expanduser(prefix or DEFAULT_PREFIX))


@command
def installed_cli(prefix: Optional[str] = None) -> Dict[str, Any]:
    """The cascade-ops CLI of the venv at ``prefix`` and its version (None when it is not there)."""
    cli = os.path.join(_prefix(prefix), "bin", "cascade-ops")
    version = None
    if os.access(cli, os.X_OK):
        try:
            done = subprocess.run(
                [cli, "--version"], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
            )
            first = done.stdout.splitlines()[0].split() if done.returncode == 0 and done.stdout else []
            version = first[1] if len(first) == 2 and first[0] == "cascade-ops" else None
        except (OSError, subprocess.TimeoutExpired):
            version = None
    return {"cli": cli, "version": version}


@command
def install_cli(wheels: str, version: str, prefix: Optional[str] = None) -> Dict[str, Any]:
    """Create the venv at ``prefix`` with this agent's interpreter if needed, and install
    cascade-ops ``version`` into it from the directory ``wheels`` only."""
    root = _prefix(prefix)
    steps = []
    if not os.path.exists(os.path.join(root, "bin", "python")):
        steps.append([sys.executable, "-m", "venv", root])
    steps.append(
        [
            os.path.join(root, "bin", "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-index",
            "--disable-pip-version-check",
            "--find-links",
            os.path.abspath(wheels),
            "cascade-ops==%s" % version,
        ]
    )
    for argv in steps:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise AgentError("%s: %s" % (" ".join(argv[:4]), exc)) from None
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
            raise AgentError("%s failed: %s" % (" ".join(argv[:4]), " | ".join(tail)))
    found = installed_cli(root)
    if found["version"] != version:
        raise AgentError("installed cascade-ops %s in %s, but its CLI says %s" % (version, root, found["version"]))
    return dict(found, changed=True)
