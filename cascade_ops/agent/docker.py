"""docker as a backend's owner: which container a process (or a ``docker-proxy`` port) belongs to,
and asking dockerd to stop or start it, over dockerd's own API socket from the standard library."""

import json
import urllib.parse
from typing import Any, Dict, List, Optional

from .owners import Hints, OwnerDriver, Seen
from .registry import AgentError, Json
from .unixhttp import UnixHTTPConnection

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
            return value[len("unix://") :]
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
    found.update(
        container=info["Id"],
        name=info.get("Name", "").lstrip("/"),
        main_pid=state.get("Pid", 0),
        state=state.get("Status", ""),
        restarts=info.get("RestartCount", 0),
        reachable=True,
    )
    return found


def stop(sock: str, container: str, timeout: float) -> None:
    """Stop the container (SIGTERM, SIGKILL after ``timeout``): dockerd then does not restart it."""
    api(
        sock,
        "POST",
        "/containers/%s/stop?t=%d" % (urllib.parse.quote(container, safe=""), int(timeout)),
        timeout=timeout + API_TIMEOUT_S,
    )


def start(sock: str, container: str) -> None:
    api(sock, "POST", "/containers/%s/start" % urllib.parse.quote(container, safe=""))


def _arg(cmdline: List[str], flag: str) -> Optional[str]:
    for index, arg in enumerate(cmdline[:-1]):
        if arg in (flag, "-" + flag):
            return cmdline[index + 1]
    return None


def _socket_of(by_pid: Dict[int, Json]) -> str:
    """The API socket of the dockerd running here (its -H), else docker's default."""
    for proc in by_pid.values():
        if proc["comm"] == "dockerd":
            return socket_from_cmdline(proc["cmdline"]) or DEFAULT_SOCKET
    return DEFAULT_SOCKET


class DockerDriver(OwnerDriver):
    """A docker container: its containerd shim is an ancestor of the holder, or a docker-proxy holds
    the port for it; asked over dockerd's API socket."""

    def observe(self, chain: List[Json], index: int, seen: Seen) -> Optional[Json]:
        proc = chain[index]
        if index == 0 and proc["comm"] == "docker-proxy":  # forwards the port into a container's network
            sock = _socket_of(seen.by_pid)
            return dict(
                seen.once(("docker", sock, seen.port), observe, sock, seen.hints.get("container"), seen.port),
                via="docker-proxy pid %d" % seen.pid,
            )
        if not proc["comm"].startswith("containerd-shim"):
            return None
        ident, namespace = _arg(proc["cmdline"], "-id"), _arg(proc["cmdline"], "-namespace")
        if namespace not in (None, "moby"):
            return {
                "kind": "containerd",
                "container": ident,
                "reachable": False,
                "why": "containerd namespace %s is not docker's: cascade-ops cannot ask it" % namespace,
            }
        sock = _socket_of(seen.by_pid)
        return seen.once(("docker", sock, ident), observe, sock, ident)

    def configured(self, hints: Hints, by_pid: Dict[int, Json]) -> Json:
        return observe(_socket_of(by_pid), hints.get("container") or "")

    def stop(self, owner: Json, grace: float, hung: bool) -> Optional[Json]:
        # dockerd kills the container itself after the timeout (0 for a hung one), and sees it go
        stop(owner["socket"], owner["container"], 0 if hung else grace)
        return {"outcomes": [{"pid": owner.get("main_pid", 0), "outcome": "container stopped by dockerd"}]}

    def start(self, owner: Json, launch: Json) -> Json:
        start(owner["socket"], owner["container"])
        return {"transient": False}

    def status(self, owner: Json) -> Json:
        return observe(owner["socket"], owner["container"])


DRIVER = DockerDriver()
