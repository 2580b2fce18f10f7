"""The steps a playbook can name, by name."""

from .base import CHANGED, FAILED, OK, SKIPPED, BoundStep, HostRun, Step, StepResult
from .diagnose import Diagnose
from .files import DeployFile, JwtSecret, MountRouter, SeedApp
from .process import Start, Terminate
from .verify import Verify

REGISTRY = {cls.name: cls for cls in (SeedApp, Diagnose, JwtSecret, DeployFile, MountRouter, Terminate, Start, Verify)}

__all__ = ["CHANGED", "FAILED", "OK", "REGISTRY", "SKIPPED", "BoundStep", "HostRun", "Step", "StepResult"]
