"""cascade-ops: diagnose and recover a hung uvicorn backend, safely and idempotently.

The public API is ``recover``, ``diagnose`` and ``verify`` (see ``cascade_ops.api``). They are
imported on first use, so ``import cascade_ops`` stays cheap for the watchdog's hot path.
"""

__all__ = ["diagnose", "recover", "verify"]


def __getattr__(name):
    if name in __all__:
        from cascade_ops import api
        return getattr(api, name)
    raise AttributeError(name)
