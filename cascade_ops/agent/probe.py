"""Network probes from the host itself: an HTTP GET with one deadline, a test bind of the port."""

import socket
import time
from typing import Any, Callable, Optional, Tuple

from .procfs import GONE_STATES, read_stat
from .registry import Json, command


def probe_address(bind_host: str) -> str:
    """Where to reach a server bound to ``bind_host`` from the same host."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(bind_host, bind_host)


@command
def http_probe(host: str, port: int, path: str, timeout: float, accept_timeout: Optional[float] = None) -> Json:
    """GET ``path`` with one deadline for connect, send and the whole response.

    A raw socket instead of http.client: it keeps the hot path free of imports, and a single
    deadline is exact (http.client's timeout is per operation, so a trickling server outlives it).
    A completed TCP handshake proves nothing: a hung server's kernel still accepts.

    ``accept_timeout``: a server that has not accept()ed the connection that long after it was made
    runs no event loop (blocked, spinning, stopped): "timeout" then, without waiting out ``timeout``.
    A running loop accepts within milliseconds, however slow its handlers.
    """
    started = time.monotonic()
    deadline = started + timeout
    result: Json = {"url": "http://%s:%d%s" % (host if ":" not in host else "[%s]" % host, port, path)}

    def finish(**fields: Any) -> Json:
        result.update(fields)
        result["elapsed_s"] = round(time.monotonic() - started, 4)
        return result

    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except ConnectionRefusedError:
        return finish(ok=False, error="refused", detail="connection refused")
    except socket.timeout:
        return finish(ok=False, error="timeout", detail="no TCP connection within %.2fs" % timeout)
    except OSError as exc:
        return finish(ok=False, error="error", detail=str(exc))
    chunks = []
    connected = time.monotonic()
    watching = accept_timeout is not None  # until the server is seen to accept
    try:
        with sock:
            request = "GET %s HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n\r\n" % (path, host, port)
            sock.sendall(request.encode())
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return _no_answer(sock, timeout, finish)
                sock.settimeout(min(remaining, ACCEPT_POLL_S) if watching else remaining)
                try:
                    chunk = sock.recv(65536)
                except socket.timeout:
                    waited = time.monotonic() - connected
                    if not watching or waited < ACCEPT_FIRST_LOOK_S:
                        continue  # a healthy server has answered by now: /proc is read only past this
                    accepted = server_accepted(sock)
                    if accepted is False and waited >= (accept_timeout or 0):
                        return finish(
                            ok=False,
                            error="timeout",
                            accepted=False,
                            detail=(
                                "not accepted within %.2fs: nothing takes connections (a blocked, spinning or "
                                "stopped event loop)" % waited
                            ),
                        )
                    if accepted is not False:
                        watching = False
                        if accepted:
                            result["accept_s"] = round(waited, 3)
                    continue
                if not chunk:
                    break
                chunks.append(chunk)
                if sum(map(len, chunks)) > 1 << 20:
                    break
    except OSError as exc:
        return finish(ok=False, error="error", detail=str(exc))
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return finish(ok=False, error="bad_response", detail=repr(raw[:200]))
    excerpt = body[:512].decode("utf-8", "replace")
    if status != 200:
        return finish(ok=False, error="bad_status", status=status, body=excerpt)
    return finish(ok=True, status=status, body=excerpt)


ACCEPT_WINDOW_S = 0.2  # a running event loop accepts a new connection within milliseconds
ACCEPT_POLL_S = 0.01  # how often, while no answer came, the probe looks whether it was accepted
ACCEPT_FIRST_LOOK_S = 0.02  # before this, no look: a healthy answer is usually in by then


def _no_answer(sock: socket.socket, timeout: float, finish: Callable[..., Json]) -> Json:
    """No complete answer within the deadline. "slow" when the server still accepts connections (its
    event loop runs: a slow handler answers late), "timeout" when it does not (a blocked, spinning or
    stopped loop: the kernel queues connections, nothing takes them). The probe's own connection may
    have been accepted just before the loop blocked, so a fresh one decides."""
    if server_accepted(sock) is False:
        return finish(
            ok=False,
            error="timeout",
            accepted=False,
            detail="connected, but never accepted: no HTTP response within %.2fs" % timeout,
        )
    accepts = accepts_now(sock.getpeername(), sock.family, ACCEPT_WINDOW_S)
    if accepts:
        return finish(
            ok=False,
            error="slow",
            accepted=True,
            detail="no complete HTTP response within %.2fs, but new connections are accepted "
            "(slow, not hung)" % timeout,
        )
    return finish(
        ok=False,
        error="timeout",
        accepted=accepts,
        detail="no HTTP response within %.2fs, and a new connection was not accepted within %.1fs"
        % (timeout, ACCEPT_WINDOW_S),
    )


def accepts_now(peer: Tuple[Any, ...], family: int, window: float) -> Optional[bool]:
    """Whether the server at ``peer`` accept()s a new connection within ``window`` seconds."""
    deadline = time.monotonic() + window
    try:
        with socket.socket(family, socket.SOCK_STREAM) as fresh:
            fresh.settimeout(window)
            fresh.connect(peer)
            while True:
                accepted = server_accepted(fresh)
                if accepted is not False or time.monotonic() >= deadline:
                    return accepted
                time.sleep(0.005)
    except OSError:
        return None


def _hex_endpoint(address: Tuple[Any, ...], family: int) -> str:
    """An endpoint as /proc/net/tcp{,6} writes it (addresses in the kernel's byte order)."""
    packed = socket.inet_pton(family, address[0])
    if family == socket.AF_INET6:
        words = [packed[i : i + 4] for i in range(0, 16, 4)]
        text = "".join(w[::-1].hex() for w in words)
    else:
        text = packed[::-1].hex()
    return "%s:%04X" % (text.upper(), address[1])


def server_accepted(sock: socket.socket) -> Optional[bool]:
    """Whether the server side of our connection has been accept()ed: until then the kernel keeps it
    in the listener's queue, and /proc/net/tcp shows it with inode 0. None when it cannot be told."""
    try:
        family = sock.family
        ours, theirs = _hex_endpoint(sock.getsockname(), family), _hex_endpoint(sock.getpeername(), family)
        with open("/proc/net/tcp6" if family == socket.AF_INET6 else "/proc/net/tcp") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 9 and fields[1] == theirs and fields[2] == ours:
                    return fields[9] != "0"
    except (OSError, ValueError):
        return None
    return None


# A refused connection means "not listening yet": poll it fast. Any other failed answer comes from
# a server that is up but unwell: back off, so a start-up wait never floods it with requests.
REFUSED_POLL_S = 0.02
ANSWER_BACKOFF_S = (0.05, 0.1, 0.2, 0.4)


@command
def wait_healthy(
    pid: Optional[int], bind_host: str, port: int, path: str, timeout: float, probe_timeout: float
) -> Json:
    """Poll a just-started backend on the host itself until its health path answers 200.

    Gives up early when the process ``pid`` exits (no point waiting out the deadline for a crash);
    None when an owner (systemd, supervisord, dockerd, a gunicorn master) started it.
    """
    started = time.monotonic()
    deadline = started + timeout
    host = probe_address(bind_host)
    last: Optional[Json] = None
    answers = 0
    while True:
        stat = read_stat(pid) if pid is not None else None
        if pid is not None and (stat is None or stat[1][0] in GONE_STATES):
            return {
                "ok": False,
                "reason": "exited",
                "elapsed_s": round(time.monotonic() - started, 3),
                "last_probe": last,
            }
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            reason = "slow" if last is not None and last.get("error") == "slow" else "timeout"
            return {
                "ok": False,
                "reason": reason,
                "elapsed_s": round(time.monotonic() - started, 3),
                "last_probe": last,
            }
        last = http_probe(host, port, path, min(probe_timeout, remaining))
        if last["ok"]:
            return {"ok": True, "elapsed_s": round(time.monotonic() - started, 3), "last_probe": last}
        if last["error"] == "refused":
            pause = REFUSED_POLL_S
        else:
            pause = ANSWER_BACKOFF_S[min(answers, len(ANSWER_BACKOFF_S) - 1)]
            answers += 1
        time.sleep(min(pause, max(0.0, deadline - time.monotonic())))


@command
def port_free(bind_host: str, port: int) -> bool:
    """True when a fresh listener could bind now (SO_REUSEADDR, as uvicorn sets it)."""
    family = socket.AF_INET6 if ":" in bind_host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((bind_host, port))
        return True
    except OSError:
        return False
    finally:
        sock.close()


@command
def wait_port_free(bind_host: str, port: int, timeout: float, poll_interval: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while not port_free(bind_host, port):
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll_interval)
    return True
