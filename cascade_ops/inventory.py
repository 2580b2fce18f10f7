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
from typing import Any, Dict, List, Optional

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
    raw: Dict[str, Dict[str, RawVar]] = field(default_factory=dict)  # each host's merged variables, unresolved

    def command_line(self, name: str, **given: Any) -> Host:
        """The host ``fab -H [USER@]NAME[:PORT]`` means, with what the command line gives (user,
        ssh_port, key_file) winning over the inventory: the inventory host of that name, else the one
        reached at that address (and port), with its groups' variables; else a host described by
        the ``all`` group's variables alone."""
        overrides = {k: RawVar(v, Origin("fab -H", None, os.getcwd())) for k, v in given.items() if v is not None}
        port = given.get("ssh_port")
        match = name if name in self.hosts else next(
            (h.name for h in self.hosts.values() if h.vars["connection"] == "ssh"
             and (h.vars["address"] or h.name) == name and port in (None, h.vars["ssh_port"])), None)
        if match is not None:
            return Host(match, self.hosts[match].groups, resolve(dict(self.raw[match], **overrides), match, VARIABLES,
                                                                 self.path))
        merged = dict(self.base_vars, connection=RawVar("ssh", Origin("fab -H", None, os.getcwd())),
                      address=RawVar(name, Origin("fab -H", None, os.getcwd())), **overrides)
        return Host(name, ("all",), resolve(merged, name, VARIABLES, self.path))

    def select(self, limit: Optional[str] = None) -> List[Host]:
        """Hosts named by ``limit``: comma-separated host names, group names or globs."""
        if limit is None:
            return list(self.hosts.values())
        if not limit.replace(",", "").strip():
            raise ConfigError("names no host or group", field="--limit %r" % limit)
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
    host_paths: Dict[str, List[List[Dict[str, RawVar]]]] = {}  # per listing: its groups' vars, outer first
    host_own: Dict[str, List[Dict[str, RawVar]]] = {}  # per listing: the host's own vars
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
            host_paths.setdefault(host_name, []).append(layers)
            host_own.setdefault(host_name, []).append(own)
            host_groups.setdefault(host_name, []).append(name)
            if host_name not in members:
                members.append(host_name)
        children = expect_mapping(group.get("children"), path, group.lines.get("children"), "children")
        for child_name, child in children.items():
            walk(child_name, child, layers)
            members.extend(h for h in groups[child_name] if h not in members)

    walk("all", data["all"], [])
    if not host_paths:
        raise ConfigError("the inventory defines no hosts", path, data.lines.get("all"), "hosts")
    base_vars = dict(_raw_vars(data["all"].get("vars") if isinstance(data["all"], dict) else None, path, base_dir))
    base_vars.update(cli_vars or {})
    hosts = {}
    raw = {}
    for host_name, paths in host_paths.items():
        raw[host_name] = _merge(host_name, paths, host_own[host_name], cli_vars or {}, path)
        hosts[host_name] = Host(host_name, tuple(host_groups[host_name]),
                                resolve(raw[host_name], host_name, VARIABLES, path))
    return Inventory(path, hosts, groups, base_vars, raw)


def _merge(host: str, paths: List[List[Dict[str, RawVar]]], own: List[Dict[str, RawVar]],
           cli_vars: Dict[str, RawVar], path: str) -> Dict[str, RawVar]:
    """One host's variables: its groups' (outer to inner), its own, then --var.

    A host listed in several groups that give one variable different values is an error (which
    one would win is an accident of the file's order): set it on the host, or in one group.
    The host's own values, from any listing, and --var are never in conflict: they win.
    """
    per_path = []
    for layers in paths:
        effective: Dict[str, RawVar] = {}
        for layer in layers:
            effective.update(layer)
        per_path.append(effective)
    merged: Dict[str, RawVar] = {}
    for effective in per_path:
        merged.update(effective)
    decided = set(cli_vars)
    for listing in own:
        for name, var in listing.items():
            if name in merged and name in decided and name not in cli_vars and merged[name].value != var.value:
                raise ConfigError("host %r is given two different values (%r at line %s, %r at line %s)"
                                  % (host, merged[name].value, merged[name].origin.line, var.value, var.origin.line),
                                  path, var.origin.line, name)
            merged[name] = var
            decided.add(name)
    for name in {n for effective in per_path for n in effective} - decided:
        given = [e[name] for e in per_path if name in e]
        if len({repr(v.value) for v in given}) > 1:
            raise ConfigError("host %r is in groups that give it different values (%s); set it on the host "
                              "itself or in one group" % (host, ", ".join("%r at line %s" % (v.value, v.origin.line)
                                                                           for v in given)),
                              path, given[-1].origin.line, name)
    merged.update(cli_vars)
    return merged

