"""The diagnose step: probe the backend and list who holds its port. Changes nothing; registers
the diagnosis for the steps after it."""

import time
from typing import Optional

from cascade_ops.model.facts import Diagnosis, read_diagnosis
from cascade_ops.steps.base import Args, Context, HostRun, Outcome, Step, Unchanged
from cascade_ops.steps.outputs import Diagnosed, FileChanged


def gather_diagnosis(run: HostRun, probe: bool = True) -> Diagnosis:
    return read_diagnosis(run.transport, run.vars, probe)


def left_alone(run: HostRun) -> Optional[Diagnosis]:
    """The diagnosis, when it found nothing to mend (healthy, or slow and ``restart_slow`` off) and
    no earlier step changes a file the backend runs: nothing is signalled, started or re-verified."""
    found = run.last(Diagnosed)
    if found is None or not found.diagnosis.left_alone(run.vars.restart_slow) or run.every(FileChanged):
        return None
    return found.diagnosis


class Diagnose(Step[Diagnosed, None]):
    """Probe the health path and resolve every holder of the port's LISTEN sockets."""

    name = "diagnose"

    def gather(self, run: HostRun, args: Args) -> Diagnosed:
        return Diagnosed(gather_diagnosis(run), time.monotonic())

    def plan(self, facts: Diagnosed, args: Args, ctx: Context) -> Outcome[None]:
        return Unchanged(facts.diagnosis.verdict(), register=(facts,))
