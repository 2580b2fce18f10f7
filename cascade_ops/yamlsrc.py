"""Safe YAML loading that remembers where every mapping key was written.

Errors about inventory and playbooks must name the file and line; PyYAML drops positions once it
builds Python objects, so mappings are built as ``Located`` dicts carrying each key's line.
"""

import re
from typing import Any, Optional

import yaml

from .errors import ConfigError

_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


_DECIMAL = re.compile(r"^[-+]?[0-9]+$")


class Located(dict):
    """A dict from YAML with ``file``, ``line`` (of the mapping) and ``lines[key]``."""

    file = None
    line = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.lines = {}

    def where(self, key=None):
        return {"file": self.file, "line": self.lines.get(key, self.line)}


class LocatedList(list):
    """A list from YAML with ``lines[i]``, the line of each item."""

    def __init__(self, *args):
        super().__init__(*args)
        self.lines = []


class _Loader(_Base):
    pass


def _construct_sequence(loader, node):
    items = LocatedList(loader.construct_object(child, deep=True) for child in node.value)
    items.lines = [child.start_mark.line + 1 for child in node.value]
    return items


def _construct_mapping(loader, node):
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


def load_file(path):
    """Parse one YAML file safely; syntax errors become ConfigError with the line."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError("cannot read: %s" % exc.strerror, str(path))
    except UnicodeDecodeError as exc:
        raise ConfigError("not UTF-8 text (byte %d)" % exc.start, str(path))
    loader = _Loader(text)
    loader.name = str(path)
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        context = ""
        if exc.context and exc.context_mark and exc.context_mark is not mark:
            context = " (%s at line %d)" % (exc.context, exc.context_mark.line + 1)
        raise ConfigError("YAML syntax: %s%s" % (exc.problem or exc, context), str(path),
                          mark.line + 1 if mark else None)
    except yaml.YAMLError as exc:
        raise ConfigError("YAML: %s" % exc, str(path))
    finally:
        loader.dispose()


def expect_mapping(value: Any, file: Optional[str], line: Optional[int], field: Optional[str]) -> Located:
    """``value`` when it is a mapping from YAML (an empty one when absent), else a ConfigError."""
    if value is None:
        return Located()
    if not isinstance(value, dict):
        raise ConfigError("expected a mapping, got %s" % type(value).__name__, file, line, field)
    return value if isinstance(value, Located) else Located(value)
