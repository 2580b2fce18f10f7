"""Recovery and healthy no-op: cascade-ops, the bash baseline and pyinfra, measured in the same run.

    python bench/recover_bench.py [--rounds 5]      (pyinfra: on the PATH or named by $PYINFRA)

Scenarios, each alternating the tools round by round so machine noise hits them alike:
  stopped  the backend is SIGSTOPped; recover it (1 s probe deadline for every tool)
  blocked  its event loop is blocked (a sync sleep in an async handler); recover it
  healthy  the backend is fine; a run must notice and do nothing
Prints the median wall time of each and the ratios to the baseline, and the floor under every
`invoke` command in the same rounds: `invoke --list` (the interpreter, Invoke, our task collection).
"""

import argparse
import compileall
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cascade_ops.agent import procfs  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def holders(port):
    sockets = procfs.listen_sockets(port)
    return sorted(procfs.socket_holders([s["inode"] for s in sockets])[0])


def timed(argv, **kwargs):
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kwargs)
    return time.perf_counter() - started


def stop_backend(port):
    for pid in holders(port):
        os.kill(pid, signal.SIGSTOP)


def block_backend(port, stuck):
    """Leave a request to the blocking route open, and wait until the health path stops answering."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(b"GET /bench/block HTTP/1.1\r\nHost: bench\r\n\r\n")
    stuck.append(sock)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.3) as probe:
                probe.sendall(b"GET /health HTTP/1.1\r\nHost: bench\r\n\r\n")
                probe.recv(1)
        except OSError:
            return
        time.sleep(0.02)
    raise RuntimeError("the backend did not block")


# Appended to the demo's main.py for the benchmark only: a route that blocks the event loop.
BLOCKING_ROUTE = """

import time as _bench_time


@app.get("/bench/block")
async def _bench_block():
    _bench_time.sleep(600)
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    rounds = parser.parse_args().rounds
    # As on a machine that caches bytecode (this one sets PYTHONDONTWRITEBYTECODE).
    compileall.compile_dir(REPO / "cascade_ops", quiet=1)
    compileall.compile_file(REPO / "tasks.py", quiet=1)
    root = Path(tempfile.mkdtemp(prefix="cascade-bench-"))
    port = free_port()
    app_dir = root / "app"
    shutil.copytree(REPO / "examples" / "cascade_backend", app_dir)
    with open(app_dir / "main.py", "a") as main:
        main.write(BLOCKING_ROUTE)
    inventory = root / "inventory.yaml"
    inventory.write_text(
        "all:\n  hosts:\n    bench:\n      port: %d\n      app_dir: '%s'\n"
        "      auth_module: '%s'\n      probe_timeout: 1\n" % (port, app_dir, REPO / "playbooks" / "files" / "auth.py")
    )
    program = [str(Path(sys.executable).with_name("invoke")), "-r", str(REPO)]
    invoke = program + ["recover", "--inventory", str(inventory)]
    baseline = [
        "bash",
        str(REPO / "bench" / "baseline.sh"),
        str(port),
        str(app_dir),
        str(REPO / "playbooks" / "files" / "auth.py"),
        sys.executable,
        str(app_dir / ".cascade-ops" / "jwt-secret"),
        str(root / "baseline.log"),
    ]
    tools = [("cascade-ops", invoke), ("baseline", baseline)]
    pyinfra = os.environ.get("PYINFRA") or shutil.which("pyinfra")
    if pyinfra:
        data = {
            "port": port,
            "app_dir": app_dir,
            "auth_src": REPO / "playbooks" / "files" / "auth.py",
            "python": sys.executable,
            "secret_file": app_dir / ".cascade-ops" / "jwt-secret",
            "log": root / "pyinfra.log",
        }
        tools.append(
            (
                "pyinfra",
                [pyinfra, "-y"]
                + [arg for key, value in data.items() for arg in ("--data", "%s=%s" % (key, value))]
                + ["@local", str(REPO / "bench" / "pyinfra_local_recover.py")],
            )
        )
    scenarios = ("stopped", "blocked", "healthy")
    results = {(scenario, name): [] for scenario in scenarios for name, _ in tools}
    floor = []
    stuck = []
    try:
        timed(invoke, cwd=REPO)  # deploy and start once: the rounds measure recovery only
        for _ in range(rounds):
            for name, argv in tools:
                stop_backend(port)
                results[("stopped", name)].append(timed(argv, cwd=REPO))
                block_backend(port, stuck)
                results[("blocked", name)].append(timed(argv, cwd=REPO))
                results[("healthy", name)].append(timed(argv, cwd=REPO))
            floor.append(timed(program + ["--list"], cwd=REPO))
    finally:
        for sock in stuck:
            sock.close()
        for pid in holders(port):
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)
    names = [name for name, _ in tools]
    print(
        "%-8s %s   (median of %d, wall seconds; ratios to the baseline)"
        % ("scenario", " ".join("%12s" % n for n in names), rounds)
    )
    for scenario in scenarios:
        medians = [statistics.median(results[(scenario, n)]) for n in names]
        base = medians[names.index("baseline")]
        print(
            "%-8s %s   %s"
            % (
                scenario,
                " ".join("%12.3f" % m for m in medians),
                "  ".join("%s %.2fx" % (n, m / base) for n, m in zip(names, medians) if n != "baseline"),
            )
        )
    print("floor: `invoke --list` %.3f s (median), under every cascade-ops figure above" % statistics.median(floor))


if __name__ == "__main__":
    main()
