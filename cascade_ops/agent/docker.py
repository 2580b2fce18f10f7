"""docker as a backend's owner: which container a process (or a ``docker-proxy`` port) belongs to,
and asking dockerd to stop or start it, over dockerd's own API socket from the standard library."""

import json
import urllib.parse
from typing import Any, Dict, List, Optional

from .registry import AgentError
from .unixhttp import UnixHTTPConnection

Json = Dict[str, Any]
DEFAULT_SOCKET = "/var/run/docker.sock"
API_TIMEOUT_S = 10.0


def socket_from_cmdline(cmdline: List[str]) -> Optional[str]:
    """The unix socket a running dockerd serves (its -H / --host), if it names one."""
    for index, arg in enumerate(cmdline):
        value = None
        if arg in ("-H", "--host") and index + 1 < len(cmdline):
            value = cmdline[index + 1]
        elif arg.startswith("--host=") or (arg.startswith("-H") and len(arg) > 2):
            value = arg.split("=", 1)[1] if "=" in arg else arg[2:]
        if value and value.startswith("unix://"):
            return value[len("unix://"):]
    return None


def api(sock: str, method: str, path: str, timeout: float = API_TIMEOUT_S) -> Any:
    """One call to dockerd's API; its JSON answer (None when it has no body)."""
    conn = UnixHTTPConnection(sock, timeout)
    try:
        conn.request(method, path)
        reply = conn.getresponse()
        body = reply.read()
    except OSError as exc:
        raise AgentError("cannot reach dockerd at %s: %s" % (sock, exc)) from None
    finally:
        conn.close()
    if reply.status >= 400:
        try:
            message = json.loads(body).get("message", "")
        except ValueError:
            message = body.decode("utf-8", "replace")[:200]
        raise AgentError("dockerd %s %s: HTTP %d %s" % (method, path.split("?")[0], reply.status, message))
    return json.loads(body) if body.strip() else None


def container_by_port(sock: str, port: int) -> Optional[str]:
    """The id of the container that publishes host ``port`` (what a docker-proxy listener forwards to)."""
    for container in api(sock, "GET", "/containers/json?all=1"):
        if any(p.get("PublicPort") == port for p in container.get("Ports", [])):
            return str(container["Id"])
    return None


def observe(sock: str, container: Optional[str] = None, port: Optional[int] = None) -> Json:
    """The container (by id or name, else the one publishing ``port``) and its state."""
    found: Json = {"kind": "docker", "socket": sock, "reachable": False}
    try:
        ident = container or (container_by_port(sock, port) if port else None)
        if ident is None:
            found["why"] = "no container of the dockerd at %s publishes port %s" % (sock, port)
            return found
        info = api(sock, "GET", "/containers/%s/json" % urllib.parse.quote(ident, safe=""))
    except AgentError as exc:
        found["why"] = str(exc)
        return found
    state = info.get("State", {})
    found.update(container=info["Id"], name=info.get("Name", "").lstrip("/"), main_pid=state.get("Pid", 0),
                 state=state.get("Status", ""), restarts=info.get("RestartCount", 0), reachable=True)
    return found


def stop(sock: str, container: str, timeout: float) -> None:
    """Stop the container (SIGTERM, SIGKILL after ``timeout``): dockerd then does not restart it."""
    api(sock, "POST", "/containers/%s/stop?t=%d" % (urllib.parse.quote(container, safe=""), int(timeout)),
        timeout=timeout + API_TIMEOUT_S)


def start(sock: str, container: str) -> None:
    api(sock, "POST", "/containers/%s/start" % urllib.parse.quote(container, safe=""))
