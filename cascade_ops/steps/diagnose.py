"""Step 1: probe the backend and list who holds its port. Changes nothing."""

import time

from ..facts import Diagnosis
from .base import HostRun, Step, Unchanged


def gather_diagnosis(run: HostRun, probe: bool = True) -> Diagnosis:
    v = run.vars
    raw = run.transport.agent("host_facts", port=v["port"], bind_host=v["bind_host"],
                              health_path=v["health_path"], probe_timeout=v["probe_timeout"], probe=probe)
    return Diagnosis.from_agent(raw, v["port"])


class Diagnose(Step):
    """Probe the health path and resolve every holder of the port's LISTEN sockets."""

    name = "diagnose"

    def gather(self, run, args):
        return gather_diagnosis(run)

    def plan(self, run, args, diagnosis):
        run.diagnosis, run.diagnosed_at = diagnosis, time.monotonic()
        return Unchanged(diagnosis.verdict())
