"""The host agent: facts and primitive operations, standard library only.

It runs *on the host being recovered*: imported in-process for a local run, or shipped to the
host's own ``python3`` as this package (files named by their hash) for a remote one. So it imports
nothing outside the standard library and nothing from the rest of cascade_ops.

Nothing here decides *what* to do (that is the steps' job); it reads the host and carries out one
exact instruction, refusing when the host no longer looks like the facts the decision used. One
module per concern; each host-side operation is registered by ``@command`` (see ``registry``).
"""

from . import (  # noqa: F401
    crontab,
    evidence,
    files,
    hostfacts,
    install,
    launch,
    locks,
    owners,
    preflight,
    probe,
    procfs,
    signals,
    systemd,
    takeover,
)
from .registry import COMMANDS, AgentError, call

__all__ = ["COMMANDS", "AgentError", "call"]
