"""The host variables: their names, types, defaults, and how layers of them merge.

Names are a contract (playbooks, tests and users rely on them), so an unknown name is an error,
never silently ignored. Values may refer to other variables as ``{name}``.
"""

import math
import os
import re
import string
import sys
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Set, Tuple

from cascade_ops.agent.owners import KINDS as OWNER_KINDS
from cascade_ops.errors import ConfigError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> float:
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
    if not math.isfinite(seconds):
        raise ValueError("expected a finite duration, got %r" % (value,))
    if seconds < 0:
        raise ValueError("must not be negative")
    return seconds


def parse_int(value: Any) -> int:
    # Digits only: " 8000" or "8000 " is a typo to report, not to tidy (a YAML 0x... stays text).
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).isdigit():
        raise ValueError("expected a whole number, got %r" % (value,))
    return int(value)


def parse_positive_int(value: Any) -> int:
    number = parse_int(value)
    if number < 1:
        raise ValueError("must be at least 1")
    return number


def parse_port(value: Any) -> int:
    port = parse_int(value)
    if not 1 <= port <= 65535:
        raise ValueError("a port is 1-65535, got %d" % port)
    return port


def parse_positive_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number, got %r" % value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError("expected a number, got %r" % (value,))
    if not math.isfinite(number):
        raise ValueError("expected a finite number, got %r" % (value,))
    if number <= 0:
        raise ValueError("must be greater than 0")
    return number


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    lowered = str(value).strip().lower()
    if lowered in ("true", "yes", "1", "on"):
        return True
    if lowered in ("false", "no", "0", "off"):
        return False
    raise ValueError("expected true or false, got %r" % (value,))


MAX_VALUE_CHARS = 4096  # a path, a command line, a regex or a URL: longer is a mistake or an attack


def parse_str(value: Any) -> str:
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        from cascade_ops.config.yamlsrc import kind_of

        raise ValueError("expected a string, got %s" % kind_of(value))
    text = str(value)
    if len(text) > MAX_VALUE_CHARS:
        raise ValueError("%d characters: longer than the %d a value may have" % (len(text), MAX_VALUE_CHARS))
    return text


def parse_regex(value: Any) -> str:
    text = parse_str(value)
    try:
        re.compile(text)
    except re.error as exc:
        raise ValueError("not a valid regular expression: %s" % exc)
    return text


def parse_http_path(value: Any) -> str:
    text = parse_str(value)
    if not text.startswith("/") or any(c.isspace() for c in text):
        raise ValueError("expected an absolute URL path such as /health, got %r" % text)
    return text


def parse_serial(value: Any) -> str:
    """Hosts per rolling batch (Ansible's ``serial``): a count of at least 1, or a percentage of the
    hosts above 0 and at most 100 ("25%"); returned as its text."""
    text = "" if isinstance(value, bool) else str(value).strip()
    try:
        if text.endswith("%"):
            if not 0 < float(text[:-1]) <= 100:
                raise ValueError
        elif int(text) < 1:
            raise ValueError
    except ValueError:
        raise ValueError("expected a count of hosts (1, 2, ...) or a percentage (25%%), got %r" % (value,)) from None
    return text


def parse_choice(choices: Tuple[str, ...]) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = parse_str(value)
        if text not in choices:
            raise ValueError("expected %s, got %r" % (" or ".join(choices), text))
        return text

    return parse


def parse_manager(value: Any) -> str:
    """Who starts and stops the backend: ``auto``, ``detached``, or a kind of owner the agent has a
    driver for (read from its table when parsed, so a registered kind is one at once)."""
    return parse_choice(("auto", "detached", *OWNER_KINDS))(value)


def parse_unit(value: Any) -> str:
    """A systemd service name; ``web`` means ``web.service``, as systemctl reads it."""
    text = parse_str(value)
    if not re.fullmatch(r"[A-Za-z0-9:_.\\@-]+", text) or text.startswith("-"):
        raise ValueError("expected a systemd unit name such as web.service, got %r" % text)
    return text if text.endswith(".service") else text + ".service"


@dataclass(frozen=True)
class VarSpec:
    name: str
    parse: Callable[[Any], Any]
    default: Any = None
    required: bool = False
    # Paths relative to the inventory file are made absolute; "host" paths only for local hosts.
    path: Optional[str] = None  # None, "controller" or "host"


# The backend's variables, and the scheduler's; each transport declares its own (see transport/).
SPECS: Dict[str, VarSpec] = {
    s.name: s
    for s in (
        VarSpec("host_timeout", parse_duration, 300.0),  # deadline of a whole run on one host
        VarSpec("port", parse_port, required=True),
        VarSpec("bind_host", parse_str, "127.0.0.1"),
        VarSpec("app_dir", parse_str, required=True, path="host"),
        VarSpec("app", parse_str, "main:app"),
        VarSpec("start_command", parse_str),  # instead of uvicorn; split like a shell
        VarSpec("app_seed", parse_str, path="controller"),  # copied to app_dir when it does not exist (demo)
        VarSpec("python", parse_str),  # default: cascade-ops's own locally, python3 over SSH
        VarSpec("process_match", parse_regex, "uvicorn"),
        VarSpec("manager", parse_manager, "auto"),
        VarSpec("unit", parse_unit),  # the backend's systemd service (created as a transient unit if missing)
        VarSpec("program", parse_str),  # the backend's supervisord program ("group:name" inside a group)
        VarSpec("supervisor_conf", parse_str, path="host"),  # when it cannot be read off supervisord's command line
        VarSpec("container", parse_str),  # the backend's docker container, by name or id
        VarSpec("force", parse_bool, False),
        # Keep the listening socket across a restart (the replacement starts on a copy of it before the
        # stale backend stops): no queued connection is reset, none refused. Off: stop, then start.
        VarSpec("keep_socket", parse_bool, True),
        # For a transient systemd unit cascade-ops creates: a socket unit too, so systemd holds the
        # listener and its queue across every restart of the service (opt-in).
        VarSpec("systemd_socket", parse_bool, False),
        # Whose detached processes may be the backend (default: whom an earlier run started it as, else
        # the run's user); a holder run by anyone else is refused unless force.
        VarSpec("backend_user", parse_str),
        VarSpec("auth_module", parse_str, path="controller"),
        VarSpec("auth_dest", parse_str, "api/auth.py"),
        VarSpec("jwt_secret_file", parse_str, "{state_dir}/jwt-secret", path="host"),
        VarSpec("redis_url", parse_str),
        VarSpec("health_path", parse_http_path, "/health"),
        VarSpec("probe_timeout", parse_positive_float, 1.0),
        # A server that has not accepted the probe's connection this long after it was made runs no event
        # loop: hung, without waiting out probe_timeout (a running loop accepts within milliseconds).
        VarSpec("accept_timeout", parse_duration, 0.2),
        # A backend that accepts connections but answers later than probe_timeout is slow, not hung:
        # reported and left running, unless this says to restart it.
        VarSpec("restart_slow", parse_bool, False),
        VarSpec("grace", parse_duration, 5.0),  # SIGTERM to SIGKILL for a healthy backend being replaced
        VarSpec("hung_grace", parse_duration, 1.0),  # the same for one known hung (stopped, or failed the probe)
        VarSpec("start_timeout", parse_duration, 30.0),
        VarSpec("state_dir", parse_str, "{app_dir}/.cascade-ops", path="host"),
        # At least one: a release that fails must be able to roll back to the previous file.
        VarSpec("keep_backups", parse_positive_int, 5),
        VarSpec("evidence_timeout", parse_duration, 3.0),
        VarSpec("keep_incidents", parse_positive_int, 20),
        VarSpec("history_max_bytes", parse_positive_int, 1 << 20),  # state_dir/history.jsonl before it rotates
        VarSpec("keep_history", parse_positive_int, 3),  # rotated history files kept
        VarSpec("ws_path", parse_http_path),
        VarSpec("citizen_api", parse_str),
        # The watchdog.
        VarSpec("fail_threshold", parse_positive_int, 1),
        VarSpec("max_restarts", parse_positive_int, 3),
        VarSpec("window", parse_duration, 900.0),
        VarSpec("alert_webhook", parse_str),
        VarSpec("alert_format", parse_choice(("json", "slack")), "json"),  # slack: text + blocks
        VarSpec("ping_url", parse_str),  # a dead-man monitor (healthchecks.io): /start, success, /<exit code>
        VarSpec("metrics_file", parse_str, path="host"),  # Prometheus textfile, rewritten each tick
        VarSpec("watch_log_max_bytes", parse_positive_int, 1 << 20),
        VarSpec("watch_log_keep", parse_positive_int, 3),
    )
}


def owner_vars() -> Dict[str, VarSpec]:
    """The variables of each owner kind (its ``hint_vars`` in agent.owners.KINDS) that SPECS does not
    type more closely: a kind registered there brings its variables with it."""
    return {
        name: VarSpec(name, parse_str) for meta in OWNER_KINDS.values() for name in meta.hint_vars if name not in SPECS
    }


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


def parse_cli_vars(pairs: Optional[Iterable[str]]) -> Dict[str, RawVar]:
    """``--var KEY=VALUE`` and ``--var @FILE.yml`` (a YAML mapping) into raw variables, later ones
    winning; each is checked like any other variable, and names its file and line when it fails."""
    from cascade_ops.config.yamlsrc import expect_mapping, load_file

    origin = Origin("--var", None, os.getcwd())
    parsed: Dict[str, RawVar] = {}
    for pair in pairs or ():
        if pair.startswith("@"):
            path = os.path.abspath(os.path.expanduser(pair[1:]))
            if not os.path.isfile(path):
                raise ConfigError("no such variables file", path, field="--var %s" % pair)
            data = expect_mapping(load_file(path), path, 1, "--var %s" % pair)
            for key, value in data.items():
                parsed[str(key)] = RawVar(value, Origin(path, data.lines.get(key), os.path.dirname(path)))
            continue
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError("expected KEY=VALUE, got %r" % pair, "--var")
        parsed[key.strip()] = RawVar(value, origin)
    return parsed


class _Refs(Dict[str, Any]):
    def __missing__(self, key: str) -> Any:
        raise KeyError(key)


def references(text: str) -> List[str]:
    """The variable names a template refers to (``{name}``)."""
    return [field for _, field, _, _ in string.Formatter().parse(text) if field]


def render(
    text: str,
    values: Dict[str, Any],
    file: Optional[str] = None,
    line: Optional[int] = None,
    field: Optional[str] = None,
) -> str:
    """Substitute ``{name}`` references; an unknown name is a ConfigError at the given place."""
    try:
        return text.format_map(_Refs(values))
    except KeyError as exc:
        raise ConfigError("unknown variable {%s}" % exc.args[0], file, line, field)
    except (ValueError, IndexError) as exc:
        raise ConfigError("bad template %r: %s" % (text, exc), file, line, field)


def resolve(
    raw: Dict[str, RawVar], host_name: str, specs: Dict[str, VarSpec], source: Optional[str] = None
) -> Dict[str, Any]:
    """Type-check, fill defaults, expand references and absolutise paths of one host's variables;
    ``specs`` are every known variable (``SPECS`` and the transports')."""
    values: Dict[str, Any] = {}
    origins: Dict[str, Origin] = {}
    for name, var in raw.items():
        spec = specs.get(name)
        if spec is None:
            raise ConfigError(
                "unknown variable (known: %s)" % ", ".join(sorted(specs)), var.origin.file, var.origin.line, name
            )
        if var.value is None:
            continue
        try:
            values[name] = spec.parse(var.value)
        except ValueError as exc:
            raise ConfigError(str(exc), var.origin.file, var.origin.line, name)
        origins[name] = var.origin
    for spec in specs.values():
        if spec.name in values:
            continue
        if spec.required:
            raise ConfigError("required variable is missing for host %r" % host_name, source, field=spec.name)
        values[spec.name] = spec.default
    if values["python"] is None:
        values["python"] = sys.executable if values["connection"] == "local" else "python3"
    _expand(values, origins, specs)
    values["host"] = host_name
    return values


def _absolute(name: str, values: Dict[str, Any], origins: Dict[str, Origin], specs: Dict[str, VarSpec]) -> Any:
    spec, value = specs.get(name), values[name]
    if spec is None or not isinstance(value, str) or os.path.isabs(value):
        return value
    if spec.path == "controller" or (spec.path == "host" and values["connection"] == "local"):
        base = origins[name].base_dir if name in origins else os.getcwd()
        return os.path.normpath(os.path.join(base, os.path.expanduser(value)))
    return value


def _expand(values: Dict[str, Any], origins: Dict[str, Origin], specs: Dict[str, VarSpec]) -> None:
    """Expand ``{name}`` in string values, in dependency order; cycles are errors."""
    done: Set[str] = set()

    def expand(name: str, stack: List[str]) -> None:
        if name in done:
            return
        if name in stack:
            raise ConfigError("variables refer to each other in a cycle: %s" % " -> ".join(stack + [name]), field=name)
        value = values[name]
        if isinstance(value, str) and "{" in value:
            origin = origins.get(name)
            where = (origin.file, origin.line) if origin else (None, None)
            for ref in references(value):
                if ref not in values:
                    raise ConfigError("unknown variable {%s}" % ref, where[0], where[1], name)
                expand(ref, stack + [name])
            values[name] = render(value, values, where[0], where[1], name)
        values[name] = _absolute(name, values, origins, specs)
        done.add(name)

    for name in list(values):
        expand(name, [])
