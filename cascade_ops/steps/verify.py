"""Step 6: prove the backend works: health, a JWT round trip through the auth router, Redis.

httpx and pyjwt are imported here only, lazily: a healthy no-op run never pays for them.
"""

import secrets
import socket
import time
from dataclasses import dataclass
from typing import List
from urllib.parse import urlsplit

from ..agent import probe_address
from .base import Arg, Skipped, Step, StepFailed, Unchanged

TOKEN_LIFETIME_S = 60
VERIFY_SUBJECT = "cascade-ops-verify"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    elapsed_s: float

    def describe(self) -> str:
        return "%s %s (%s, %.0f ms)" % (self.name, "ok" if self.ok else "FAILED", self.detail, self.elapsed_s * 1000)


def base_url(v) -> str:
    host = probe_address(v["bind_host"])
    return "http://%s:%d" % ("[%s]" % host if ":" in host else host, v["port"])


def _timed(name, func):
    started = time.monotonic()
    try:
        ok, detail = func()
    except Exception as exc:  # each check reports what it saw instead of aborting the others
        ok, detail = False, "%s: %s" % (type(exc).__name__, exc)
    return Check(name, ok, detail, time.monotonic() - started)


def _excerpt(response) -> str:
    return "HTTP %d %s" % (response.status_code, response.text[:200].replace("\n", " "))


def _check_health(client, v):
    response = client.get(v["health_path"])
    if response.status_code != 200:
        return False, _excerpt(response)
    status = response.json().get("status")
    return status == "ok", "status %r" % status


def _mint(secret: str, subject: str) -> str:
    import jwt
    now = int(time.time())
    return jwt.encode({"sub": subject, "iat": now, "exp": now + TOKEN_LIFETIME_S}, secret, algorithm="HS256")


def _check_jwt(client, secret):
    token = _mint(secret, VERIFY_SUBJECT)
    verified = client.post("/auth/verify", headers={"Authorization": "Bearer " + token})
    if verified.status_code != 200:
        return False, "/auth/verify: " + _excerpt(verified)
    me = client.get("/auth/me", headers={"Authorization": "Bearer " + token})
    if me.status_code != 200 or me.json().get("sub") != VERIFY_SUBJECT:
        return False, "/auth/me: " + _excerpt(me)
    forged = _mint(secrets.token_urlsafe(48), VERIFY_SUBJECT)
    refused = client.post("/auth/verify", headers={"Authorization": "Bearer " + forged})
    if refused.status_code != 401:
        return False, "a token signed with another key got " + _excerpt(refused)
    return True, "valid token accepted, sub round-trips via /auth/me, foreign-key token refused"


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


def _check_redis(url, timeout):
    reply = redis_ping(url, timeout)
    return reply == "+PONG", "PING -> %s" % reply


def run_checks(transport, v) -> List[Check]:
    """Every check that applies to this host's variables; each has its own deadline."""
    import httpx
    timeout = max(v["probe_timeout"], 0.5)
    checks = []
    with httpx.Client(base_url=base_url(v), timeout=timeout, trust_env=False) as client:
        checks.append(_timed("health", lambda: _check_health(client, v)))
        if v["auth_module"]:
            secret = transport.agent("read_secret", path=v["jwt_secret_file"])
            checks.append(_timed("jwt", lambda: _check_jwt(client, secret)))
    if v["redis_url"]:
        checks.append(_timed("redis", lambda: _check_redis(v["redis_url"], timeout)))
    return checks


class Verify(Step):
    """Run the checks after a change; with ``always: true`` (or ``invoke verify``) on every run."""

    name = "verify"
    args = {"always": Arg(default="false", parse=lambda s: s.lower() in ("true", "yes", "1"))}

    def plan(self, run, args, facts):
        pending = run.restart_planned or run.changed_files
        if run.check and pending:
            return Skipped("would verify after the planned changes")
        healthy = run.diagnosis is not None and run.diagnosis.healthy
        if not args["always"] and healthy and not pending:
            return Unchanged("healthy and unchanged (invoke verify runs every check)")
        checks = run_checks(run.transport, run.vars)
        summary = "; ".join(c.describe() for c in checks)
        if not all(c.ok for c in checks):
            raise StepFailed(summary)
        return Unchanged(summary)
