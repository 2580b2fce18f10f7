"""cascade-ops: diagnose and recover a hung uvicorn backend, safely and idempotently.

The public API is below (``__all__``): one function per command (``cascade_ops.api`` and its
``records`` and ``schedules``), the results they return and the errors they raise. Each is imported
on first use, so ``import cascade_ops`` stays cheap for the watchdog's hot path.
"""

from typing import Any, Dict, List

_MODULES = {  # where each public name lives
    "cascade_ops.api": "recover diagnose verify watch hang invite PerHost",
    "cascade_ops.api.records": "incidents last_incident last_ticks html_report",
    "cascade_ops.api.schedules": "cron_install cron_remove cron_entry timer_install timer_remove timer_status "
    "follow service_install service_remove service_status",
    "cascade_ops.model.results": "RunResult HostResult StepResult HostStatus StepStatus",
    "cascade_ops.transport.base": "ConnectOptions",
    "cascade_ops.errors": "CascadeError ConfigError HostCommandError HostUnreachable HostCutOff LockHeld",
}
_FROM: Dict[str, str] = {name: module for module, names in _MODULES.items() for name in names.split()}
__all__ = sorted(_FROM)


def __getattr__(name: str) -> Any:
    if name in _FROM:
        import importlib

        return getattr(importlib.import_module(_FROM[name]), name)
    raise AttributeError("module 'cascade_ops' has no attribute %r" % name)


def __dir__() -> List[str]:
    return list(__all__)
