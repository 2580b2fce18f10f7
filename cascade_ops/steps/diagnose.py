"""The diagnose step: probe the backend and list who holds its port. Changes nothing."""

import time
from typing import Any

from cascade_ops.model.facts import Diagnosis, read_diagnosis
from cascade_ops.steps.base import Args, HostRun, Outcome, Step, Unchanged


def gather_diagnosis(run: HostRun, probe: bool = True) -> Diagnosis:
    return read_diagnosis(run.transport, run.vars, probe)


class Diagnose(Step):
    """Probe the health path and resolve every holder of the port's LISTEN sockets."""

    name = "diagnose"

    def gather(self, run: HostRun, args: Args) -> Any:
        return gather_diagnosis(run)

    def plan(self, run: HostRun, args: Args, diagnosis: Any) -> Outcome:
        run.diagnosis, run.diagnosed_at = diagnosis, time.monotonic()
        return Unchanged(diagnosis.verdict())
