"""Safe YAML loading that remembers where every mapping key was written.

Errors about inventory and playbooks must name the file and line; PyYAML drops positions once it
builds Python objects, so mappings are built as ``Located`` dicts carrying each key's line.
"""

import os
import re
import stat
from typing import Any, Dict, Iterable, List, Optional

import yaml

from cascade_ops.errors import ConfigError

_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


_DECIMAL = re.compile(r"^[-+]?[0-9]+$")


class Located(dict):
    """A dict from YAML with ``file``, ``line`` (of the mapping) and ``lines[key]``."""

    file: Optional[str] = None
    line: Optional[int] = None

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.lines: Dict[Any, int] = {}

    def where(self, key: Any = None) -> Dict[str, Any]:
        return {"file": self.file, "line": self.lines.get(key, self.line)}


class LocatedList(list):
    """A list from YAML with ``lines[i]``, the line of each item."""

    def __init__(self, *args: Iterable[Any]):
        super().__init__(*args)
        self.lines: List[int] = []


class _Loader(_Base):
    pass


def _construct_sequence(loader: Any, node: Any) -> LocatedList:
    items = LocatedList(loader.construct_object(child, deep=True) for child in node.value)
    items.lines = [child.start_mark.line + 1 for child in node.value]
    return items


def _construct_mapping(loader: Any, node: Any) -> Located:
    loader.flatten_mapping(node)
    mapping = Located()
    mapping.file = loader.name
    mapping.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        try:
            hash(key)
        except TypeError:
            raise ConfigError("a mapping key must be a plain value", loader.name, line)
        if key in mapping:
            # YAML would silently keep the last one; a duplicated key is almost always a mistake.
            raise ConfigError("duplicate key (first at line %d)" % mapping.lines[key], loader.name, line, key)
        if value_node.tag == "tag:yaml.org,2002:int" and not _DECIMAL.match(value_node.value):
            # YAML 1.1 reads 0x1F90, 0o17, 1_000 and 1:30 as numbers: keep them as written, so a
            # check that wants a plain whole number reports them instead of accepting a surprise.
            mapping[key] = value_node.value
        else:
            mapping[key] = loader.construct_object(value_node, deep=True)
        mapping.lines[key] = line
    return mapping


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


# Bounds on what a configuration file may cost to read: an inventory of 10,000 hosts with a dozen
# variables each is well within them; a hostile file (a 50 MB inventory, an alias "billion laughs")
# is refused in bounded memory and time instead of growing the run to gigabytes.
MAX_FILE_BYTES = 2 << 20
MAX_NODES = 200_000  # YAML nodes once aliases are expanded


def check_file(path: str, what: str = "a configuration file") -> None:
    """A configuration file is a regular file of at most MAX_FILE_BYTES; else ConfigError."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise ConfigError(
            "no such file (expected %s)" % what
            if isinstance(exc, FileNotFoundError)
            else "cannot read: %s" % exc.strerror,
            str(path),
        )
    if stat.S_ISDIR(info.st_mode):
        raise ConfigError("is a directory, not %s" % what, str(path))
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError("is a device, a pipe or a socket, not %s" % what, str(path))
    if info.st_size > MAX_FILE_BYTES:
        raise ConfigError(
            "%d bytes: larger than the %d MiB limit for %s" % (info.st_size, MAX_FILE_BYTES >> 20, what), str(path)
        )


def read_text(path: str, what: str = "a configuration file") -> str:
    """A configuration file's text (see ``check_file``), UTF-8; else ConfigError."""
    check_file(path, what)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError("cannot read: %s" % exc.strerror, str(path))
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError("larger than the %d MiB limit for %s" % (MAX_FILE_BYTES >> 20, what), str(path))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError("not UTF-8 text (byte %d)" % exc.start, str(path))


def _expanded_size(node: Any, memo: Dict[int, int]) -> int:
    """How many nodes ``node`` stands for once every alias is expanded (computed once per node, so
    a billion-laughs document is measured in microseconds)."""
    known = memo.get(id(node))
    if known is not None:
        return known
    memo[id(node)] = 1  # a recursive alias counts once: it is refused by the constructor, not here
    children: Any = node.value if isinstance(node.value, list) else ()
    total = 1
    for child in children:
        if isinstance(child, tuple):
            total += _expanded_size(child[0], memo) + _expanded_size(child[1], memo)
        else:
            total += _expanded_size(child, memo)
        if total > MAX_NODES:
            break
    memo[id(node)] = total
    return total


def load_file(path: str) -> Any:
    """Parse one YAML file safely; syntax errors become ConfigError with the line."""
    text = read_text(path)
    loader = _Loader(text)
    loader.name = str(path)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, {}) > MAX_NODES:
            raise ConfigError(
                "more than %d YAML values once aliases are expanded: too large for a configuration "
                "file (an alias bomb?)" % MAX_NODES,
                str(path),
                node.start_mark.line + 1,
            )
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        context = ""
        if exc.context and exc.context_mark and exc.context_mark is not mark:
            context = " (%s at line %d)" % (exc.context, exc.context_mark.line + 1)
        raise ConfigError(
            "YAML syntax: %s%s" % (exc.problem or exc, context), str(path), mark.line + 1 if mark else None
        )
    except yaml.YAMLError as exc:
        raise ConfigError("YAML: %s" % exc, str(path))
    finally:
        loader.dispose()


def kind_of(value: Any) -> str:
    """What a parsed value is, in the words of YAML and JSON, not of this module's classes."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing (null)"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string"}.get(type(value), "a value")


def expect_mapping(value: Any, file: Optional[str], line: Optional[int], field: Optional[str]) -> Located:
    """``value`` when it is a mapping from YAML (an empty one when absent), else a ConfigError."""
    if value is None:
        return Located()
    if not isinstance(value, dict):
        raise ConfigError("expected a mapping, got %s" % kind_of(value), file, line, field)
    return value if isinstance(value, Located) else Located(value)
