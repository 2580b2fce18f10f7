"""The steps a playbook can name, by name; ``Preflight`` runs first on every run, unnamed."""

from .base import CHANGED, FAILED, OK, SKIPPED, BoundStep, HostRun, Step, StepResult
from .diagnose import Diagnose
from .files import DeployFile, JwtSecret, MountRouter, SeedApp
from .preflight import Preflight
from .process import Start, Terminate
from .verify import Verify

REGISTRY = {cls.name: cls for cls in (SeedApp, Diagnose, JwtSecret, DeployFile, MountRouter, Terminate, Start, Verify)}

__all__ = ["CHANGED", "FAILED", "OK", "REGISTRY", "SKIPPED", "BoundStep", "HostRun", "Preflight", "Step", "StepResult"]
