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
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from cascade_ops.config.connections import connection_vars
from cascade_ops.config.hostvars import SPECS, Host, Origin, RawVar, VarSpec, owner_vars, resolve
from cascade_ops.config.sources import read_source, vars_dir
from cascade_ops.errors import ConfigError


def variables() -> Dict[str, VarSpec]:
    """Every variable an inventory may set: the backend's and scheduler's, each owner kind's and
    each transport's own."""
    return dict(SPECS, **owner_vars(), **connection_vars())


# Where an SSH host's (address, port) is reached, once ssh_config applies (``fab -H`` gives one).
Endpoint = Callable[[str, Optional[int]], Tuple[str, int]]


def _literal(address: str, port: Optional[int]) -> Tuple[str, int]:
    """An address and port as written (no ssh_config to apply)."""
    return address, port or 22


@dataclass
class Inventory:
    path: str
    hosts: Dict[str, Host]
    groups: Dict[str, List[str]] = field(default_factory=dict)
    base_vars: Dict[str, RawVar] = field(default_factory=dict)  # all: vars:, then --var
    raw: Dict[str, Dict[str, RawVar]] = field(default_factory=dict)  # each host's merged variables, unresolved
    direct: Dict[str, List[str]] = field(default_factory=dict)  # each group's own hosts (not its children's)
    children: Dict[str, List[str]] = field(default_factory=dict)

    def ungrouped(self) -> List[str]:
        """Hosts in no group but ``all`` (Ansible's implicit ``ungrouped``)."""
        grouped = {h for g, members in self.groups.items() if g not in ("all", "ungrouped") for h in members}
        return [h for h in self.hosts if h not in grouped]

    def _shape(self) -> Dict[str, Any]:
        """Groups as ``ansible-inventory --list`` shows them: every group under ``all``, hosts in no
        other group under ``ungrouped``, each group with its own hosts and its children."""
        direct = {g: [h for h in hosts] for g, hosts in self.direct.items() if g != "all"}
        children = {g: list(c) for g, c in self.children.items()}
        loose = self.ungrouped()
        if loose:
            direct["ungrouped"] = sorted(set(direct.get("ungrouped", [])) | set(loose), key=list(self.hosts).index)
            if "ungrouped" not in children.setdefault("all", []):
                children["all"].insert(0, "ungrouped")
        return {"direct": direct, "children": children}

    def to_ansible_json(self) -> Dict[str, Any]:
        """``ansible-inventory --list``'s document, with each host's resolved variables as hostvars."""
        shape = self._shape()
        doc: Dict[str, Any] = {"_meta": {"hostvars": {n: _plain(h.vars) for n, h in self.hosts.items()}}}
        for group in ["all"] + [g for g in self.groups if g != "all"]:
            body: Dict[str, Any] = {}
            if shape["direct"].get(group):
                body["hosts"] = shape["direct"][group]
            if shape["children"].get(group):
                body["children"] = shape["children"][group]
            if body or group == "all":
                doc[group] = body
        if "ungrouped" in shape["direct"] and "ungrouped" not in doc:
            doc["ungrouped"] = {"hosts": shape["direct"]["ungrouped"]}
        return doc

    def graph(self, group: str = "all") -> str:
        """``ansible-inventory --graph``'s tree."""
        shape = self._shape()
        lines = []

        def draw(name: str, depth: int) -> None:
            lines.append("%s@%s:" % ("  |" * depth + ("--" if depth else ""), name))
            for child in shape["children"].get(name, []):
                draw(child, depth + 1)
            for host in shape["direct"].get(name, []):
                lines.append("%s--%s" % ("  |" * (depth + 1), host))

        if group not in self.groups and group != "ungrouped":
            raise ConfigError("no such group in %s" % self.path, field=group)
        draw(group, 0)
        return "\n".join(lines)

    def command_line(
        self, name: str, alias: Optional[str] = None, endpoint: Optional[Endpoint] = None, **given: Any
    ) -> Host:
        """The host ``fab -H [USER@]NAME[:PORT]`` means, with what the command line gives (user,
        ssh_port, key_file) winning over the inventory. ``name`` is the address ssh_config resolved
        ``alias`` (what was typed) to; ``endpoint(address, port)`` resolves an inventory host's
        address and port the same way. The inventory host named ``alias`` (or ``name``), else the
        one host reached at that address and port, with its groups' variables. Several, or none
        while hosts share that address on other ports: refused, naming them, never another host.
        No inventory host at that address at all: a host described by the ``all`` group's variables."""
        overrides = {k: RawVar(v, Origin("fab -H", None, os.getcwd())) for k, v in given.items() if v is not None}
        match = next((n for n in (alias, name) if n in self.hosts), None)
        if match is None:
            match = self._by_address(name, alias, given.get("ssh_port"), endpoint or _literal)
        if match is not None:
            return Host(
                match,
                self.hosts[match].groups,
                resolve(dict(self.raw[match], **overrides), match, variables(), self.path),
            )
        merged = dict(
            self.base_vars,
            connection=RawVar("ssh", Origin("fab -H", None, os.getcwd())),
            address=RawVar(name, Origin("fab -H", None, os.getcwd())),
            **overrides,
        )
        return Host(name, ("all",), resolve(merged, name, variables(), self.path))

    def select(self, limit: Optional[str] = None) -> List[Host]:
        """Hosts named by ``limit``, as Ansible's ``--limit`` reads it: patterns (host names, group
        names or globs) separated by ``,`` or ``:``; ``!PATTERN`` leaves its hosts out, ``&PATTERN``
        keeps only hosts it also names, and ``@FILE`` reads patterns from a file (one per line, as
        a retry file has them), in inventory order."""
        if limit is None:
            return list(self.hosts.values())
        patterns = self._patterns(limit)
        if not patterns:
            raise ConfigError("names no host or group", field="--limit %r" % limit)
        wanted: List[str] = []
        for pattern in (p for p in patterns if p[0] not in "!&"):
            wanted.extend(n for n in self._named(pattern) if n not in wanted)
        if not wanted:  # only exclusions and intersections: they apply to every host, as in Ansible
            wanted = list(self.hosts)
        for pattern in patterns:
            if pattern[0] == "&":
                kept = set(self._named(pattern[1:]))
                wanted = [n for n in wanted if n in kept]
            elif pattern[0] == "!":  # leaving out what is not there is no mistake (Ansible agrees)
                dropped = set(self._named(pattern[1:], strict=False))
                wanted = [n for n in wanted if n not in dropped]
        if not wanted:
            raise ConfigError("leaves no host to act on in %s" % self.path, field="--limit %s" % limit)
        return [self.hosts[n] for n in self.hosts if n in wanted]

    def _patterns(self, limit: str) -> List[str]:
        patterns: List[str] = []
        for part in (p.strip() for p in re.split(r"[,:]", limit)):
            if part.startswith("@"):
                from cascade_ops.config.yamlsrc import read_text

                patterns.extend(
                    line.strip()
                    for line in read_text(part[1:], "a limit file").splitlines()
                    if line.strip() and not line.strip().startswith("#")
                )
            elif part:
                patterns.append(part)
        return patterns

    def _named(self, pattern: str, strict: bool = True) -> List[str]:
        if not pattern:
            raise ConfigError("an empty pattern after ! or &", field="--limit")
        names = (
            self.groups.get(pattern)
            or ([pattern] if pattern in self.hosts else None)
            or [n for n in self.hosts if fnmatch.fnmatchcase(n, pattern)]
            or [n for g, members in self.groups.items() if fnmatch.fnmatchcase(g, pattern) for n in members]
        )
        if not names and strict:
            raise ConfigError("matches no host or group in %s" % self.path, field="--limit %s" % pattern)
        return names or []

    def _by_address(self, address: str, alias: Optional[str], port: Optional[int], endpoint: Endpoint) -> Optional[str]:
        """The one SSH host of the inventory reached at ``address`` (and ``port``, when given)."""
        reached = {
            h.name: endpoint(h.vars["address"] or h.name, h.vars["ssh_port"])
            for h in self.hosts.values()
            if h.vars.connection == "ssh"
        }
        there = {
            n: p
            for n, (a, p) in reached.items()
            if a == address or (alias is not None and (self.hosts[n].vars["address"] or n) == alias)
        }
        found = [n for n, p in there.items() if port is None or p == port]
        if len(found) == 1:
            return found[0]
        named = "; ".join("%s (%s:%d)" % (n, reached[n][0], p) for n, p in there.items())
        typed = "%s%s" % (alias or address, ":%d" % port if port else "")
        if found:
            raise ConfigError(
                "is reached at %s by %d inventory hosts: %s; name one (its inventory name, or "
                "host:port)" % (address, len(found), named),
                self.path,
                field="-H %s" % typed,
            )
        if there:
            raise ConfigError(
                "no inventory host is reached at %s:%d; at that address: %s" % (address, port or 22, named),
                self.path,
                field="-H %s" % typed,
            )
        return None


# Ansible's connection variables and ours; other ``ansible_*`` variables are accepted and ignored.
ANSIBLE_VARS = {
    "ansible_host": "address",
    "ansible_ssh_host": "address",
    "ansible_port": "ssh_port",
    "ansible_ssh_port": "ssh_port",
    "ansible_user": "user",
    "ansible_ssh_user": "user",
    "ansible_ssh_private_key_file": "key_file",
    "ansible_connection": "connection",
    "ansible_become": "become",
    "ansible_python_interpreter": "agent_python",
}
_CONNECTIONS = {"ssh": "ssh", "paramiko": "ssh", "smart": "ssh", "local": "local"}
_BECOME_INSTEAD = "use --ask-become-pass (-K), or become_password_file (a file of mode 0600)"
_SSH_INSTEAD = "log in with a key (key_file, or IdentityFile in ~/.ssh/config)"
PASSWORD_VARS = {
    "ansible_become_password": _BECOME_INSTEAD,
    "ansible_become_pass": _BECOME_INSTEAD,
    "ansible_sudo_pass": _BECOME_INSTEAD,
    "ansible_password": _SSH_INSTEAD,
    "ansible_ssh_pass": _SSH_INSTEAD,
    "ansible_ssh_password": _SSH_INSTEAD,
}


def ours(layer: Dict[str, RawVar]) -> Dict[str, RawVar]:
    """One layer of variables with Ansible's names mapped to ours (and its other ``ansible_*`` dropped)."""
    mapped: Dict[str, RawVar] = {}
    for name, var in layer.items():
        if not name.startswith("ansible_"):
            mapped.setdefault(name, var)
            continue
        if name in PASSWORD_VARS:
            raise ConfigError(
                "a password is not read from an inventory (anyone who can read it has it): %s" % PASSWORD_VARS[name],
                var.origin.file,
                var.origin.line,
                name,
            )
        target = ANSIBLE_VARS.get(name)
        if target is None:
            continue
        if target == "connection":
            kind = _CONNECTIONS.get(str(var.value))
            if kind is None:
                raise ConfigError(
                    "ansible_connection %r is not one cascade-ops can use (ssh or local)" % (var.value,),
                    var.origin.file,
                    var.origin.line,
                    name,
                )
            var = RawVar(kind, var.origin)
        if target in layer and layer[target].value != var.value:
            raise ConfigError(
                "both %s (%r) and %s (%r) are set" % (name, var.value, target, layer[target].value),
                var.origin.file,
                var.origin.line,
                name,
            )
        mapped[target] = var
    return mapped


def load_inventory(path: str, cli_vars: Optional[Dict[str, RawVar]] = None) -> Inventory:
    """Load and fully validate an inventory (see ``config.sources`` for the formats); ``cli_vars``
    (from --var) override every host's. Variables of ``group_vars/`` and ``host_vars/`` beside it
    win over the file's own, as in Ansible."""
    path = os.path.abspath(path)
    base_dir = os.path.dirname(path)
    tree, ansible = read_source(path)
    for group in tree.values():
        group.vars = ours(group.vars)
    group_files = {name: ours(vars_dir(base_dir, "group_vars", name)) for name in tree}
    host_files = {host: ours(vars_dir(base_dir, "host_vars", host)) for g in tree.values() for host in g.hosts}
    if ansible:  # Ansible reaches every host over SSH unless told otherwise
        tree["all"].vars = dict(
            {"connection": RawVar("ssh", Origin(path, tree["all"].line, base_dir))}, **tree["all"].vars
        )
    host_paths: Dict[str, List[List[Dict[str, RawVar]]]] = {}  # per listing: its groups' vars, outer first
    host_own: Dict[str, List[Dict[str, RawVar]]] = {}  # per listing: the host's own vars
    host_groups: Dict[str, List[str]] = {}
    groups: Dict[str, List[str]] = {}

    def walk(name: str, trail: List[str]) -> None:
        if name in trail:
            raise ConfigError(
                "group %r is its own ancestor (%s)" % (name, " > ".join(trail + [name])), path, tree[name].line, name
            )
        group = tree[name]
        chain = trail + [name]
        # Ansible's order: the file's group vars (outer to inner) < group_vars/all < group_vars/GROUP (outer
        # to inner); so group_vars/all.yml beats a child group's vars written in the inventory file.
        layers = [tree[g].vars for g in chain] + [group_files[g] for g in ["all"] + chain[1:]]
        members = groups.setdefault(name, [])
        for host_name, own in group.hosts.items():
            host_paths.setdefault(host_name, []).append(layers)
            host_own.setdefault(host_name, []).append(ours(own))
            host_groups.setdefault(host_name, []).append(name)
            if host_name not in members:
                members.append(host_name)
        for child in group.children:
            walk(child, chain)
            members.extend(h for h in groups[child] if h not in members)

    walk("all", [])
    if not host_paths:
        raise ConfigError("the inventory defines no hosts", path, tree["all"].line, "hosts")
    base_vars = dict(tree["all"].vars, **group_files["all"])
    base_vars.update(cli_vars or {})
    hosts = {}
    raw = {}
    for host_name, paths in host_paths.items():
        # host_vars/ wins over the host's own lines, as in Ansible; --var over everything
        raw[host_name] = _merge(
            host_name, paths, host_own[host_name], dict(host_files[host_name], **(cli_vars or {})), path
        )
        hosts[host_name] = Host(
            host_name, tuple(host_groups[host_name]), resolve(raw[host_name], host_name, variables(), path)
        )
    return Inventory(
        path,
        hosts,
        groups,
        base_vars,
        raw,
        {g: list(d.hosts) for g, d in tree.items()},
        {g: list(d.children) for g, d in tree.items()},
    )


def _plain(values: Mapping[str, Any]) -> Dict[str, Any]:
    """Variables as JSON values (a path or a duration stays what it was parsed into)."""
    return {
        k: v if isinstance(v, (str, int, float, bool, list, dict)) or v is None else str(v) for k, v in values.items()
    }


def _merge(
    host: str,
    paths: List[List[Dict[str, RawVar]]],
    own: List[Dict[str, RawVar]],
    cli_vars: Dict[str, RawVar],
    path: str,
) -> Dict[str, RawVar]:
    """One host's variables: its groups' (outer to inner), its own, then ``cli_vars`` (host_vars/, --var).

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
                raise ConfigError(
                    "host %r is given two different values (%r at line %s, %r at line %s)"
                    % (host, merged[name].value, merged[name].origin.line, var.value, var.origin.line),
                    path,
                    var.origin.line,
                    name,
                )
            merged[name] = var
            decided.add(name)
    for name in {n for effective in per_path for n in effective} - decided:
        given = [e[name] for e in per_path if name in e]
        if len({repr(v.value) for v in given}) > 1:
            raise ConfigError(
                "host %r is in groups that give it different values (%s); set it on the host "
                "itself or in one group" % (host, ", ".join("%r at line %s" % (v.value, v.origin.line) for v in given)),
                path,
                given[-1].origin.line,
                name,
            )
    merged.update(cli_vars)
    return merged
