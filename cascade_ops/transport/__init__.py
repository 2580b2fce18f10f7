"""How steps reach a host: one ``Transport`` subclass per kind of connection, registered by name.

A third transport is one new module: subclass ``Transport``, declare the host variables it owns,
and add it to ``TRANSPORTS``. The inventory's ``connection`` variable picks one.
"""

from typing import Any, Dict, Iterable, Type

from ..hostvars import VarSpec, parse_choice
from .base import Transport
from .local import LocalTransport
from .ssh import SSHTransport

TRANSPORTS: Dict[str, Type[Transport]] = {cls.name: cls for cls in (LocalTransport, SSHTransport)}

CONNECTION = VarSpec("connection", parse_choice(tuple(TRANSPORTS)), "local")


def transport_vars() -> Dict[str, VarSpec]:
    """The ``connection`` variable and every transport's own variables."""
    specs = {CONNECTION.name: CONNECTION}
    for cls in TRANSPORTS.values():
        specs.update((spec.name, spec) for spec in cls.host_vars)
    return specs


def connect(host_vars: Dict[str, Any], **options: Any) -> Transport:
    """Open the transport a host's ``connection`` variable names; ``options`` are the run's
    (accept_new_host_keys, become_password), each transport taking what it knows."""
    return TRANSPORTS[host_vars["connection"]](host_vars, **options)


def prepare(connections: Iterable[str]) -> None:
    """Once per run, before the hosts are reached in parallel: each transport kind in use loads
    what it needs."""
    for kind in set(connections):
        TRANSPORTS[kind].prepare()


__all__ = ["TRANSPORTS", "LocalTransport", "SSHTransport", "Transport", "connect", "prepare", "transport_vars"]
