"""How steps reach a host: one ``Transport`` subclass per kind of connection.

The kinds, their variables and where each class lives are in ``config.connections``; a class is
imported the first time a host uses it. ``connect`` returns a connected transport.
"""

import importlib
from typing import Any, Iterable, Mapping, Optional, Type

from cascade_ops.config.connections import CONNECTIONS
from cascade_ops.transport.base import ConnectOptions, Transport


def transport_class(kind: str) -> Type[Transport]:
    """The Transport subclass of a connection kind, imported on first use."""
    module, _, name = CONNECTIONS[kind].transport.partition(":")
    cls: Type[Transport] = getattr(importlib.import_module(module), name)
    return cls


def connect(host_vars: Mapping[str, Any], options: Optional[ConnectOptions] = None) -> Transport:
    """Open the transport a host's ``connection`` variable names, with the run's ``options``."""
    transport = transport_class(host_vars["connection"])(host_vars, options or ConnectOptions())
    transport.connect()
    return transport


def prepare(connections: Iterable[str]) -> None:
    """Once per run, before the hosts are reached in parallel: each kind in use is imported here
    (imports racing in many threads wait on each other's module locks)."""
    for kind in set(connections):
        transport_class(kind)


__all__ = ["ConnectOptions", "Transport", "connect", "prepare", "transport_class"]
