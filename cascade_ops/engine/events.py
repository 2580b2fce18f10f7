"""What the runner tells whoever listens, as Ansible's callback plugins hear its executor: the run
history, the incident report and the secret scrub are listeners (``reporting``), attached by the
API; the runner itself writes nothing about a run."""

from typing import Callable

from cascade_ops.model.results import HostResult, StepResult
from cascade_ops.steps import HostRun

StepCallback = Callable[[str, StepResult], None]  # (host, result): a step's result, as it comes


class RunListener:
    """Hooks the runner calls on each host's thread, in the order the listeners were given; each does
    nothing unless overridden. A listener that cannot do its part says so in ``result.warnings``:
    it never fails the run."""

    def step_done(self, run: HostRun, step: StepResult) -> None:
        """A step (or the lock, an interruption, a rollback) ended; called before anyone sees it, so
        a listener may still amend its message."""

    def steps_done(self, run: HostRun, result: HostResult) -> None:
        """The steps, and any rollback, are over, and the host's lock is still held."""

    def host_done(self, run: HostRun, result: HostResult) -> None:
        """The host's run has ended, however it ended (``result.duration_s`` is final)."""
