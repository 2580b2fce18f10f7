"""The verify step: prove the backend works: health, a JWT round trip through the auth router, Redis.

httpx and pyjwt are imported here only, lazily: a healthy no-op run never pays for them.
"""

import atexit
import base64
import contextlib
import functools
import hashlib
import json
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple
from urllib.parse import urlsplit

from cascade_ops import agent
from cascade_ops.agent.probe import probe_address
from cascade_ops.config.hostvars import HostVars
from cascade_ops.config.values import parse_bool
from cascade_ops.model.facts import Diagnosis
from cascade_ops.steps.base import Arg, Args, Context, HostRun, Outcome, Skipped, Step, StepFailed, Unchanged
from cascade_ops.steps.diagnose import left_alone
from cascade_ops.steps.outputs import Check, FileChanged, StopPlanned, Verified
from cascade_ops.transport import Transport

TOKEN_LIFETIME_S = 60
WARM_UP_JOIN_S = 5.0
VERIFY_SUBJECT = "cascade-ops-verify"


def _url(host: str, port: int) -> str:
    return "http://%s:%d" % ("[%s]" % host if ":" in host else host, port)


def _timed(name: str, func: Callable[[], Tuple[bool, str]]) -> Check:
    started = time.monotonic()
    try:
        ok, detail = func()
    except Exception as exc:  # each check reports what it saw instead of aborting the others
        ok, detail = False, "%s: %s" % (type(exc).__name__, exc)
    return Check(name, ok, detail, time.monotonic() - started)


def _excerpt(response: Any) -> str:
    return "HTTP %d %s" % (response.status_code, response.text[:200].replace("\n", " "))


def _check_health(client: Any, v: HostVars, said: Dict[str, Any]) -> Tuple[bool, str]:
    """Healthy as every command judges it (``agent.probe.http_probe``): HTTP 200 on the health path.
    A status in the body ("degraded") is reported, not judged: a restart does not mend a dependency,
    which its own check (redis) judges."""
    response = client.get(v.health_path)
    if response.status_code != 200:
        return False, _excerpt(response)
    with contextlib.suppress(ValueError):
        body = response.json()
        said.update(body if isinstance(body, dict) else {})
    return True, "HTTP 200" + (", status %r" % said["status"] if "status" in said else "")


def _mint(secret: str, subject: str, lifetime: int = TOKEN_LIFETIME_S) -> str:
    import jwt

    now = int(time.time())
    return jwt.encode({"sub": subject, "iat": now, "exp": now + lifetime}, secret, algorithm="HS256")


def _unsigned(subject: str) -> str:
    """A token with ``alg: none``: a server that accepts it accepts anyone."""

    def part(doc: Dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()

    return "%s.%s." % (part({"alg": "none", "typ": "JWT"}), part({"sub": subject, "exp": int(time.time()) + 60}))


def _check_jwt(client: Any, secret: str) -> Tuple[bool, str]:
    token = _mint(secret, VERIFY_SUBJECT)
    verified = client.post("/auth/verify", headers={"Authorization": "Bearer " + token})
    if verified.status_code != 200:
        return False, "/auth/verify: " + _excerpt(verified)
    me = client.get("/auth/me", headers={"Authorization": "Bearer " + token})
    if me.status_code != 200 or me.json().get("sub") != VERIFY_SUBJECT:
        return False, "/auth/me: " + _excerpt(me)
    must_fail = {
        "a token signed with another key": _mint(secrets.token_urlsafe(48), VERIFY_SUBJECT),
        "an expired token": _mint(secret, VERIFY_SUBJECT, lifetime=-60),
        "an alg:none token": _unsigned(VERIFY_SUBJECT),
    }
    for label, bad in must_fail.items():
        refused = client.post("/auth/verify", headers={"Authorization": "Bearer " + bad})
        if refused.status_code != 401:
            return False, "%s got %s" % (label, _excerpt(refused))
    return True, "valid token accepted, sub round-trips via /auth/me; foreign-key, expired, alg:none refused"


_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def websocket_handshake(host: str, port: int, path: str, timeout: float) -> Tuple[bool, str]:
    """(ok, detail) of an RFC 6455 opening handshake: 101 and the right Sec-WebSocket-Accept."""
    key = base64.b64encode(secrets.token_bytes(16)).decode()
    request = (
        "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % (path, host, port, key)
    )
    deadline = time.monotonic() + timeout
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
    lines = head.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    status = lines[0] if lines else ""
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    expected = base64.b64encode(hashlib.sha1((key + _WS_GUID).encode()).digest()).decode()
    if " 101 " not in status + " ":
        return False, "handshake answered %r" % status
    if headers.get("sec-websocket-accept") != expected:
        return False, "101 with a wrong Sec-WebSocket-Accept"
    return True, "101 Switching Protocols"


def redis_ping(url: str, timeout: float) -> str:
    """PING a Redis server with the bare protocol (no client library needed); returns the reply."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), timeout=timeout) as sock:
        if parts.password:
            user = [parts.username] if parts.username else []
            words = ["AUTH"] + user + [parts.password]
            sock.sendall(("*%d\r\n" % len(words) + "".join("$%d\r\n%s\r\n" % (len(w), w) for w in words)).encode())
            if not sock.recv(256).startswith(b"+OK"):
                raise ConnectionError("AUTH refused")
        sock.sendall(b"*1\r\n$4\r\nPING\r\n")
        return sock.recv(256).decode("utf-8", "replace").strip()


def _check_redis(url: str, timeout: float, said: Dict[str, Any]) -> Tuple[bool, str]:
    """Redis answers PING, and the backend's health answer, if it speaks of redis, says it is ok."""
    reply = redis_ping(url, timeout)
    if reply != "+PONG":
        return False, "PING -> %s" % reply
    if "redis" in said and said["redis"] != "ok":
        return False, "PING -> +PONG, but the backend reports redis %r" % said["redis"]
    return True, "PING -> %s" % reply


@functools.cache
def _tls_context() -> Any:
    """One default TLS context for every client: building one costs tens of milliseconds of CPU,
    which a fleet run would pay once per host while holding the GIL."""
    import ssl

    return ssl.create_default_context()


_warming = threading.Lock()
_warmed: List[bool] = []


def warm_up() -> None:
    """Load the clients verification needs (httpx, pyjwt, a TLS context: a third of a second) in the
    background, while a just-started backend boots: verify then starts at once. Once per process:
    a fleet's hosts starting together would otherwise race each other's imports."""
    with _warming:
        if _warmed:
            return
        _warmed.append(True)

    def load() -> None:
        import httpx
        import jwt

        # A client's transport (httpcore, h11) and pyjwt's HMAC load on first use, not on import.
        httpx.Client(trust_env=False, verify=_tls_context()).close()
        key = secrets.token_hex(32)
        jwt.decode(jwt.encode({"sub": "warm-up"}, key, algorithm="HS256"), key, algorithms=["HS256"])

    loader = threading.Thread(target=load, daemon=True, name="verify-warm-up")
    loader.start()
    # A run that ends before verify (a start that failed) must not exit while this thread is inside
    # an extension module's import: interpreter finalization under it can crash the process.
    atexit.register(loader.join, WARM_UP_JOIN_S)


def run_checks(transport: Transport, v: HostVars) -> List[Check]:
    """Every check that applies to this host's variables; each has its own deadline.

    They run from the controller, through a tunnel when the backend only listens on the host.
    """
    import httpx

    timeout = max(v.probe_timeout, 0.5)
    checks = []
    with contextlib.ExitStack() as stack:
        host, port = stack.enter_context(transport.tunnel(probe_address(v.bind_host), v.port))
        client = stack.enter_context(
            httpx.Client(base_url=_url(host, port), timeout=timeout, trust_env=False, verify=_tls_context())
        )
        said: Dict[str, Any] = {}  # the health answer's body, for the checks of what it reports on
        checks.append(_timed("health", lambda: _check_health(client, v, said)))
        if v.auth_module:
            secret = transport.call(agent.files.read_secret, path=v.jwt_secret_file)
            checks.append(_timed("jwt", lambda: _check_jwt(client, secret)))
        ws_path = v.ws_path
        if ws_path:
            checks.append(_timed("websocket", lambda: websocket_handshake(host, port, ws_path, timeout)))
        if v.redis_url:
            parts = urlsplit(v.redis_url)
            redis_host, redis_port = stack.enter_context(
                transport.tunnel(parts.hostname or "127.0.0.1", parts.port or 6379)
            )
            url = parts._replace(
                netloc="%s%s:%d"
                % (parts.netloc.rpartition("@")[0] + "@" if "@" in parts.netloc else "", redis_host, redis_port)
            ).geturl()
            checks.append(_timed("redis", lambda: _check_redis(url, timeout, said)))
    return checks


@dataclass(frozen=True)
class VerifyFacts:
    pending: bool  # a restart or a changed file is planned
    left_alone: Optional[Diagnosis]  # the diagnosis, when it left the backend alone
    checks: Optional[Tuple[Check, ...]]  # None: not read


class Verify(Step[VerifyFacts, None]):
    """Run the checks after a change; with ``always: true`` (or ``invoke verify``) on every run."""

    name = "verify"
    args = {"always": Arg(default="false", parse=parse_bool)}

    def rollback_args(self, args: Args) -> Optional[Args]:
        return dict(args, always=True)  # the previous files are proven to serve, whatever the playbook says

    def gather(self, run: HostRun, args: Args) -> VerifyFacts:
        pending = run.last(StopPlanned) is not None or bool(run.every(FileChanged))
        alone = left_alone(run)
        # The checks are read only when the plan can use them: not before a dry run's planned changes,
        # nor on a backend the diagnosis left alone (unless ``always``).
        skip = (run.check and pending) or (not args["always"] and alone is not None)
        return VerifyFacts(pending, alone, None if skip else tuple(run_checks(run.transport, run.vars)))

    def plan(self, facts: VerifyFacts, args: Args, ctx: Context) -> Outcome[None]:
        if ctx.check and facts.pending:
            return Skipped("would verify after the planned changes")
        if not args["always"] and facts.left_alone is not None:
            if facts.left_alone.slow:
                return Unchanged("%s; left running, not verified" % facts.left_alone.verdict())
            return Unchanged("healthy and unchanged (invoke verify runs every check)")
        assert facts.checks is not None
        summary = "; ".join(c.describe() for c in facts.checks)
        verified = (Verified(facts.checks),)
        if not all(c.ok for c in facts.checks):
            raise StepFailed(summary, register=verified)
        return Unchanged(summary, register=verified)
