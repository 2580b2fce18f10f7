"""What clients see while a hung backend is recovered: cascade-ops, the bash runbook and monit, in
the same run, for a stopped backend and a blocked event loop.

    python bench/outage_bench.py [--rate 20] [--timeout 5] [--rounds 3]
                                 [--tools cascade-ops,bash,monit,follower,tick-loop] [--idle 600]

Clients send ``rate`` requests a second, each on a new connection with a ``timeout``, from before
the hang until a while after service is back. The recoverer starts the moment the backend hangs
(monit: its own 1 s cycle with an HTTP check and a 1 s timeout, Debian's ``monit``; follower:
``watch --follow --every 0.5s`` already running; tick-loop: ``invoke watch`` every second from a
shell loop, a stand-in for the finest timer a cron tick could have). Reported per
tool and hang, median over rounds: failed requests by kind (reset, refused, timeout), the time from
the hang to the first answer again, and the slowest answer. Not a timed test: a benchmark.
``--idle SECONDS``: instead, the follower's CPU seconds and peak RSS over that long, healthy.
"""

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


sys.path.insert(0, str(REPO / "bench"))
from recover_bench import BLOCKING_ROUTE, free_port, holders  # noqa: E402

RESTART = """#!/bin/bash
# monit's restart: the runbook without its own health check (monit has decided already).
pids=$(lsof -t -iTCP:%(port)d -sTCP:LISTEN)
[ -n "$pids" ] && kill -9 $pids
cd %(app_dir)s && CASCADE_JWT_SECRET="$(cat %(secret)s)" setsid %(python)s -m uvicorn main:app \\
  --host 127.0.0.1 --port %(port)d </dev/null >>%(log)s 2>&1 &
"""
MONITRC = """set daemon 1
set pidfile %(root)s/monit.pid
set idfile %(root)s/monit.id
set statefile %(root)s/monit.state
set logfile %(root)s/monit.log
check host backend with address 127.0.0.1
  if failed port %(port)d protocol http request "/health" with timeout 1 seconds then exec "%(restart)s"
"""


class Clients:
    """New-connection clients at a constant rate; each outcome with its send time and latency."""

    def __init__(self, port, rate, timeout):
        self.port, self.every, self.timeout = port, 1.0 / rate, timeout
        self.records = []  # (sent, outcome, answered)
        self.stop = threading.Event()
        self.threads = []

    def run(self):
        next_at = time.monotonic()
        while not self.stop.is_set():
            thread = threading.Thread(target=self.one, daemon=True)
            thread.start()
            self.threads.append(thread)
            next_at += self.every
            self.stop.wait(max(0.0, next_at - time.monotonic()))

    def one(self):
        sent = time.monotonic()
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout) as sock:
                sock.settimeout(max(0.01, sent + self.timeout - time.monotonic()))
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
                head = sock.recv(64)
            outcome = "ok" if head.startswith(b"HTTP/1.1 200") else "bad_answer" if head else "closed"
        except ConnectionRefusedError:
            outcome = "refused"
        except ConnectionResetError:
            outcome = "reset"
        except socket.timeout:
            outcome = "timeout"
        except OSError as exc:
            outcome = type(exc).__name__
        self.records.append((sent, outcome, time.monotonic()))


def healthy(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.settimeout(1)
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            return sock.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def wait(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out waiting for " + what)
        time.sleep(0.01)


def hang(port, how, stuck):
    if how == "stopped":
        for pid in holders(port):
            os.kill(pid, signal.SIGSTOP)
    else:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(b"GET /bench/block HTTP/1.1\r\nHost: bench\r\n\r\n")
        stuck.append(sock)


def one_outage(tool, how, env, rate, timeout):
    port = env["port"]
    clients = Clients(port, rate, timeout)
    pacer = threading.Thread(target=clients.run, daemon=True)
    pacer.start()
    time.sleep(0.5)  # clients flowing against a healthy backend first
    stuck = []
    hung_at = time.monotonic()
    hang(port, how, stuck)
    if tool == "cascade-ops":
        subprocess.run(env["invoke"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    elif tool == "bash":
        subprocess.run(env["bash"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait(lambda: healthy(port), 60, "service back (%s, %s)" % (tool, how))
    time.sleep(1.0)  # clients after the recovery too
    clients.stop.set()
    pacer.join()
    for thread in clients.threads:
        thread.join(timeout + 1)
    for sock in stuck:
        sock.close()
    after = [r for r in clients.records if r[0] >= hung_at - timeout]
    failed = {}
    for _, outcome, _ in after:
        if outcome != "ok":
            failed[outcome] = failed.get(outcome, 0) + 1
    # Service is back when a request sent after the hang is answered (one in flight before it may
    # still have been answered by the stale process an instant after the hang).
    answers = [done for sent, outcome, done in after if outcome == "ok" and sent >= hung_at]
    back = min(answers) - hung_at if answers else float("nan")
    slowest = max((done - sent for sent, outcome, done in clients.records if outcome == "ok"), default=0.0)
    return failed, back, slowest


def idle(follow, seconds):
    """The follower's cost while all is well: CPU seconds and peak RSS over ``seconds``."""
    import psutil

    proc = subprocess.Popen(follow, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    watched = psutil.Process(proc.pid)
    time.sleep(3)  # started, imported, first tick done
    cpu_before, peak, started = sum(watched.cpu_times()[:2]), 0, time.monotonic()
    while time.monotonic() - started < seconds:
        peak = max(peak, watched.memory_info().rss)
        time.sleep(1)
    cpu = sum(watched.cpu_times()[:2]) - cpu_before
    proc.terminate()
    proc.wait(30)
    print(
        "follower, healthy, probing every 0.5 s for %.0f s: %.2f CPU seconds (%.2f%% of one core), peak RSS %.1f MB"
        % (seconds, cpu, 100 * cpu / seconds, peak / 1e6)
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tools", default="cascade-ops,bash,monit,follower,tick-loop")
    parser.add_argument("--idle", type=float, default=0.0)
    args = parser.parse_args()
    tools = args.tools.split(",")
    if "monit" in tools and shutil.which("monit") is None:
        print("monit is not installed (apt-get install monit): left out")
        tools.remove("monit")
    root = Path(tempfile.mkdtemp(prefix="cascade-outage-"))
    port = free_port()
    app_dir = root / "app"
    shutil.copytree(REPO / "examples" / "cascade_backend", app_dir)
    with open(app_dir / "main.py", "a") as main_py:
        main_py.write(BLOCKING_ROUTE)
    inventory = root / "inventory.yaml"
    # max_restarts: the resident watchdogs' recoveries of every round would spend the default budget.
    inventory.write_text(
        "all:\n  hosts:\n    bench:\n      port: %d\n      app_dir: '%s'\n      probe_timeout: 1\n"
        "      max_restarts: 1000\n" % (port, app_dir)
    )
    secret = app_dir / ".cascade-ops" / "jwt-secret"
    env = {
        "port": port,
        "invoke": [
            str(Path(sys.executable).with_name("invoke")),
            "-r",
            str(REPO),
            "recover",
            "--inventory",
            str(inventory),
        ],
        "bash": [
            "bash",
            str(REPO / "bench" / "baseline.sh"),
            str(port),
            str(app_dir),
            str(REPO / "playbooks" / "files" / "auth.py"),
            sys.executable,
            str(secret),
            str(root / "bash.log"),
        ],
    }
    subprocess.run(env["invoke"], cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    restart = root / "restart.sh"
    restart.write_text(
        RESTART
        % {
            "port": port,
            "app_dir": app_dir,
            "secret": secret,
            "python": sys.executable,
            "log": root / "monit-backend.log",
        }
    )
    restart.chmod(0o755)
    monitrc = root / "monitrc"
    monitrc.write_text(MONITRC % {"root": root, "port": port, "restart": restart})
    monitrc.chmod(0o600)
    follow = [
        str(Path(sys.executable).with_name("invoke")),
        "-r",
        str(REPO),
        "watch",
        "--follow",
        "--every",
        "0.5s",
        "--inventory",
        str(inventory),
    ]
    residents = {
        "monit": (["monit", "-I", "-c", str(monitrc)], 1.5),
        "follower": (follow, 1.5),
        "tick-loop": (
            [
                "bash",
                "-c",
                "while true; do %s >/dev/null 2>&1; sleep 1; done"
                % " ".join(env["invoke"][:3] + ["watch", "--inventory", str(inventory)]),
            ],
            1.0,
        ),
    }
    results = {}
    resident = None
    try:
        if args.idle:
            idle(follow, args.idle)
            return
        for _ in range(args.rounds):
            for tool in tools:
                for how in ("stopped", "blocked"):
                    if tool in residents:
                        argv, settle = residents[tool]
                        resident = subprocess.Popen(
                            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
                        )
                        time.sleep(settle)  # its first cycle has run: it watches a healthy backend
                    try:
                        results.setdefault((tool, how), []).append(one_outage(tool, how, env, args.rate, args.timeout))
                    finally:
                        if resident is not None:
                            os.killpg(resident.pid, signal.SIGTERM)
                            resident.wait(30)
                            resident = None
                    wait(lambda: healthy(port), 60, "healthy between scenarios")
    finally:
        for pid in holders(port):
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)
    print(
        "%d requests/s, a new connection each, %.0f s client timeout; median of %d rounds"
        % (args.rate, args.timeout, args.rounds)
    )
    print("%-12s %-8s %8s  %-32s %10s %9s" % ("tool", "hang", "failed", "by kind", "back after", "slowest"))
    for (tool, how), runs in results.items():
        totals = [sum(f.values()) for f, _, _ in runs]
        kinds = {}
        for f, _, _ in runs:
            for kind, count in f.items():
                kinds.setdefault(kind, []).append(count)
        by_kind = ", ".join("%s %g" % (k, statistics.median(v + [0] * (len(runs) - len(v)))) for k, v in kinds.items())
        print(
            "%-12s %-8s %8g  %-32s %9.2fs %8.2fs"
            % (
                tool,
                how,
                statistics.median(totals),
                by_kind or "-",
                statistics.median(b for _, b, _ in runs),
                statistics.median(s for _, _, s in runs),
            )
        )


if __name__ == "__main__":
    main()
