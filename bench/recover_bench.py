"""Recovery and healthy no-op, cascade-ops against the bash baseline, measured in the same run.

    python bench/recover_bench.py [--rounds 5]

Scenarios, each alternating cascade-ops and baseline rounds so machine noise hits both alike:
  hung     the backend is SIGSTOPped; recover it (1 s probe deadline on both sides)
  healthy  the backend is fine; a run must notice and do nothing
Prints the median wall time of each and the ratio cascade-ops / baseline.
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
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, **kwargs)
    return time.perf_counter() - started


def stop_backend(port):
    for pid in holders(port):
        os.kill(pid, signal.SIGSTOP)


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
    inventory = root / "inventory.yaml"
    inventory.write_text("all:\n  hosts:\n    bench:\n      port: %d\n      app_dir: '%s'\n"
                         "      auth_module: '%s'\n      probe_timeout: 1\n"
                         % (port, app_dir, REPO / "playbooks" / "files" / "auth.py"))
    invoke = [str(Path(sys.executable).with_name("invoke")), "-r", str(REPO), "recover",
              "--inventory", str(inventory)]
    baseline = ["bash", str(REPO / "bench" / "baseline.sh"), str(port), str(app_dir),
                str(REPO / "playbooks" / "files" / "auth.py"), sys.executable,
                str(app_dir / ".cascade-ops" / "jwt-secret"), str(root / "baseline.log")]
    results = {("hung", "cascade-ops"): [], ("hung", "baseline"): [],
               ("healthy", "cascade-ops"): [], ("healthy", "baseline"): []}
    try:
        timed(invoke, cwd=REPO)  # deploy and start once: the rounds measure recovery only
        for _ in range(rounds):
            for name, argv in (("cascade-ops", invoke), ("baseline", baseline)):
                stop_backend(port)
                results[("hung", name)].append(timed(argv, cwd=REPO))
                results[("healthy", name)].append(timed(argv, cwd=REPO))
    finally:
        for pid in holders(port):
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)
    print("%-8s %12s %12s %8s   (median of %d, wall seconds)"
          % ("scenario", "cascade-ops", "baseline", "ratio", rounds))
    for scenario in ("hung", "healthy"):
        ours = statistics.median(results[(scenario, "cascade-ops")])
        base = statistics.median(results[(scenario, "baseline")])
        print("%-8s %12.3f %12.3f %7.2fx" % (scenario, ours, base, ours / base))


if __name__ == "__main__":
    main()
