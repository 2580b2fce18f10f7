"""Defaults for every command from a config file and the environment, found the way ansible.cfg is:
the file ``$CASCADE_CONFIG`` names, else ``./cascade.yaml``, else ``~/.cascade.yaml``.

Precedence, for each setting: the command line > the environment (``CASCADE_INVENTORY``, ...) >
the config file > the built-in default. A path in the file is relative to the file.
"""

import os
from dataclasses import dataclass, fields
from typing import Any, Callable, Dict, Mapping, Optional

from cascade_ops.config.values import parse_bool, parse_choice, parse_positive_int, parse_str
from cascade_ops.config.yamlsrc import expect_mapping, load_file
from cascade_ops.errors import ConfigError

FILE_NAMES = ("cascade.yaml",)
HOME_FILE = "~/.cascade.yaml"


@dataclass(frozen=True)
class Settings:
    inventory: str = "inventory.yaml"
    forks: Optional[int] = None  # None: the scheduler's default
    accept_new_host_keys: bool = False  # host key policy: record unknown keys instead of refusing them
    color: str = "auto"  # auto (a terminal without NO_COLOR), always, never
    source: Optional[str] = None  # the config file read, if any


_PARSE: Dict[str, Callable[[Any], Any]] = {
    "inventory": parse_str,
    "forks": parse_positive_int,
    "accept_new_host_keys": parse_bool,
    "color": parse_choice(("auto", "always", "never")),
}
ENV = {
    "inventory": "CASCADE_INVENTORY",
    "forks": "CASCADE_FORKS",
    "accept_new_host_keys": "CASCADE_ACCEPT_NEW_HOST_KEYS",
    "color": "CASCADE_COLOR",
}


def config_path(environ: Mapping[str, str]) -> Optional[str]:
    named = environ.get("CASCADE_CONFIG")
    if named:
        if not os.path.isfile(named):
            raise ConfigError("no such config file", named, field="CASCADE_CONFIG")
        return os.path.abspath(named)
    for candidate in list(FILE_NAMES) + [os.path.expanduser(HOME_FILE)]:
        if os.path.isfile(candidate):
            return os.path.abspath(candidate)
    return None


def load(environ: Optional[Mapping[str, str]] = None) -> Settings:
    """The settings in force: built-in defaults, overridden by the config file, then the environment."""
    environ = os.environ if environ is None else environ
    values: Dict[str, Any] = {}
    path = config_path(environ)
    if path is not None:
        data = load_file(path)
        if data is not None:
            data = expect_mapping(data, path, 1, "settings")
            for key, value in data.items():
                if key not in _PARSE:
                    raise ConfigError(
                        "unknown setting (known: %s)" % ", ".join(sorted(_PARSE)), path, data.lines.get(key), str(key)
                    )
                try:
                    values[key] = _PARSE[key](value)
                except ValueError as exc:
                    raise ConfigError(str(exc), path, data.lines.get(key), key) from None
            if "inventory" in values:
                values["inventory"] = os.path.join(os.path.dirname(path), os.path.expanduser(values["inventory"]))
    for key, name in ENV.items():
        if environ.get(name):
            try:
                values[key] = _PARSE[key](environ[name])
            except ValueError as exc:
                raise ConfigError(str(exc), field=name) from None
    known = {f.name for f in fields(Settings)}
    return Settings(source=path, **{k: v for k, v in values.items() if k in known})
