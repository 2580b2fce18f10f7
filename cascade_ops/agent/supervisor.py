"""supervisord as a backend's owner: which program a process is, and asking supervisord to stop or
start it, over its own XML-RPC control socket (what supervisorctl speaks), from the standard library."""

import configparser
import http.client
import os
import xmlrpc.client
from typing import Any, Dict, List, Optional, Tuple

from .owners import Hints, OwnerDriver, Seen
from .registry import AgentError, Json
from .unixhttp import UnixHTTPConnection

RPC_TIMEOUT_S = 10.0
# Where supervisord looks for its configuration when not given -c (its own search order).
DEFAULT_CONFS = (
    "../etc/supervisord.conf",
    "../supervisord.conf",
    "supervisord.conf",
    "etc/supervisord.conf",
    "/etc/supervisord.conf",
    "/etc/supervisor/supervisord.conf",
)


def conf_from_cmdline(cmdline: List[str], cwd: str) -> Optional[str]:
    """The configuration file a running supervisord was given (-c / --configuration), made absolute."""
    for index, arg in enumerate(cmdline):
        value = None
        if arg in ("-c", "--configuration") and index + 1 < len(cmdline):
            value = cmdline[index + 1]
        elif arg.startswith("--configuration="):
            value = arg.split("=", 1)[1]
        elif arg.startswith("-c") and len(arg) > 2:
            value = arg[2:]
        if value:
            return os.path.normpath(os.path.join(cwd, value))
    for candidate in DEFAULT_CONFS:
        path = os.path.normpath(os.path.join(cwd, candidate))
        if os.path.isfile(path):
            return path
    return None


def _server(conf: str) -> Tuple[str, str, Optional[Tuple[str, str]]]:
    """("unix"|"inet", socket path or host:port, credentials) read from supervisord's own config."""
    parser = configparser.RawConfigParser()
    try:
        with open(conf) as f:
            parser.read_file(f)
    except (OSError, configparser.Error) as exc:
        raise AgentError("cannot read supervisord configuration %s: %s" % (conf, exc)) from None
    here = os.path.dirname(os.path.abspath(conf))
    for section, kind in (("unix_http_server", "unix"), ("inet_http_server", "inet")):
        if parser.has_section(section):
            where = parser.get(section, "file" if kind == "unix" else "port", fallback="")
            where = where.replace("%(here)s", here)
            user = parser.get(section, "username", fallback=None)
            auth = (user, parser.get(section, "password", fallback="")) if user else None
            if where:
                return kind, where if kind == "inet" else os.path.join(here, where), auth
    raise AgentError("%s has no [unix_http_server] or [inet_http_server]: supervisord cannot be asked" % conf)


class _UnixTransport(xmlrpc.client.Transport):
    def __init__(self, path: str):
        super().__init__()
        self.socket_path = path

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        return UnixHTTPConnection(self.socket_path, RPC_TIMEOUT_S)


def rpc(conf: str) -> Any:
    """A proxy to the supervisord that ``conf`` configures."""
    kind, where, auth = _server(conf)
    credentials = "%s:%s@" % auth if auth else ""
    if kind == "unix":
        return xmlrpc.client.ServerProxy("http://%slocalhost/RPC2" % credentials, transport=_UnixTransport(where))
    host = where if where.split(":")[0] not in ("", "*") else "127.0.0.1:" + where.split(":")[-1]
    return xmlrpc.client.ServerProxy("http://%s%s/RPC2" % (credentials, host))


def _ask(conf: str, method: str, *args: Any) -> Any:
    try:
        return getattr(rpc(conf).supervisor, method)(*args)
    except xmlrpc.client.Fault as exc:
        raise AgentError("supervisord (%s) refused %s: %s" % (conf, method, exc.faultString)) from None
    except (OSError, xmlrpc.client.ProtocolError, http.client.HTTPException) as exc:
        raise AgentError("cannot reach supervisord of %s: %s" % (conf, exc)) from None


def observe(pids: List[int], conf: str, program: Optional[str] = None) -> Json:
    """The program among ``pids`` (a holder and its ancestors below supervisord), or the one named."""
    found: Json = {"kind": "supervisor", "conf": conf, "reachable": False}
    try:
        table = _ask(conf, "getAllProcessInfo")
    except AgentError as exc:
        found["why"] = str(exc)
        return found
    for info in table:
        name = info["name"] if info["group"] == info["name"] else "%s:%s" % (info["group"], info["name"])
        if (program is not None and name == program) or (program is None and info["pid"] and info["pid"] in pids):
            found.update(program=name, main_pid=info["pid"], state=info["statename"], reachable=True)
            return found
    found["why"] = (
        "supervisord of %s has no program %r" % (conf, program)
        if program
        else "no program of the supervisord of %s runs pid %s" % (conf, pids[0] if pids else "?")
    )
    return found


def _change(conf: str, method: str, program: str, already: str) -> None:
    """Ask without waiting; the fault saying it is so already (``already``) is success."""
    try:
        _ask(conf, method, program, False)
    except AgentError as exc:
        if already not in str(exc):
            raise


def stop(conf: str, program: str) -> None:
    """Ask supervisord to stop ``program`` without waiting: supervisord then does not respawn it."""
    _change(conf, "stopProcess", program, "NOT_RUNNING")


def start(conf: str, program: str) -> None:
    _change(conf, "startProcess", program, "ALREADY_STARTED")


def _is_supervisord(proc: Json) -> bool:
    return proc["comm"] == "supervisord" or any(os.path.basename(a) == "supervisord" for a in proc["cmdline"][:2])


def _conf_of(proc: Json, hints: Hints) -> Optional[str]:
    if hints.get("supervisor_conf"):
        return hints["supervisor_conf"]
    try:
        cwd = os.readlink("/proc/%d/cwd" % proc["pid"])
    except OSError:
        cwd = "/"
    return conf_from_cmdline(proc["cmdline"], cwd)


class SupervisorDriver(OwnerDriver):
    """A supervisord program: supervisord is an ancestor of the holder; asked over its control socket."""

    def observe(self, chain: List[Json], index: int, seen: Seen) -> Optional[Json]:
        proc = chain[index]
        if not _is_supervisord(proc):
            return None
        conf = _conf_of(proc, seen.hints)
        if conf is None:
            return {
                "kind": "supervisor",
                "supervisord": proc["pid"],
                "reachable": False,
                "why": "cannot tell which configuration supervisord pid %d runs: set supervisor_conf" % proc["pid"],
            }
        below = [p["pid"] for p in chain[:index]]
        return dict(seen.once(("supervisor", conf, tuple(below)), observe, below, conf), supervisord=proc["pid"])

    def configured(self, hints: Hints, by_pid: Dict[int, Json]) -> Json:
        conf = hints.get("supervisor_conf")
        if not conf:
            daemons = [p for p in by_pid.values() if _is_supervisord(p)]
            if len(daemons) != 1:
                return {
                    "kind": "supervisor",
                    "program": hints.get("program"),
                    "reachable": False,
                    "why": "%d supervisord processes run here: set supervisor_conf" % len(daemons),
                }
            conf = _conf_of(daemons[0], hints)
        if conf is None:
            return {
                "kind": "supervisor",
                "program": hints.get("program"),
                "reachable": False,
                "why": "cannot tell which configuration supervisord runs: set supervisor_conf",
            }
        return observe([], conf, hints.get("program") or "")

    def stop(self, owner: Json, grace: float, hung: bool) -> Optional[Json]:
        stop(owner["conf"], owner["program"])
        return None

    def start(self, owner: Json, launch: Json) -> Json:
        start(owner["conf"], owner["program"])
        return {"transient": False}

    def status(self, owner: Json) -> Json:
        return observe([], owner["conf"], owner["program"])


DRIVER = SupervisorDriver()
