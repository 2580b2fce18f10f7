"""The host variables: their names, types, defaults, and how layers of them merge.

Names are a contract (playbooks, tests and users rely on them), so an unknown name is an error,
never silently ignored. Values may refer to other variables as ``{name}``.
"""

import os
import re
import string
import sys
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple

from .errors import ConfigError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value):
    """Seconds from a number or a string like ``90``, ``1.5s``, ``15m``, ``1h``."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30, 30s, 15m or 1h")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError("expected a duration such as 30, 30s, 15m or 1h, got %r" % value)
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if seconds < 0:
        raise ValueError("must not be negative")
    return seconds


def _int(value):
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip().isdigit():
        raise ValueError("expected a whole number, got %r" % (value,))
    return int(value)


def _positive_int(value):
    number = _int(value)
    if number < 1:
        raise ValueError("must be at least 1")
    return number


def _port(value):
    port = _int(value)
    if not 1 <= port <= 65535:
        raise ValueError("a port is 1-65535, got %d" % port)
    return port


def _float(value):
    if isinstance(value, bool):
        raise ValueError("expected a number, got %r" % value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError("expected a number, got %r" % (value,))
    if number <= 0:
        raise ValueError("must be greater than 0")
    return number


def _bool(value):
    if isinstance(value, bool):
        return value
    lowered = str(value).strip().lower()
    if lowered in ("true", "yes", "1", "on"):
        return True
    if lowered in ("false", "no", "0", "off"):
        return False
    raise ValueError("expected true or false, got %r" % (value,))


def _str(value):
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise ValueError("expected a string, got %s" % type(value).__name__)
    return str(value)


def _regex(value):
    text = _str(value)
    try:
        re.compile(text)
    except re.error as exc:
        raise ValueError("not a valid regular expression: %s" % exc)
    return text


def _http_path(value):
    text = _str(value)
    if not text.startswith("/") or any(c.isspace() for c in text):
        raise ValueError("expected an absolute URL path such as /health, got %r" % text)
    return text


def _connection(value):
    text = _str(value)
    if text not in ("local", "ssh"):
        raise ValueError("expected local or ssh, got %r" % text)
    return text


@dataclass(frozen=True)
class VarSpec:
    name: str
    parse: Callable[[Any], Any]
    default: Any = None
    required: bool = False
    # Paths relative to the inventory file are made absolute; "host" paths only for local hosts.
    path: Optional[str] = None  # None, "controller" or "host"
    help: str = ""


def _default_python():
    return sys.executable


SPECS: Dict[str, VarSpec] = {s.name: s for s in (
    # How to reach the host.
    VarSpec("connection", _connection, "local", help="local or ssh"),
    VarSpec("address", _str, help="SSH address (default: the host's name)"),
    VarSpec("user", _str, help="SSH user"),
    VarSpec("ssh_port", _port, 22, help="SSH port"),
    VarSpec("key_file", _str, path="controller", help="SSH private key"),
    VarSpec("become", _bool, False, help="use sudo on the host"),
    VarSpec("known_hosts", _str, path="controller", help="known_hosts file for host key checks"),
    VarSpec("connect_timeout", parse_duration, 10.0, help="SSH connect, banner and authentication deadline"),
    VarSpec("host_timeout", parse_duration, 300.0, help="deadline of a whole run on one host"),
    # The backend.
    VarSpec("port", _port, required=True, help="TCP port the backend listens on"),
    VarSpec("bind_host", _str, "127.0.0.1", help="address uvicorn binds"),
    VarSpec("app_dir", _str, required=True, path="host", help="the backend's directory"),
    VarSpec("app", _str, "main:app", help="uvicorn application"),
    VarSpec("start_command", _str, help="command line starting the backend instead of uvicorn (split like a shell)"),
    VarSpec("app_seed", _str, path="controller",
            help="directory copied to app_dir when app_dir does not exist yet (the demo)"),
    VarSpec("python", _str, help="interpreter that runs uvicorn (default: cascade-ops's own)"),
    VarSpec("process_match", _regex, "uvicorn", help="regex a holder's command line must match"),
    VarSpec("force", _bool, False, help="also terminate holders that do not match process_match"),
    VarSpec("auth_module", _str, path="controller", help="auth module source to deploy"),
    VarSpec("auth_dest", _str, "api/auth.py", help="where it goes, under app_dir"),
    VarSpec("jwt_secret_file", _str, "{state_dir}/jwt-secret", path="host", help="HS256 secret (0600)"),
    VarSpec("redis_url", _str, help="redis://host:port to verify (optional)"),
    VarSpec("health_path", _http_path, "/health", help="health endpoint"),
    VarSpec("probe_timeout", _float, 1.0, help="deadline of one HTTP probe, seconds"),
    VarSpec("grace", parse_duration, 5.0, help="SIGTERM to SIGKILL, seconds"),
    VarSpec("start_timeout", parse_duration, 30.0, help="deadline for a started backend to be healthy"),
    VarSpec("state_dir", _str, "{app_dir}/.cascade-ops", path="host", help="pid file, logs, backups"),
    VarSpec("keep_backups", _int, 5, help="backups kept per deployed file"),
    VarSpec("evidence_timeout", parse_duration, 3.0, help="time allowed to capture evidence before a kill"),
    VarSpec("keep_incidents", _positive_int, 20, help="incident reports kept in state_dir/incidents"),
    VarSpec("ws_path", _http_path, help="WebSocket endpoint whose handshake verify checks (optional)"),
    VarSpec("citizen_api", _str, help="HTTP citizen directory for the auth module (CASCADE_CITIZEN_API)"),
    # The watchdog.
    VarSpec("fail_threshold", _positive_int, 1, help="consecutive unhealthy ticks before recovering"),
    VarSpec("max_restarts", _positive_int, 3, help="recoveries allowed within window"),
    VarSpec("window", parse_duration, 900.0, help="restart budget window"),
    VarSpec("alert_webhook", _str, help="URL that receives a JSON summary of every recovery"),
    VarSpec("watch_log_max_bytes", _positive_int, 1 << 20, help="watch log size before rotation"),
    VarSpec("watch_log_keep", _positive_int, 3, help="rotated watch logs kept"),
)}


@dataclass(frozen=True)
class Host:
    """A host with its resolved variables (``vars["host"]`` is its name)."""

    name: str
    groups: Tuple[str, ...]
    vars: Dict[str, Any]


@dataclass(frozen=True)
class Origin:
    file: Optional[str]
    line: Optional[int]
    base_dir: str  # relative paths are relative to this


@dataclass(frozen=True)
class RawVar:
    value: Any
    origin: Origin


def parse_cli_vars(pairs):
    """``--var KEY=VALUE`` strings into raw variables (checked like any other)."""
    origin = Origin("--var", None, os.getcwd())
    parsed = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError("expected KEY=VALUE, got %r" % pair, "--var")
        parsed[key.strip()] = RawVar(value, origin)
    return parsed


class _Refs(dict):
    def __missing__(self, key):
        raise KeyError(key)


def references(text):
    """The variable names a template refers to (``{name}``)."""
    return [field for _, field, _, _ in string.Formatter().parse(text) if field]


def render(text, values, file=None, line=None, field=None):
    """Substitute ``{name}`` references; an unknown name is a ConfigError at the given place."""
    try:
        return text.format_map(_Refs(values))
    except KeyError as exc:
        raise ConfigError("unknown variable {%s}" % exc.args[0], file, line, field)
    except (ValueError, IndexError) as exc:
        raise ConfigError("bad template %r: %s" % (text, exc), file, line, field)


def resolve(raw: Dict[str, RawVar], host_name: str, source: Optional[str] = None) -> Dict[str, Any]:
    """Type-check, fill defaults, expand references and absolutise paths of one host's variables."""
    values: Dict[str, Any] = {}
    origins: Dict[str, Origin] = {}
    for name, var in raw.items():
        spec = SPECS.get(name)
        if spec is None:
            raise ConfigError("unknown variable (known: %s)" % ", ".join(sorted(SPECS)),
                              var.origin.file, var.origin.line, name)
        if var.value is None:
            continue
        try:
            values[name] = spec.parse(var.value)
        except ValueError as exc:
            raise ConfigError(str(exc), var.origin.file, var.origin.line, name)
        origins[name] = var.origin
    for spec in SPECS.values():
        if spec.name in values:
            continue
        if spec.required:
            raise ConfigError("required variable is missing for host %r" % host_name, source, field=spec.name)
        values[spec.name] = spec.default
    if values["python"] is None:
        values["python"] = _default_python() if values["connection"] == "local" else "python3"
    _expand(values, origins)
    values["host"] = host_name
    return values


def _absolute(name, values, origins):
    spec, value = SPECS.get(name), values[name]
    if spec is None or not isinstance(value, str) or os.path.isabs(value):
        return value
    if spec.path == "controller" or (spec.path == "host" and values["connection"] == "local"):
        base = origins[name].base_dir if name in origins else os.getcwd()
        return os.path.normpath(os.path.join(base, os.path.expanduser(value)))
    return value


def _expand(values, origins):
    """Expand ``{name}`` in string values, in dependency order; cycles are errors."""
    done = set()

    def expand(name, stack):
        if name in done:
            return
        if name in stack:
            raise ConfigError("variables refer to each other in a cycle: %s" % " -> ".join(stack + [name]),
                              field=name)
        value = values[name]
        if isinstance(value, str) and "{" in value:
            origin = origins.get(name)
            where = (origin.file, origin.line) if origin else (None, None)
            for ref in references(value):
                if ref not in values:
                    raise ConfigError("unknown variable {%s}" % ref, where[0], where[1], name)
                expand(ref, stack + [name])
            values[name] = render(value, values, where[0], where[1], name)
        values[name] = _absolute(name, values, origins)
        done.add(name)

    for name in list(values):
        expand(name, [])
