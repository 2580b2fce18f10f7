"""The steps a playbook can name, by name; ``Preflight`` runs first on every run, unnamed."""

from cascade_ops.steps.base import CHANGED, FAILED, OK, SKIPPED, BoundStep, HostRun, Step, StepResult
from cascade_ops.steps.diagnose import Diagnose
from cascade_ops.steps.files import DeployFile, JwtSecret, MountRouter, SeedApp
from cascade_ops.steps.preflight import Preflight
from cascade_ops.steps.start import Start
from cascade_ops.steps.terminate import Terminate
from cascade_ops.steps.verify import Verify

REGISTRY = {cls.name: cls for cls in (SeedApp, Diagnose, JwtSecret, DeployFile, MountRouter, Terminate, Start, Verify)}

__all__ = ["CHANGED", "FAILED", "OK", "REGISTRY", "SKIPPED", "BoundStep", "HostRun", "Preflight", "Step", "StepResult"]
