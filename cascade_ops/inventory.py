"""The inventory: hosts, groups and their variables, in the shape Ansible users know.

    all:
      vars: {...}
      hosts:
        NAME: {...host vars...}
      children:
        GROUP: {vars: {...}, hosts: {...}, children: {...}}

Everything is checked when loaded, for every host, so a mistake is reported before any host
is touched.
"""

import fnmatch
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List

from .errors import ConfigError
from .hostvars import SPECS, Host, Origin, RawVar, VarSpec, resolve
from .transport import transport_vars
from .yamlsrc import Located, expect_mapping, load_file

# Every variable an inventory may set: the backend's and scheduler's, and each transport's own.
VARIABLES: Dict[str, VarSpec] = dict(SPECS, **transport_vars())

_GROUP_KEYS = ("vars", "hosts", "children")


@dataclass
class Inventory:
    path: str
    hosts: Dict[str, Host]
    groups: Dict[str, List[str]] = field(default_factory=dict)
    base_vars: Dict[str, RawVar] = field(default_factory=dict)  # all: vars:, then --var

    def adhoc(self, name: str, **connection: Any) -> Host:
        """A host named on the command line (``fab -H``) that the inventory does not list:
        the ``all`` group's variables, --var overrides, and how to reach it."""
        given = {k: RawVar(v, Origin("fab -H", None, os.getcwd())) for k, v in connection.items() if v is not None}
        merged = dict(self.base_vars)
        merged.update(given)
        return Host(name, ("all",), resolve(merged, name, VARIABLES, self.path))

    def select(self, limit=None) -> List[Host]:
        """Hosts named by ``limit``: comma-separated host names, group names or globs."""
        if not limit:
            return list(self.hosts.values())
        chosen: List[str] = []
        for pattern in (p.strip() for p in limit.split(",")):
            if not pattern:
                continue
            names = (self.groups.get(pattern)
                     or ([pattern] if pattern in self.hosts else None)
                     or [n for n in self.hosts if fnmatch.fnmatchcase(n, pattern)]
                     or [n for g, members in self.groups.items() if fnmatch.fnmatchcase(g, pattern)
                         for n in members])
            if not names:
                raise ConfigError("matches no host or group in %s" % self.path, field="--limit %s" % pattern)
            chosen.extend(n for n in names if n not in chosen)
        return [self.hosts[n] for n in chosen]


def _raw_vars(mapping, file, base_dir):
    if mapping is None:
        return {}
    expect_mapping(mapping, file, None, "vars")
    return {key: RawVar(value, Origin(file, mapping.lines.get(key), base_dir)) for key, value in mapping.items()}


def load_inventory(path, cli_vars=None) -> Inventory:
    """Load and fully validate an inventory; ``cli_vars`` (from --var) override every host's."""
    path = os.path.abspath(path)
    base_dir = os.path.dirname(path)
    data = load_file(path)
    if not isinstance(data, Located) or "all" not in data:
        raise ConfigError("the inventory must be a mapping with a top-level 'all:' group", path, 1, "all")
    for key in data:
        if key != "all":
            raise ConfigError("unknown top-level key; put groups under all: children:", path, data.lines[key], key)
    host_layers: Dict[str, List[Dict[str, RawVar]]] = {}
    host_groups: Dict[str, List[str]] = {}
    groups: Dict[str, List[str]] = {}

    def walk(name: str, group: Any, inherited: List[Dict[str, RawVar]]) -> None:
        group = expect_mapping(group, path, data.lines.get("all"), name)
        for key in group:
            if key not in _GROUP_KEYS:
                raise ConfigError("unknown key in group %r (expected %s)" % (name, ", ".join(_GROUP_KEYS)),
                                  path, group.lines.get(key), key)
        layers = inherited + [_raw_vars(group.get("vars"), path, base_dir)]
        members = groups.setdefault(name, [])
        hosts = expect_mapping(group.get("hosts"), path, group.lines.get("hosts"), "hosts")
        for host_name, host_vars in hosts.items():
            if not isinstance(host_name, str) or not host_name:
                raise ConfigError("a host name must be a non-empty string", path, hosts.lines.get(host_name), "hosts")
            if host_vars is not None:
                expect_mapping(host_vars, path, hosts.lines.get(host_name), host_name)
            own = _raw_vars(host_vars, path, base_dir)
            host_layers.setdefault(host_name, []).extend(layers + [own])
            host_groups.setdefault(host_name, []).append(name)
            if host_name not in members:
                members.append(host_name)
        children = expect_mapping(group.get("children"), path, group.lines.get("children"), "children")
        for child_name, child in children.items():
            walk(child_name, child, layers)
            members.extend(h for h in groups[child_name] if h not in members)

    walk("all", data["all"], [])
    if not host_layers:
        raise ConfigError("the inventory defines no hosts", path, data.lines.get("all"), "hosts")
    base_vars = dict(_raw_vars(data["all"].get("vars") if isinstance(data["all"], dict) else None, path, base_dir))
    base_vars.update(cli_vars or {})
    hosts = {}
    for host_name, layers in host_layers.items():
        merged: Dict[str, RawVar] = {}
        for layer in layers + [cli_vars or {}]:
            merged.update(layer)
        hosts[host_name] = Host(host_name, tuple(host_groups[host_name]), resolve(merged, host_name, VARIABLES, path))
    return Inventory(path, hosts, groups, base_vars)
