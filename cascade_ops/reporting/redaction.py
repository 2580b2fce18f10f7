"""The host's JWT secret never reaches output: a failed step's message (which may quote a backend's
log or answer) and the incident report are scrubbed of it. The replacing itself is the agent's
``redact``, the one place it is written."""

import threading
from typing import Any, Dict, Optional

from cascade_ops import agent
from cascade_ops.agent.files import redact
from cascade_ops.engine.events import RunListener
from cascade_ops.errors import CascadeError
from cascade_ops.model.results import StepResult, StepStatus
from cascade_ops.steps import HostRun


class SecretScrubber(RunListener):
    """Reads each host's secret once, when there is first something to scrub, and replaces it in
    failed steps' messages before anyone sees them; ``scrub`` serves the incident report."""

    def __init__(self) -> None:
        self._secrets: Dict[str, Optional[str]] = {}
        self._lock = threading.Lock()  # hosts run on threads of their own

    def secret(self, run: HostRun) -> Optional[str]:
        with self._lock:
            if run.host in self._secrets:
                return self._secrets[run.host]
        try:
            found = run.transport.call(agent.files.read_secret, path=run.vars.jwt_secret_file) or None
        except CascadeError:
            found = None  # none yet, or unreadable: nothing of it can be in the text
        with self._lock:
            self._secrets[run.host] = found
        return found

    def scrub(self, run: HostRun, value: Any) -> Any:
        return redact(value, self.secret(run))

    def step_done(self, run: HostRun, step: StepResult) -> None:
        if step.status is StepStatus.FAILED:
            step.message = self.scrub(run, step.message)
