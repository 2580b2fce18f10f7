"""The host variables: their names, types, defaults, and how layers of them merge.

Names are a contract (playbooks, tests and users rely on them), so an unknown name is an error,
never silently ignored. Values may refer to other variables as ``{name}``.
"""

import os
import string
import sys
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Protocol, Set, Tuple

from cascade_ops.agent.owners import KINDS as OWNER_KINDS
from cascade_ops.config.values import (
    parse_bool,
    parse_choice,
    parse_duration,
    parse_http_path,
    parse_manager,
    parse_port,
    parse_positive_float,
    parse_positive_int,
    parse_regex,
    parse_str,
    parse_unit,
)
from cascade_ops.errors import ConfigError


@dataclass(frozen=True)
class VarSpec:
    name: str
    parse: Callable[[Any], Any]
    default: Any = None
    required: bool = False
    # Paths relative to the inventory file are made absolute; "host" paths only for local hosts.
    path: Optional[str] = None  # None, "controller" or "host"


def var(parse: Callable[[Any], Any], default: Any = None, required: bool = False, path: Optional[str] = None) -> Any:
    """A variable of HostVars: how it is parsed, its default (a template may refer to other
    variables), whether it must be set, and whether it is a path (see VarSpec)."""
    return field(metadata={"spec": (parse, default, required, path)})


@dataclass(frozen=True)
class HostVars(Mapping[str, Any]):
    """One host's resolved variables: the backend's and the scheduler's as typed attributes (mypy
    checks each use), declared once here with how each is parsed; what a transport or an owner kind
    declares of its own is read by name (``vars["key_file"]``). A Mapping too, for what reads
    variables by name: templates, a playbook's ``when:``, a watchdog's host inventory."""

    host: str = field(metadata={})  # the name the inventory gives the host
    connection: str = field(metadata={})  # see config.connections
    host_timeout: float = var(parse_duration, 300.0)  # deadline of a whole run on one host
    port: int = var(parse_port, required=True)
    bind_host: str = var(parse_str, "127.0.0.1")
    app_dir: str = var(parse_str, required=True, path="host")
    app: str = var(parse_str, "main:app")
    start_command: Optional[str] = var(parse_str)  # instead of uvicorn; split like a shell
    app_seed: Optional[str] = var(parse_str, path="controller")  # copied to app_dir when it does not exist (demo)
    python: str = var(parse_str)  # default: cascade-ops's own locally, python3 over SSH
    process_match: str = var(parse_regex, "uvicorn")
    manager: str = var(parse_manager, "auto")
    unit: Optional[str] = var(parse_unit)  # the backend's systemd service (created as a transient unit if missing)
    program: Optional[str] = var(parse_str)  # the backend's supervisord program ("group:name" inside a group)
    supervisor_conf: Optional[str] = var(
        parse_str, path="host"
    )  # when it cannot be read off supervisord's command line
    container: Optional[str] = var(parse_str)  # the backend's docker container, by name or id
    force: bool = var(parse_bool, False)
    # Keep the listening socket across a restart (the replacement starts on a copy of it before the
    # stale backend stops): no queued connection is reset, none refused. Off: stop, then start.
    keep_socket: bool = var(parse_bool, True)
    # For a transient systemd unit cascade-ops creates: a socket unit too, so systemd holds the
    # listener and its queue across every restart of the service (opt-in).
    systemd_socket: bool = var(parse_bool, False)
    # Whose detached processes may be the backend (default: whom an earlier run started it as, else
    # the run's user); a holder run by anyone else is refused unless force.
    backend_user: Optional[str] = var(parse_str)
    auth_module: Optional[str] = var(parse_str, path="controller")
    auth_dest: str = var(parse_str, "api/auth.py")
    jwt_secret_file: str = var(parse_str, "{state_dir}/jwt-secret", path="host")
    redis_url: Optional[str] = var(parse_str)
    health_path: str = var(parse_http_path, "/health")
    probe_timeout: float = var(parse_positive_float, 1.0)
    # A server that has not accepted the probe's connection this long after it was made runs no event
    # loop: hung, without waiting out probe_timeout (a running loop accepts within milliseconds).
    accept_timeout: float = var(parse_duration, 0.2)
    # A backend that accepts connections but answers later than probe_timeout is slow, not hung:
    # reported and left running, unless this says to restart it.
    restart_slow: bool = var(parse_bool, False)
    grace: float = var(parse_duration, 5.0)  # SIGTERM to SIGKILL for a healthy backend being replaced
    hung_grace: float = var(parse_duration, 1.0)  # the same for one known hung (stopped, or failed the probe)
    start_timeout: float = var(parse_duration, 30.0)
    state_dir: str = var(parse_str, "{app_dir}/.cascade-ops", path="host")
    # At least one: a release that fails must be able to roll back to the previous file.
    keep_backups: int = var(parse_positive_int, 5)
    evidence_timeout: float = var(parse_duration, 3.0)
    keep_incidents: int = var(parse_positive_int, 20)
    history_max_bytes: int = var(parse_positive_int, 1 << 20)  # state_dir/history.jsonl before it rotates
    keep_history: int = var(parse_positive_int, 3)  # rotated history files kept
    ws_path: Optional[str] = var(parse_http_path)
    citizen_api: Optional[str] = var(parse_str)
    # The watchdog.
    fail_threshold: int = var(parse_positive_int, 1)
    max_restarts: int = var(parse_positive_int, 3)
    window: float = var(parse_duration, 900.0)
    alert_webhook: Optional[str] = var(parse_str)
    alert_format: str = var(parse_choice(("json", "slack")), "json")  # slack: text + blocks
    ping_url: Optional[str] = var(parse_str)  # a dead-man monitor (healthchecks.io): /start, success, /<exit code>
    metrics_file: Optional[str] = var(parse_str, path="host")  # Prometheus textfile, rewritten each tick
    watch_log_max_bytes: int = var(parse_positive_int, 1 << 20)
    watch_log_keep: int = var(parse_positive_int, 3)

    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)  # transports' and owner kinds' own

    @classmethod
    def of(cls, values: Mapping[str, Any]) -> "HostVars":
        """From every variable by name (as ``resolve`` gives them)."""
        return cls(
            **{name: values[name] for name in _NAMED},
            extra={name: value for name, value in values.items() if name not in _NAMED},
        )

    def __getitem__(self, name: str) -> Any:
        return getattr(self, name) if name in _NAMED else self.extra[name]

    def __iter__(self) -> Iterator[str]:
        yield from _NAMED
        yield from self.extra

    def __len__(self) -> int:
        return len(_NAMED) + len(self.extra)


_NAMED = tuple(f.name for f in fields(HostVars) if f.name != "extra")
# The backend's variables, and the scheduler's, with how each is read; each transport declares its
# own (config.connections), each owner kind its own (owner_vars).
SPECS: Dict[str, VarSpec] = {
    f.name: VarSpec(f.name, *f.metadata["spec"]) for f in fields(HostVars) if "spec" in f.metadata
}


def owner_vars() -> Dict[str, VarSpec]:
    """The variables of each owner kind (its ``hint_vars`` in agent.owners.KINDS) that SPECS does not
    type more closely: a kind registered there brings its variables with it."""
    return {
        name: VarSpec(name, parse_str) for meta in OWNER_KINDS.values() for name in meta.hint_vars if name not in SPECS
    }


class Reachable(Protocol):
    """What the scheduler needs of a machine: its name, and its variables by name for reaching it
    (``connection``, ``host_timeout``, a transport's own)."""

    @property
    def name(self) -> str: ...

    @property
    def vars(self) -> Mapping[str, Any]: ...


@dataclass(frozen=True)
class Host:
    """An inventory host with its resolved variables (``vars.host`` is its name)."""

    name: str
    groups: Tuple[str, ...]
    vars: HostVars


@dataclass(frozen=True)
class Machine:
    """A machine reached for itself (its crontab, its systemd units), not for a backend on it: its
    name and how to reach it."""

    name: str
    vars: Mapping[str, Any]


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
    values: Mapping[str, Any],
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
) -> HostVars:
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
    return HostVars.of(values)


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
