"""Step 1: probe the backend and list who holds its port. Changes nothing."""

import time

from ..facts import Diagnosis, read_diagnosis
from .base import HostRun, Step, Unchanged


def gather_diagnosis(run: HostRun, probe: bool = True) -> Diagnosis:
    return read_diagnosis(run.transport, run.vars, probe)


class Diagnose(Step):
    """Probe the health path and resolve every holder of the port's LISTEN sockets."""

    name = "diagnose"

    def gather(self, run, args):
        return gather_diagnosis(run)

    def plan(self, run, args, diagnosis):
        run.diagnosis, run.diagnosed_at = diagnosis, time.monotonic()
        return Unchanged(diagnosis.verdict())
