"""Fleet recovery over SSH: N hung light backends, each behind its own loopback sshd.

    python bench/fleet_bench.py [--sizes 1,10,50,200] [--rounds 3] [--hang stopped|blocked] [--empty-rc]

For each N: every backend hangs (SIGSTOP, or its one-request loop blocked by a request that never
ends), then `invoke recover --forks N` recovers the fleet (1 s probe). Prints, per N, the median
wall time, the controller's CPU per host and its peak RSS (of the whole process tree), the same for
pyinfra and for ansible-playbook with the cascade.ops collection (ansible/) doing the same recovery
in the same run, and the floor: N OpenSSH clients at once, each
running `true`. The backends are a stdlib HTTP server, so the figures measure cascade-ops and SSH,
not N uvicorn start-ups on two cores. ``--empty-rc`` empties root's ~/.bashrc for the run (a
`pyenv init` there costs every SSH login ~0.14 s of CPU) and restores it after.
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


_HANDED_OUT = set()


def free_port():
    """A free port never handed out before in this run (the kernel may repeat one not yet bound)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


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
    print(
        "N=%d host run (connect included): min %.2f median %.2f max %.2f"
        % (size, durations[0], durations[len(durations) // 2], durations[-1])
    )


def measured(argv, cwd, env=None):
    """One command: (wall s, CPU s of it and what it waited for, its peak RSS in MB, stdout, stderr, exit code)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, cwd=cwd, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return (
            wall,
            usage.ru_utime + usage.ru_stime,
            usage.ru_maxrss / 1024.0,
            out.read().decode(),
            err.read().decode(),
            proc.returncode,
        )


def hang(ports, how, stuck):
    for port in ports:
        if how == "stopped":
            for pid in holders(port):
                os.kill(pid, signal.SIGSTOP)
        else:
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(b"GET /block HTTP/1.0\r\n\r\n")
            stuck.append(sock)


def _stop_backends(ports):
    for port in ports:
        for pid in holders(port):
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGKILL)


def _pyinfra(pyinfra, root, keys, sshds, ports, rounds, how):
    """The same recovery with pyinfra (bench/pyinfra_recover.py), same hosts, same hung backends."""
    inventory = root / ("pyinfra-%d.py" % len(ports))
    hosts = [
        (
            "h%d" % i,
            {
                "ssh_hostname": "127.0.0.1",
                "ssh_port": ssh_port,
                "ssh_user": "root",
                "ssh_key": str(keys / "client"),
                "ssh_known_hosts_file": str(root / "known_hosts"),
                "ssh_strict_host_key_checking": "yes",
                "port": port,
                "python": sys.executable,
                "backend": str(REPO / "bench" / "light_backend.py"),
            },
        )
        for i, ((ssh_port, _), port) in enumerate(zip(sshds, ports))
    ]
    inventory.write_text("hosts = %r\n" % hosts)
    argv = [pyinfra, "-y", "--parallel", str(len(ports)), str(inventory), str(REPO / "bench" / "pyinfra_recover.py")]
    runs = []
    for _ in range(rounds):
        stuck = []
        hang(ports, how, stuck)
        wall, cpu, rss, out, err, code = measured(argv, root)
        for sock in stuck:
            sock.close()
        if code:
            raise SystemExit("pyinfra failed:\n%s%s" % (out[-2000:], err[-2000:]))
        runs.append((wall, cpu, rss))
    return _median(runs)


def _ansible(playbook_bin, root, keys, sshds, ports, rounds, how, probe_timeout):
    """The same recovery with ansible-playbook and the cascade.ops collection (ansible/), same hosts,
    same hung backends, forks N."""
    import yaml

    collections = root / "collections" / "ansible_collections" / "cascade"
    collections.mkdir(parents=True, exist_ok=True)
    if not (collections / "ops").exists():
        (collections / "ops").symlink_to(REPO / "ansible")
    hosts = {
        "h%d" % i: {"ansible_port": ssh_port, "backend_port": port, "backend_dir": str(root / ("ansible-h%d" % i))}
        for i, ((ssh_port, _), port) in enumerate(zip(sshds, ports))
    }
    for values in hosts.values():
        os.makedirs(values["backend_dir"], exist_ok=True)
    inventory = root / ("ansible-%d.yaml" % len(ports))
    inventory.write_text(
        yaml.safe_dump(
            {
                "all": {
                    "hosts": hosts,
                    "vars": {
                        "ansible_host": "127.0.0.1",
                        "ansible_user": "root",
                        "ansible_ssh_private_key_file": str(keys / "client"),
                        "ansible_ssh_common_args": "-o UserKnownHostsFile=%s" % (root / "known_hosts"),
                        "ansible_python_interpreter": sys.executable,
                    },
                }
            }
        )
    )
    play = root / "ansible-recover.yaml"
    recover = {
        "port": "{{ backend_port }}",
        "app_dir": "{{ backend_dir }}",
        "python": sys.executable,
        "process_match": "light_backend",
        "start_command": "{python} %s {port}" % (REPO / "bench" / "light_backend.py"),
        "probe_timeout": probe_timeout,
    }
    play.write_text(
        yaml.safe_dump([{"hosts": "all", "gather_facts": False, "tasks": [{"cascade.ops.recover": recover}]}])
    )
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(root / "collections"), ANSIBLE_FORKS=str(len(ports)))
    argv = [playbook_bin, "-i", str(inventory), str(play)]
    runs = []
    for _ in range(rounds):
        stuck = []
        hang(ports, how, stuck)
        wall, cpu, rss, out, err, code = measured(argv, root, env)
        for sock in stuck:
            sock.close()
        if code:
            raise SystemExit("ansible-playbook failed:\n%s%s" % (out[-2000:], err[-2000:]))
        runs.append((wall, cpu, rss))
    return _median(runs)


def _median(runs):
    """Medians of (wall, CPU, RSS) over rounds."""
    return tuple(statistics.median(r[i] for r in runs) for i in range(3))


def _bare_ssh(keys, known_hosts, ports):
    """The floor on this machine: N OpenSSH clients at once, each running `true` on its host."""
    started = time.perf_counter()
    clients = [
        subprocess.Popen(
            [
                "ssh",
                "-o",
                "BatchMode=yes",
                "-o",
                "UserKnownHostsFile=%s" % known_hosts,
                "-i",
                str(keys / "client"),
                "-p",
                str(port),
                "root@127.0.0.1",
                "true",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for port in ports
    ]
    for client in clients:
        client.wait()
    return time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,10,50")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", action="store_true", help="also print the mean time of each step")
    parser.add_argument("--hang", choices=("stopped", "blocked"), default="stopped")
    parser.add_argument("--empty-rc", action="store_true", help="empty root's ~/.bashrc for the run (restored)")
    parser.add_argument(
        "--probe-timeout",
        default="1",
        help="seconds; a saturated machine (N=200 on 2 cores) needs more than 1 to answer the verification at all",
    )
    parser.add_argument("--profile", metavar="FILE", help="sample each cascade-ops run with py-spy into FILE")
    options = parser.parse_args()
    rc = Path(os.path.expanduser("~/.bashrc"))
    saved = rc.read_bytes() if options.empty_rc and rc.exists() else None
    if saved is not None:
        rc.write_bytes(b"")
    try:
        run(options)
    finally:
        if saved is not None:
            rc.write_bytes(saved)


def run(options):
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
    results, floors, peers, ansibles, all_ports = {}, {}, {}, {}, []
    pyinfra = os.environ.get("PYINFRA") or shutil.which("pyinfra")
    playbook_bin = str(Path(sys.executable).with_name("ansible-playbook"))
    playbook_bin = playbook_bin if os.path.exists(playbook_bin) else shutil.which("ansible-playbook")
    try:
        for _ in range(max(sizes)):
            port = free_port()
            config = keys / ("sshd-%d.conf" % port)
            config.write_text(SSHD_CONFIG.format(port=port, keys=keys))
            sshds.append(
                (port, subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(config)], stderr=subprocess.DEVNULL))
            )
        for port, _ in sshds:
            wait_banner(port)
        (root / "known_hosts").write_text("".join("[127.0.0.1]:%d %s %s\n" % (p, *host_key) for p, _ in sshds))
        for size in sizes:
            inventory = root / ("inventory-%d.yaml" % size)
            lines = [
                "all:",
                "  vars:",
                "    connection: ssh",
                "    address: 127.0.0.1",
                "    user: root",
                "    key_file: '%s'" % (keys / "client"),
                "    known_hosts: '%s'" % (root / "known_hosts"),
                "    python: '%s'" % sys.executable,
                "    process_match: light_backend",
                "    start_command: '{python} %s {port}'" % (REPO / "bench" / "light_backend.py"),
                "    probe_timeout: %s" % options.probe_timeout,
                "  hosts:",
            ]
            ports = []
            for index in range(size):
                port = free_port()
                ports.append(port)
                all_ports.append(port)
                app = root / ("n%d-host%d" % (size, index))
                app.mkdir()
                lines += [
                    "    host%d:" % index,
                    "      ssh_port: %d" % sshds[index][0],
                    "      port: %d" % port,
                    "      app_dir: '%s'" % app,
                ]
            inventory.write_text("\n".join(lines) + "\n")
            argv = [invoke, "-r", str(REPO), "recover", "--inventory", str(inventory), "--forks", str(size)]
            first = subprocess.run(argv, capture_output=True, text=True, cwd=REPO)  # first start
            if first.returncode:
                raise SystemExit("first start of %d hosts failed:\n%s%s" % (size, first.stdout, first.stderr))
            runs = []
            for _ in range(options.rounds):
                stuck = []
                hang(ports, options.hang, stuck)
                profiled = (
                    [
                        str(Path(sys.executable).with_name("py-spy")),
                        "record",
                        "--threads",
                        "-r",
                        "200",
                        "--format",
                        "raw",
                        "-o",
                        options.profile,
                        "--",
                    ]
                    + argv
                    if options.profile
                    else argv
                )
                wall, cpu, rss, out, err, code = measured(profiled + ["--json"], REPO)
                for sock in stuck:
                    sock.close()
                if code:
                    raise SystemExit("recovery of %d hosts failed (%d):\n%s%s" % (size, code, out[-3000:], err))
                runs.append((wall, cpu, rss))
                if options.steps:
                    _step_totals(size, json.loads(out))
            results[size] = _median(runs)
            floors[size] = _bare_ssh(keys, root / "known_hosts", [p for p, _ in sshds[:size]])
            if pyinfra:
                peers[size] = _pyinfra(pyinfra, root, keys, sshds[:size], ports, options.rounds, options.hang)
            if playbook_bin:
                ansibles[size] = _ansible(
                    playbook_bin, root, keys, sshds[:size], ports, options.rounds, options.hang, options.probe_timeout
                )
            _stop_backends(ports)
    finally:
        _stop_backends(all_ports)
        for _, proc in sshds:
            proc.kill()
        shutil.rmtree(root, ignore_errors=True)
    if not pyinfra:
        print("(pyinfra is not installed here, nor named by $PYINFRA: not measured in this run)")
    if not playbook_bin:
        print("(ansible-playbook is not installed here: not measured in this run)")
    print(
        "hang: %s; root's ~/.bashrc %s; median of %d rounds; --forks N"
        % (
            options.hang,
            "emptied for the run" if options.empty_rc else "as it is (pyenv init: ~0.14 s a login)",
            options.rounds,
        )
    )
    print(
        "%6s | %8s %12s %8s | %8s %12s %8s | %8s %12s %8s | %13s"
        % (
            "hosts",
            "wall s",
            "CPU ms/host",
            "RSS MB",
            "pyinfra",
            "CPU ms/host",
            "RSS MB",
            "ansible",
            "CPU ms/host",
            "RSS MB",
            "bare ssh true",
        )
    )

    def column(figures, size):
        if size not in figures:
            return "%8s %12s %8s" % ("-", "-", "-")
        return "%8.3f %12.0f %8.0f" % (figures[size][0], figures[size][1] * 1000 / size, figures[size][2])

    for size in sizes:
        wall, cpu, rss = results[size]
        print(
            "%6d | %8.3f %12.0f %8.0f | %s | %s | %13.3f"
            % (size, wall, cpu * 1000 / size, rss, column(peers, size), column(ansibles, size), floors[size])
        )


if __name__ == "__main__":
    main()
