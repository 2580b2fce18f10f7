"""Shared test helpers: real backends in temporary app dirs on free ports, real sshd hosts, and a
reaper that stops every process a test started, by PID, whether the test passed or not.

Tests import these from here; ``conftest.py`` only turns them into fixtures."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Optional

import psutil

from cascade_ops.agent import probe, procfs

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "examples" / "cascade_backend"
AUTH_MODULE = REPO / "playbooks" / "files" / "auth.py"
PLAYBOOK = REPO / "playbooks" / "recover.yaml"
INVOKE = [sys.executable, "-m", "invoke", "-r", str(REPO)]


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port nothing listens on that this test run has not handed out before.

    The kernel may give the same ephemeral port to two consecutive probes when the first
    has not been bound yet (two fleet sites once shared a port that way)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def wait_for(predicate, timeout=15.0, interval=0.02, message="condition"):
    """Poll ``predicate`` until it returns a truthy value or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, message))
        time.sleep(interval)


def gone(pid: int, create_time: Optional[float] = None) -> bool:
    """True when the process no longer runs (zombies count as gone, as in cascade-ops)."""
    try:
        proc = psutil.Process(pid)
        if create_time is not None and abs(proc.create_time() - create_time) > 0.01:
            return True
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


class Reaper:
    """Remembers processes and kills them (SIGCONT + SIGKILL, by PID) at teardown."""

    def __init__(self):
        self.procs = []
        self.ports = []
        self.pidfiles = []

    def track(self, pid):
        try:
            self.procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
        return pid

    def popen(self, argv, **kwargs):
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        proc = subprocess.Popen(argv, **kwargs)
        self.track(proc.pid)
        return proc

    def _holders(self):
        for port in self.ports:
            sockets = procfs.listen_sockets(port)
            holders, _ = procfs.socket_holders([s["inode"] for s in sockets])
            yield from holders

    def reap(self):
        victims = list(self.procs)
        for pid in list(self._holders()) + [self._pid_from(f) for f in self.pidfiles]:
            if pid:
                try:
                    victims.append(psutil.Process(pid))
                except psutil.NoSuchProcess:
                    pass
        for proc in list(victims):
            try:
                victims.extend(proc.children(recursive=True))
            except psutil.NoSuchProcess:
                pass
        for proc in victims:
            try:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        try:
            psutil.wait_procs(victims, timeout=5)
        except (OSError, psutil.Error):  # one vanished between two looks (a namespace's, torn down with it)
            for proc in victims:
                try:
                    proc.wait(timeout=5)
                except (OSError, psutil.Error):
                    pass

    @staticmethod
    def _pid_from(path):
        try:
            return int(Path(path).read_text().strip())
        except (OSError, ValueError):
            return None


class Site:
    """One backend host: a copy of the demo app on a free port, with its inventory file."""

    def __init__(self, root: Path, reaper: Reaper, **extra_vars):
        self.root = root
        self.port = free_port()
        self.app_dir = root / "app"
        self.state_dir = self.app_dir / ".cascade-ops"
        self.auth_module = root / "auth.py"
        shutil.copytree(DEMO, self.app_dir)
        shutil.copy(AUTH_MODULE, self.auth_module)
        self.inventory = root / "inventory.yaml"
        self.vars = {
            "connection": "local",
            "port": self.port,
            "bind_host": "127.0.0.1",
            "app_dir": str(self.app_dir),
            "auth_module": str(self.auth_module),
            "probe_timeout": 1,
            "grace": "2s",
            "start_timeout": "30s",
        }
        self.vars.update(extra_vars)
        self.write_inventory()
        self.reaper = reaper
        reaper.ports.append(self.port)
        reaper.pidfiles.append(self.state_dir / "backend.pid")

    def write_inventory(self):
        lines = ["all:", "  hosts:", "    web:"]
        lines += ["      %s: %s" % (k, _yaml_scalar(v)) for k, v in self.vars.items() if v is not None]
        self.inventory.write_text("\n".join(lines) + "\n")

    # -- running cascade-ops
    def recover(self, **kwargs):
        from cascade_ops import api

        kwargs.setdefault("playbook", str(PLAYBOOK))
        return api.recover(str(self.inventory), **kwargs)

    def cli_argv(self, *args):
        return INVOKE + list(args[:1]) + ["--inventory", str(self.inventory)] + list(args[1:])

    def cli(self, *args, timeout=90):
        return subprocess.run(
            self.cli_argv(*args), cwd=REPO, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )

    def watch(self, **kwargs):
        from cascade_ops import api

        kwargs.setdefault("playbook", str(PLAYBOOK))
        return api.watch(str(self.inventory), **kwargs)["web"]

    # -- looking at the result
    def holders(self):
        sockets = procfs.listen_sockets(self.port)
        return sorted(procfs.socket_holders([s["inode"] for s in sockets])[0])

    def health(self):
        return probe.http_probe("127.0.0.1", self.port, "/health", 1.0)

    def backend_pid(self):
        return int((self.state_dir / "backend.pid").read_text())

    def start_backend_by_hand(self, *extra, env=None):
        """A backend started the way an operator would (not by cascade-ops), tracked for cleanup."""
        full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        with open(self.root / "manual.log", "ab") as log:
            proc = self.reaper.popen(
                [sys.executable, "-m", "uvicorn", "main:app", "--host", "127.0.0.1", "--port", str(self.port), *extra],
                cwd=self.app_dir,
                env=full_env,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        wait_for(lambda: self.health()["ok"], message="manual backend on port %d" % self.port)
        return proc


def _yaml_scalar(value):
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return json.dumps(str(value))  # a JSON string is a YAML double-quoted scalar: newlines survive


def python_script(code: str) -> str:
    return textwrap.dedent(code)


SIGNAL_RECORDER = python_script("""
    import signal, sys, time
    log = open(sys.argv[1], "a", buffering=1)
    def record(signum, frame):
        log.write(signal.Signals(signum).name + "\\n")
    for sig in signal.valid_signals():
        if sig not in (signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD):
            try:
                signal.signal(sig, record)
            except (OSError, ValueError):
                pass
    log.write("ready\\n")
    while True:
        time.sleep(60)
""")


class Bystander:
    """A process beside the backend that a careless run would hit (its command line names uvicorn;
    it holds no port), recording every signal it receives; SIGKILL and SIGSTOP show in its state."""

    def __init__(self, root: Path, reaper: Reaper):
        self.log = root / "bystander.signals"
        self.proc = reaper.popen([sys.executable, "-c", SIGNAL_RECORDER, str(self.log), "uvicorn", "main:app"])
        wait_for(lambda: self.log.exists() and "ready" in self.log.read_text(), message="the bystander")

    def signals(self):
        return [line for line in self.log.read_text().splitlines() if line != "ready"]

    def untouched(self) -> bool:
        return (
            self.proc.poll() is None
            and psutil.Process(self.proc.pid).status() != psutil.STATUS_STOPPED
            and self.signals() == []
        )


class WebhookServer:
    """A real HTTP server on loopback that records the JSON bodies POSTed to it, and the paths of
    GETs (a dead-man monitor's pings)."""

    def __init__(self):
        import http.server
        import json
        import threading

        received = self.received = []
        pinged = self.pinged = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                pinged.append(self.path)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"OK")

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d/hook" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


# --------------------------------------------------------------------------- SSH hosts

SSHD = "/usr/sbin/sshd"


class SSHServer:
    """A real sshd on a free loopback port, started for one test and stopped by PID."""

    def __init__(
        self,
        keys: Path,
        reaper: Reaper,
        host_key: str = "host",
        launch=None,
        sftp: bool = True,
        passwords: bool = False,
    ):
        """``launch(argv)`` starts sshd somewhere else (inside a namespace); default: here, tracked.
        ``sftp=False``: a host without an SFTP subsystem (minimal images, some appliances)."""
        self.port = free_port()
        self.keys = keys
        config = keys / ("sshd-%d.conf" % self.port)
        config.write_text(
            textwrap.dedent(
                """\
            Port %d
            ListenAddress 127.0.0.1
            HostKey %s
            PidFile none
            AuthorizedKeysFile %s .ssh/authorized_keys
            PasswordAuthentication %s
            KbdInteractiveAuthentication no
            PubkeyAuthentication yes
            PermitRootLogin prohibit-password
            StrictModes no
            UsePAM no
            MaxStartups 200
            MaxSessions 200
            LogLevel ERROR
            """
                % (self.port, keys / host_key, keys / "authorized_keys", "yes" if passwords else "no")
            )
            + ("Subsystem sftp internal-sftp\n" if sftp else "")
        )
        argv = [SSHD, "-D", "-e", "-f", str(config)]
        self.proc = launch(argv) if launch else reaper.popen(argv, stderr=subprocess.DEVNULL)
        wait_for(self._answers, message="sshd on port %d" % self.port)

    def _answers(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                return s.recv(64).startswith(b"SSH-")
        except OSError:
            return False

    def known_hosts_line(self, host_key="host"):
        kind, blob = (self.keys / (host_key + ".pub")).read_text().split()[:2]
        return "[127.0.0.1]:%d %s %s" % (self.port, kind, blob)


def ssh_vars(server: SSHServer, known_hosts: Path):
    return {
        "connection": "ssh",
        "address": "127.0.0.1",
        "ssh_port": server.port,
        "user": "root",
        "key_file": str(server.keys / "client"),
        "known_hosts": str(known_hosts),
        "python": sys.executable,
        "connect_timeout": 3,
    }


class Fleet:
    """N backend sites reached over N real sshd instances, in one inventory (group ``cascade``)."""

    def __init__(self, root: Path, reaper: Reaper, keys: Path, count: int, **extra):
        self.root = root
        self.known_hosts = root / "known_hosts"
        self.sites = {}
        self.servers = {}
        for index in range(1, count + 1):
            name = "web%d" % index
            site_root = root / name
            site_root.mkdir()
            self.servers[name] = server = SSHServer(keys, reaper)
            self.sites[name] = Site(site_root, reaper, **dict(ssh_vars(server, self.known_hosts), **extra))
        self.known_hosts.write_text("".join(s.known_hosts_line() + "\n" for s in self.servers.values()))
        self.inventory = root / "inventory.yaml"
        self.extra_hosts = {}
        self.write_inventory()

    def write_inventory(self):
        lines = ["all:", "  children:", "    cascade:", "      hosts:"]
        for name, site in list(self.sites.items()) + list(self.extra_hosts.items()):
            values = site.vars if isinstance(site, Site) else site
            lines.append("        %s:" % name)
            lines += ["          %s: %s" % (k, _yaml_scalar(v)) for k, v in values.items() if v is not None]
        self.inventory.write_text("\n".join(lines) + "\n")

    def cli(self, *args, timeout=180):
        return subprocess.run(
            INVOKE + list(args[:1]) + ["--inventory", str(self.inventory)] + list(args[1:]),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )


# A hung server that ignores SIGTERM: it accepts at kernel level and never answers.
IGNORES_SIGTERM = python_script("""
    import signal, socket, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sock = socket.socket()
    sock.bind(("127.0.0.1", int(sys.argv[1])))
    sock.listen(16)
    open(sys.argv[2], "w").write("ready")
    time.sleep(600)  # accepts at kernel level, never answers: a hung server
""")


# --------------------------------------------------------------------------- constructed facts


def process(pid, ppid, command, state="S", user="app", start_ticks=None, exe=None):
    """Raw agent facts of one process, as ``agent.procfs.process_info`` reports them."""
    argv = command.split() if isinstance(command, str) else list(command)
    return {
        "pid": pid,
        "ppid": ppid,
        "pgid": pid,
        "sid": pid,
        "state": state,
        "comm": argv[0][-15:],
        "uid": 1000,
        "user": user,
        "start_ticks": start_ticks or pid * 10,
        "age_s": 60.0,
        "cpu_s": 1.0,
        "threads": 2,
        "rss": 1 << 20,
        "cmdline": argv,
        "exe": exe or argv[0],
    }


def diagnosis(
    processes,
    holders,
    port=8000,
    probe_ok=False,
    protected=(),
    address="127.0.0.1",
    orphan_inodes=(),
    owners=None,
    recorded=None,
    run_user="app",
):
    """A ``Diagnosis`` built from constructed facts: ``holders`` maps pid -> listening inodes, and
    ``owners`` pid -> what ``agent.owners`` reports about that holder's owner."""
    from cascade_ops.model.facts import Diagnosis

    inodes = sorted({i for held in holders.values() for i in held} | set(orphan_inodes))
    sockets = [{"inode": i, "address": address, "port": port, "family": 4, "backlog": 0} for i in inodes]
    probe = {
        "url": "http://%s:%d/health" % (address, port),
        "ok": probe_ok,
        "elapsed_s": 0.001,
        "status": 200 if probe_ok else None,
        "error": None if probe_ok else "timeout",
    }
    raw = {
        "sockets": sockets,
        "holders": [{"pid": p, "inodes": sorted(i)} for p, i in sorted(holders.items())],
        "unreadable_pids": 0,
        "processes": processes,
        "protected": list(protected),
        "probe": probe if sockets else None,
        "owners": {str(p): o for p, o in (owners or {}).items()},
        "recorded": recorded,
        "run_user": run_user,
    }
    return Diagnosis.from_agent(raw, port)


# A backend that can be hung the ways production hangs: a blocked loop, a spin, a deadlock.
HANG_APP = python_script("""
    import asyncio, threading, time
    from fastapi import FastAPI

    app = FastAPI()
    lock = threading.Lock()

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/block")
    async def block():
        time.sleep(600)  # a sync call (a sync DB driver, requests.get) in an async handler

    @app.get("/slow")
    async def slow():
        await asyncio.sleep(600)  # a long request that does not block the loop

    @app.get("/spin")
    async def spin():
        while True:
            pass

    @app.get("/deadlock")
    async def deadlock():
        lock.acquire()
        lock.acquire()  # the same thread, a non-reentrant lock: waits forever
""")


def poke(port, path):
    """Send a request that never gets an answer, from a thread, and leave it hanging."""

    def request():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                sock.sendall(("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path).encode())
                sock.recv(1)
        except OSError:
            pass

    threading.Thread(target=request, daemon=True).start()


def slow_start_app(seconds):
    """A backend whose import takes ``seconds``: a run stays inside its start step that long."""
    return python_script(
        """
        import time
        from fastapi import FastAPI
        time.sleep(%s)
        app = FastAPI()

        @app.get("/health")
        def health():
            return {"status": "ok"}
    """
        % seconds
    )
