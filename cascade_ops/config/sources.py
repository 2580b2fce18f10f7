"""Where an inventory comes from, read as Ansible reads it: YAML, INI, an executable script or the
JSON that ``ansible-inventory --list`` prints, plus ``group_vars/`` and ``host_vars/`` beside it.

Every source becomes the same ``Tree``: groups with their variables, their hosts (each with the
variables of that listing) and their children, every value carrying the file and line it came
from. ``inventory`` merges a tree into hosts; nothing here judges the variables themselves.
"""

import ast
import json
import os
import re
import shlex
import string
import subprocess
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from cascade_ops.config.hostvars import Origin, RawVar
from cascade_ops.config.yamlsrc import Located, check_file, expect_mapping, kind_of, load_file, read_text
from cascade_ops.errors import ConfigError

Vars = Dict[str, RawVar]
SCRIPT_TIMEOUT_S = 60.0


@dataclass
class GroupDef:
    vars: Vars = field(default_factory=dict)
    hosts: Dict[str, Vars] = field(default_factory=dict)  # host -> the variables of this listing
    children: List[str] = field(default_factory=list)
    line: Optional[int] = None


Tree = Dict[str, GroupDef]


def _group(tree: Tree, name: str, line: Optional[int] = None) -> GroupDef:
    if name not in tree:
        tree[name] = GroupDef(line=line)
    return tree[name]


def expand_hosts(pattern: str, file: str, line: Optional[int]) -> List[str]:
    """``web[01:03].example.com`` -> web01..web03 (also ``[a:c]`` and ``[1:9:2]``), as Ansible does."""
    if "[" not in pattern:
        return [pattern]
    head, _, rest = pattern.partition("[")
    bounds, close, tail = rest.partition("]")
    parts = bounds.split(":")
    if not close or len(parts) not in (2, 3) or not parts[1]:
        raise ConfigError("a host range is [BEGIN:END] or [BEGIN:END:STEP], got %r" % pattern, file, line, "hosts")
    begin, end = parts[0] or "0", parts[1]
    try:
        step = int(parts[2]) if len(parts) == 3 else 1
        if begin in string.ascii_letters and end in string.ascii_letters:
            letters = string.ascii_letters
            if letters.index(begin) > letters.index(end):
                raise ValueError("begin after end")
            values = list(letters[letters.index(begin) : letters.index(end) + 1 : step])
        else:
            width = len(begin) if begin.startswith("0") and len(begin) > 1 else 0
            if width and width != len(end):
                raise ValueError("zero-padded bounds must have the same width")
            values = [str(n).zfill(width) for n in range(int(begin), int(end) + 1, step)]
    except ValueError as exc:
        raise ConfigError("bad host range in %r: %s" % (pattern, exc), file, line, "hosts") from None
    return [name for value in values for name in expand_hosts(head + value + tail, file, line)]


def _host_and_port(token: str, file: str, line: int) -> Tuple[str, Optional[int]]:
    """``host:2222`` (not an IPv6 address) carries its SSH port, as in Ansible's INI."""
    if token.endswith(":"):
        raise ConfigError("a host pattern must not end in ':' (it introduces a port)", file, line, token)
    if token.count(":") == 1 and re.fullmatch(r".+:\d+", token):
        name, port = token.rsplit(":", 1)
        return name, int(port)
    return token, None


def _ini_value(text: str) -> Any:
    """An INI value as Ansible reads it: a Python literal when it is one (``22``, ``True``,
    ``'quoted'``), else the text."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text
    return value if isinstance(value, (str, int, float, bool, list, dict)) or value is None else text


def parse_ini(path: str) -> Tree:
    """An Ansible INI inventory: ``[group]`` hosts (ranges, ``host:port``, inline ``key=value``),
    ``[group:vars]``, ``[group:children]``; lines before any section are ``ungrouped`` hosts."""
    base = os.path.dirname(path)
    lines = read_text(path, "an inventory file").splitlines()
    tree: Tree = {"all": GroupDef(line=1)}
    pending: Dict[str, int] = {}  # groups named as children or given :vars before being declared
    group, state = "ungrouped", "hosts"
    for number, raw in enumerate(lines, 1):
        text = raw.strip()
        if not text or text[0] in "#;":
            continue
        section = re.fullmatch(r"\[([^\[\]:\s]+)(?::(\w+))?\]", text)
        if section:
            group, state = section.group(1), section.group(2) or "hosts"
            if state not in ("hosts", "vars", "children"):
                raise ConfigError(
                    "section [%s] has unknown type %r (expected vars or children)" % (text[1:-1], state),
                    path,
                    number,
                    text,
                )
            if state != "vars":
                pending.pop(group, None)
            elif group not in tree:
                pending.setdefault(group, number)
            _group(tree, group, number)
            continue
        if text.startswith("["):
            raise ConfigError(
                "invalid section header (no spaces; [NAME], [NAME:vars] or [NAME:children])", path, number, text
            )
        origin = Origin(path, number, base)
        if state == "vars":
            key, sep, value = text.partition("=")
            if not sep or not key.strip():
                raise ConfigError("expected key=value", path, number, text)
            tree[group].vars[key.strip()] = RawVar(_ini_value(value.strip()), origin)
        elif state == "children":
            if not re.fullmatch(r"[^\s\[\]:]+", text):
                raise ConfigError("expected a group name", path, number, text)
            if text not in tree:
                pending.setdefault(text, number)
            _group(tree, text, number)
            if text not in tree[group].children:
                tree[group].children.append(text)
        else:
            try:
                tokens = shlex.split(text, comments=True)
            except ValueError as exc:
                raise ConfigError("cannot split the host line: %s" % exc, path, number, text) from None
            pattern, port = _host_and_port(tokens[0], path, number)
            own: Vars = {} if port is None else {"ansible_port": RawVar(port, origin)}
            for token in tokens[1:]:
                key, sep, value = token.partition("=")
                if not sep or not key:
                    raise ConfigError("expected key=value after the host name, got %r" % token, path, number, tokens[0])
                own[key] = RawVar(_ini_value(value), origin)
            for name in expand_hosts(pattern, path, number):
                _group(tree, group, number).hosts.setdefault(name, {}).update(own)
    for name, number in pending.items():
        raise ConfigError("group %r is used (as a child or by its :vars) but never declared" % name, path, number, name)
    return _rooted(tree)


def _rooted(tree: Tree) -> Tree:
    """Every group is a child of ``all`` unless it is already some group's child, as in Ansible."""
    nested = {child for g in tree.values() for child in g.children}
    for name in tree:
        if name != "all" and name not in nested and name not in tree["all"].children:
            tree["all"].children.append(name)
    return tree


def _yaml_vars(mapping: Any, file: str, base: str, what: str) -> Vars:
    if mapping is None:
        return {}
    mapping = expect_mapping(mapping, file, None, what)
    return {str(k): RawVar(v, Origin(file, mapping.lines.get(k), base)) for k, v in mapping.items()}


_GROUP_KEYS = ("vars", "hosts", "children")


def from_yaml(data: Located, path: str) -> Tree:
    """The YAML shape: ``all:`` (and any other top-level group) with ``vars``, ``hosts``, ``children``;
    host keys may be ranges."""
    base = os.path.dirname(path)
    tree: Tree = {"all": GroupDef(line=data.lines.get("all"))}

    def walk(name: str, body: Any, line: Optional[int]) -> None:
        body = expect_mapping(body, path, line, name)
        for key in body:
            if key not in _GROUP_KEYS:
                raise ConfigError(
                    "unknown key in group %r (expected %s)" % (name, ", ".join(_GROUP_KEYS)),
                    path,
                    body.lines.get(key),
                    key,
                )
        group = _group(tree, name, line)
        group.vars.update(_yaml_vars(body.get("vars"), path, base, "vars"))
        hosts = expect_mapping(body.get("hosts"), path, body.lines.get("hosts"), "hosts")
        for host, host_vars in hosts.items():
            if not isinstance(host, str) or not host:
                raise ConfigError("a host name must be a non-empty string", path, hosts.lines.get(host), "hosts")
            if host_vars is not None:
                expect_mapping(host_vars, path, hosts.lines.get(host), host)
            own = _yaml_vars(host_vars, path, base, host)
            for name_ in expand_hosts(host, path, hosts.lines.get(host)):
                group.hosts.setdefault(name_, {}).update(own)
        children = expect_mapping(body.get("children"), path, body.lines.get("children"), "children")
        for child, child_body in children.items():
            if child not in group.children:
                group.children.append(child)
            walk(child, child_body, children.lines.get(child))

    for name, body in data.items():
        walk(str(name), body, data.lines.get(name))
    return _rooted(tree)


def from_json(doc: Any, source: str) -> Tree:
    """The JSON of a script inventory's ``--list`` (and of ``ansible-inventory --list``)."""
    if not isinstance(doc, dict):
        raise ConfigError("expected a JSON object of groups, got %s" % kind_of(doc), source)
    origin = Origin(source, None, os.path.dirname(source))
    tree: Tree = {"all": GroupDef()}
    meta = doc.get("_meta", {}).get("hostvars", {}) if isinstance(doc.get("_meta"), dict) else {}
    for name, body in doc.items():
        if name == "_meta":
            continue
        group = _group(tree, name)
        if isinstance(body, list):  # the short form: a list of hosts
            body = {"hosts": body}
        if not isinstance(body, dict):
            raise ConfigError("group %r must be an object or a list of hosts" % name, source, None, name)
        for host in body.get("hosts") or []:
            group.hosts.setdefault(str(host), {})
        group.vars.update({str(k): RawVar(v, origin) for k, v in (body.get("vars") or {}).items()})
        for child in body.get("children") or []:
            _group(tree, str(child))
            if child not in group.children:
                group.children.append(str(child))
    for host, values in meta.items():
        if not isinstance(values, dict):
            raise ConfigError("_meta.hostvars.%s must be an object" % host, source)
        listed = [g for g in tree.values() if host in g.hosts] or [_group(tree, "ungrouped")]
        for group in listed:
            group.hosts.setdefault(host, {}).update({str(k): RawVar(v, origin) for k, v in values.items()})
    return _rooted(tree)


def run_script(path: str) -> Tree:
    """An executable inventory: ``PATH --list`` must exit 0 and print the JSON Ansible expects."""
    try:
        done = subprocess.run(
            [path, "--list"],
            capture_output=True,
            text=True,
            timeout=SCRIPT_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
            cwd=os.path.dirname(path),
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError("the inventory script failed to run: %s" % exc, path) from None
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output on stderr"])[-1]
        raise ConfigError("the inventory script exited with %d: %s" % (done.returncode, tail), path)
    try:
        doc = json.loads(done.stdout)
    except ValueError as exc:
        raise ConfigError("the inventory script printed no JSON (%s): %r" % (exc, done.stdout[:80]), path) from None
    return from_json(doc, path)


def _vars_file(path: str) -> Vars:
    data = load_file(path)
    if data is None:
        return {}
    return _yaml_vars(data, path, os.path.dirname(path), os.path.basename(path))


def vars_dir(base: str, kind: str, name: str) -> Vars:
    """``group_vars/NAME`` or ``host_vars/NAME`` beside the inventory: a file (``NAME``,
    ``NAME.yml``, ``.yaml``, ``.json``) and/or a directory of such files, read in name order."""
    found: Vars = {}
    stem = os.path.join(base, kind, name)
    for candidate in (stem, stem + ".yml", stem + ".yaml", stem + ".json"):
        if os.path.isfile(candidate):
            found.update(_vars_file(candidate))
    if os.path.isdir(stem):
        for entry in sorted(os.listdir(stem)):
            path = os.path.join(stem, entry)
            if (
                os.path.isfile(path)
                and not entry.startswith(".")
                and os.path.splitext(entry)[1] in ("", ".yml", ".yaml", ".json")
            ):
                found.update(_vars_file(path))
    return found


def read_source(path: str) -> Tuple[Tree, bool]:
    """The tree of an inventory file, and whether it is Ansible's own (INI, a script, JSON, or YAML
    using ``ansible_*`` variables or vars directories): those default to ``connection: ssh``."""
    check_file(path, "an inventory file")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".json":
        try:
            return from_json(json.loads(read_text(path, "an inventory file")), path), True
        except ValueError as exc:
            raise ConfigError("not valid JSON: %s" % exc, path) from None
    if ext not in (".yml", ".yaml") and os.access(path, os.X_OK):
        return run_script(path), True
    if ext in (".yml", ".yaml"):
        data = load_file(path)
    else:
        try:
            data = load_file(path)
        except ConfigError:
            data = None
        if not isinstance(data, Located):
            return parse_ini(path), True
    if not isinstance(data, Located):
        raise ConfigError("the inventory must be a mapping of groups, such as a top-level 'all:'", path, 1, "all")
    tree = from_yaml(data, path)
    base = os.path.dirname(path)
    ansible = any(
        k.startswith("ansible_")
        for g in tree.values()
        for k in list(g.vars) + [k for own in g.hosts.values() for k in own]
    ) or any(os.path.isdir(os.path.join(base, d)) for d in ("group_vars", "host_vars"))
    return tree, ansible
