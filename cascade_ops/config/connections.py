"""The kinds of connection an inventory can name (``connection``), each with the host variables it
owns and where its transport class lives.

A transport is registered by ``"module:Class"`` and imported only when a host uses it, so a local
run never loads Fabric or paramiko. A third kind of connection is one transport module plus one
entry in ``CONNECTIONS``.
"""

from dataclasses import dataclass
from typing import Dict, Tuple

from cascade_ops.config.hostvars import VarSpec
from cascade_ops.config.values import parse_bool, parse_choice, parse_duration, parse_port, parse_str


@dataclass(frozen=True)
class ConnectionKind:
    transport: str  # "module:Class" of its Transport subclass
    host_vars: Tuple[VarSpec, ...] = ()  # the variables it owns, checked with the inventory like every other


SSH_VARS = (
    VarSpec("address", parse_str),  # default: the host's name
    VarSpec("user", parse_str),
    VarSpec("ssh_port", parse_port),  # default: the host's ssh_config Port, else 22
    VarSpec("key_file", parse_str, path="controller"),
    VarSpec("known_hosts", parse_str, path="controller"),  # default: ~/.ssh/known_hosts
    VarSpec("become", parse_bool, False),  # run the agent through sudo
    VarSpec("become_password_file", parse_str, path="controller"),  # a 0600 file: sudo's password
    VarSpec("agent_python", parse_str, "auto"),  # the interpreter running the agent (any Python 3)
    VarSpec("connect_timeout", parse_duration, 10.0),  # TCP connect, banner and authentication
)

CONNECTIONS: Dict[str, ConnectionKind] = {
    "local": ConnectionKind("cascade_ops.transport.local:LocalTransport"),
    "ssh": ConnectionKind("cascade_ops.transport.ssh:SSHTransport", SSH_VARS),
}

CONNECTION = VarSpec("connection", parse_choice(tuple(CONNECTIONS)), "local")


def connection_vars() -> Dict[str, VarSpec]:
    """The ``connection`` variable and every kind's own variables."""
    specs = {CONNECTION.name: CONNECTION}
    for kind in CONNECTIONS.values():
        specs.update((spec.name, spec) for spec in kind.host_vars)
    return specs
