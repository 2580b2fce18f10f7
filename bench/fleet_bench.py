"""Fleet recovery over SSH: N hung light backends, each behind its own loopback sshd.

    python bench/fleet_bench.py [--sizes 1,10,50] [--rounds 3]

For each N: every backend is SIGSTOPped, then `invoke recover --forks N` recovers the fleet (1 s
probe). Prints the median wall time per N, its ratio to N=1, and the floor measured in the same
run: N OpenSSH clients at once, each running `true` (a login and a shell per host, nothing else).
The backends are a stdlib HTTP server, so the figure measures cascade-ops and SSH, not N uvicorn
start-ups on two cores.
"""

import argparse
import compileall
import json
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

SSHD_CONFIG = """Port {port}
ListenAddress 127.0.0.1
HostKey {keys}/host
PidFile none
AuthorizedKeysFile {keys}/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
MaxStartups 200
LogLevel ERROR
Subsystem sftp internal-sftp
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def holders(port):
    return list(procfs.socket_holders([s["inode"] for s in procfs.listen_sockets(port)])[0])


def wait_banner(port, deadline=10.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                if s.recv(8).startswith(b"SSH-"):
                    return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("sshd on port %d did not come up" % port)


def _step_totals(size, doc):
    """Mean seconds per step across the hosts of one run (to see where the time goes)."""
    totals = {}
    for host in doc["hosts"].values():
        for step in host["steps"]:
            totals[step["name"]] = totals.get(step["name"], 0.0) + step["duration_s"]
    means = ", ".join("%s %.3f" % (k, v / len(doc["hosts"])) for k, v in totals.items())
    print("N=%d mean per host: %s" % (size, means))
    durations = sorted(h["recap"]["duration_s"] for h in doc["hosts"].values())
    print("N=%d host run (connect included): min %.2f median %.2f max %.2f"
          % (size, durations[0], durations[len(durations) // 2], durations[-1]))


def _stop_backends(ports):
    for port in ports:
        for pid in holders(port):
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGKILL)


def _pyinfra(pyinfra, root, keys, sshds, ports, rounds):
    """The same recovery with pyinfra (bench/pyinfra_recover.py), same hosts, same hung backends."""
    inventory = root / ("pyinfra-%d.py" % len(ports))
    hosts = [("h%d" % i, {"ssh_hostname": "127.0.0.1", "ssh_port": ssh_port, "ssh_user": "root",
                          "ssh_key": str(keys / "client"), "ssh_known_hosts_file": str(root / "known_hosts"),
                          "ssh_strict_host_key_checking": "yes", "port": port, "python": sys.executable,
                          "backend": str(REPO / "bench" / "light_backend.py")})
             for i, ((ssh_port, _), port) in enumerate(zip(sshds, ports))]
    inventory.write_text("hosts = %r\n" % hosts)
    argv = [pyinfra, "-y", "--parallel", str(len(ports)), str(inventory), str(REPO / "bench" / "pyinfra_recover.py")]
    times = []
    for _ in range(rounds):
        for port in ports:
            for pid in holders(port):
                os.kill(pid, signal.SIGSTOP)
        started = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True, cwd=root)
        times.append(time.perf_counter() - started)
        if done.returncode:
            raise SystemExit("pyinfra failed:\n%s%s" % (done.stdout[-2000:], done.stderr[-2000:]))
    return statistics.median(times)


def _bare_ssh(keys, known_hosts, ports):
    """The floor on this machine: N OpenSSH clients at once, each running `true` on its host."""
    started = time.perf_counter()
    clients = [subprocess.Popen(["ssh", "-o", "BatchMode=yes", "-o", "UserKnownHostsFile=%s" % known_hosts,
                                 "-i", str(keys / "client"), "-p", str(port), "root@127.0.0.1", "true"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for port in ports]
    for client in clients:
        client.wait()
    return time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,10,50")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", action="store_true", help="also print the mean time of each step")
    options = parser.parse_args()
    sizes = [int(n) for n in options.sizes.split(",")]
    compileall.compile_dir(REPO / "cascade_ops", quiet=1)
    root = Path(tempfile.mkdtemp(prefix="cascade-fleet-"))
    keys = root / "keys"
    keys.mkdir()
    for name in ("client", "host"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / name)], check=True)
    (keys / "authorized_keys").write_text((keys / "client.pub").read_text())
    os.makedirs("/run/sshd", exist_ok=True)
    host_key = (keys / "host.pub").read_text().split()[:2]
    sshds, ports = [], []
    invoke = str(Path(sys.executable).with_name("invoke"))
    results, floors, peers, all_ports = {}, {}, {}, []
    pyinfra = os.environ.get("PYINFRA") or shutil.which("pyinfra")
    try:
        for _ in range(max(sizes)):
            port = free_port()
            config = keys / ("sshd-%d.conf" % port)
            config.write_text(SSHD_CONFIG.format(port=port, keys=keys))
            sshds.append((port, subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(config)],
                                                 stderr=subprocess.DEVNULL)))
        for port, _ in sshds:
            wait_banner(port)
        (root / "known_hosts").write_text("".join("[127.0.0.1]:%d %s %s\n" % (p, *host_key) for p, _ in sshds))
        for size in sizes:
            inventory = root / ("inventory-%d.yaml" % size)
            lines = ["all:", "  vars:", "    connection: ssh", "    address: 127.0.0.1", "    user: root",
                     "    key_file: '%s'" % (keys / "client"), "    known_hosts: '%s'" % (root / "known_hosts"),
                     "    python: '%s'" % sys.executable, "    process_match: light_backend",
                     "    start_command: '{python} %s {port}'" % (REPO / "bench" / "light_backend.py"),
                     "    probe_timeout: 1", "  hosts:"]
            ports = []
            for index in range(size):
                port = free_port()
                ports.append(port)
                all_ports.append(port)
                app = root / ("n%d-host%d" % (size, index))
                app.mkdir()
                lines += ["    host%d:" % index, "      ssh_port: %d" % sshds[index][0], "      port: %d" % port,
                          "      app_dir: '%s'" % app]
            inventory.write_text("\n".join(lines) + "\n")
            argv = [invoke, "-r", str(REPO), "recover", "--inventory", str(inventory), "--forks", str(size)]
            first = subprocess.run(argv, capture_output=True, text=True, cwd=REPO)  # first start
            if first.returncode:
                raise SystemExit("first start of %d hosts failed:\n%s%s" % (size, first.stdout, first.stderr))
            times = []
            for _ in range(options.rounds):
                for port in ports:
                    for pid in holders(port):
                        os.kill(pid, signal.SIGSTOP)
                started = time.perf_counter()
                before = os.times()
                done = subprocess.run(argv + ["--json"], check=True, capture_output=True, text=True, cwd=REPO)
                times.append(time.perf_counter() - started)
                after = os.times()
                if options.steps:
                    print("N=%d controller CPU %.2fs" % (size, (after.children_user - before.children_user)
                                                       + (after.children_system - before.children_system)))
                if options.steps:
                    _step_totals(size, json.loads(done.stdout))
            results[size] = statistics.median(times)
            floors[size] = _bare_ssh(keys, root / "known_hosts", [p for p, _ in sshds[:size]])
            if pyinfra:
                peers[size] = _pyinfra(pyinfra, root, keys, sshds[:size], ports, options.rounds)
            _stop_backends(ports)
    finally:
        _stop_backends(all_ports)
        for _, proc in sshds:
            proc.kill()
        shutil.rmtree(root, ignore_errors=True)
    if not pyinfra:
        print("(pyinfra is not installed here, nor named by $PYINFRA: not measured in this run)")
    if shutil.which("ansible-playbook") is None:
        print("(ansible-playbook is not installed here: not measured in this run)")
    print("%6s %10s %10s %14s %10s   (median of %d, wall seconds, --forks N)"
          % ("hosts", "seconds", "vs N=1", "bare ssh true", "pyinfra", options.rounds))
    for size in sizes:
        print("%6d %10.3f %9.2fx %14.3f %10s" % (size, results[size], results[size] / results[sizes[0]], floors[size],
                                                "%.3f" % peers[size] if size in peers else "-"))


if __name__ == "__main__":
    main()
