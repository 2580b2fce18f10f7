"""Real owners for tests: supervisord, a gunicorn master, systemd booted as PID 1 of its own
namespaces, dockerd. Each is started here, watched by PID, and stopped by the test's reaper."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil

from cascade_ops.agent import supervisor
from support import wait_for

BIN = Path(sys.executable).parent
# Debian's client, of dockerd's own version (a newer one elsewhere on PATH may refuse its old API)
DOCKER = "/usr/bin/docker" if os.path.exists("/usr/bin/docker") else "docker"
SCRIPTS = Path(__file__).resolve().parent / "supervisors"


def uvicorn_argv(site):
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "main:app",
        "--app-dir",
        str(site.app_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(site.port),
    ]


def secret_env(site):
    """The JWT secret the backend is given by its owner, created the way cascade-ops would."""
    site.state_dir.mkdir(parents=True, exist_ok=True)
    path = site.state_dir / "jwt-secret"
    if not path.exists():
        path.write_text(os.urandom(32).hex())
        path.chmod(0o600)
    return {"CASCADE_JWT_SECRET": path.read_text().strip(), "PYTHONUNBUFFERED": "1"}


class Supervisord:
    """supervisord -n with a private control socket and one program, ``web``, that autorestarts."""

    def __init__(self, root: Path, reaper, argv, env):
        self.root = root
        self.conf = root / "supervisord.conf"
        environment = ",".join('%s="%s"' % item for item in sorted(env.items()))
        self.conf.write_text(
            "\n".join(
                [
                    "[supervisord]",
                    "logfile=%s/supervisord.log" % root,
                    "pidfile=%s/supervisord.pid" % root,
                    "childlogdir=%s" % root,
                    "[unix_http_server]",
                    "file=%s/supervisor.sock" % root,
                    "[supervisorctl]",
                    "serverurl=unix://%s/supervisor.sock" % root,
                    "[rpcinterface:supervisor]",
                    "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
                    "[program:web]",
                    "command=%s" % " ".join(argv),
                    "environment=%s" % environment,
                    "autorestart=true",
                    "startsecs=1",
                    "stopasgroup=true",
                    "killasgroup=true",
                    "stdout_logfile=%s/web.log" % root,
                    "redirect_stderr=true",
                    "",
                ]
            )
        )
        self.proc = reaper.popen(
            [str(BIN / "supervisord"), "-n", "-c", str(self.conf)],
            cwd=root,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def info(self):
        return supervisor.rpc(str(self.conf)).supervisor.getProcessInfo("web")

    def running_pid(self):
        try:
            info = self.info()
        except OSError:
            return None
        return info["pid"] if info["statename"] == "RUNNING" else None


class Gunicorn:
    """gunicorn -k uvicorn.workers.UvicornWorker -w 2, detached, its control socket in a temp HOME."""

    def __init__(self, site, reaper, workers=2):
        home = site.root / "home"
        home.mkdir(exist_ok=True)
        env = dict(os.environ, HOME=str(home), **secret_env(site))
        self.log = site.root / "gunicorn.log"
        with open(self.log, "ab") as log:
            self.proc = reaper.popen(
                [
                    str(BIN / "gunicorn"),
                    "-k",
                    "uvicorn.workers.UvicornWorker",
                    "-w",
                    str(workers),
                    "-b",
                    "127.0.0.1:%d" % site.port,
                    "--chdir",
                    str(site.app_dir),
                    "main:app",
                ],
                env=env,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        self.site = site
        wait_for(
            lambda: len(self.workers()) == workers and site.health()["ok"],
            timeout=30,
            message="gunicorn and its workers",
        )

    def workers(self):
        try:
            return sorted(c.pid for c in psutil.Process(self.proc.pid).children())
        except psutil.NoSuchProcess:
            return []


def stop(pid):
    os.kill(pid, signal.SIGSTOP)
    wait_for(lambda: psutil.Process(pid).status() == psutil.STATUS_STOPPED, message="pid %d stopped" % pid)


def have(*programs):
    return all(shutil.which(p) or (BIN / p).exists() for p in programs)


class SystemdNamespace:
    """A real systemd (Debian's) booted as PID 1 of new pid+mount+uts+cgroup namespaces, seeing only
    the units a test gives it. ``inside(...)`` runs a command there, as on a host that systemd runs."""

    SYSCTLS = ("fs/file-max", "net/unix/max_dgram_qlen")  # systemd raises them at boot

    def __init__(self, base: Path, reaper):
        self.base = base
        self.saved = {name: Path("/proc/sys", name).read_text() for name in self.SYSCTLS}
        self._cleanup()  # a tree an interrupted run left behind
        self.log = open(base / "systemd.log", "wb")  # noqa: SIM115 (open while systemd runs; closed in close())
        self.boot = reaper.popen(
            [str(SCRIPTS / "systemd-ns.sh"), str(base)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pid1 = wait_for(self._pid1, message="systemd to boot in its namespace")
        wait_for(
            lambda: self.inside("systemctl", "is-system-running").stdout.strip() in ("running", "degraded"),
            message="systemd to be running",
        )

    def _pid1(self):
        try:
            children = Path("/proc/%d/task/%d/children" % (self.boot.pid, self.boot.pid)).read_text().split()
            child = int(children[0])
            return child if Path("/proc/%d/comm" % child).read_text().strip() == "systemd" else None
        except (OSError, ValueError, IndexError):
            return None

    def inside(self, *argv, timeout=60, **kwargs):
        return subprocess.run(
            ["nsenter", "-t", str(self.pid1), "-a", *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            **kwargs,
        )

    def add_unit(self, name, text):
        (self.base / "units" / name).write_text(text)
        assert self.inside("systemctl", "daemon-reload").returncode == 0

    def show(self, unit, prop):
        return self.inside("systemctl", "show", "-p", prop, "--value", unit).stdout.strip()

    @staticmethod
    def host_pid(ns_pid):
        """The pid on this side of a pid the namespace's systemd reports."""
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    status = (entry / "status").read_text()
                except OSError:
                    continue
                nspid = next((line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:")), [])
                if len(nspid) == 2 and nspid[1] == str(ns_pid):
                    return int(nspid[0])
        return None

    def _cleanup(self):
        subprocess.run([str(SCRIPTS / "systemd-ns-cleanup.sh")], capture_output=True, timeout=30)

    def close(self):
        try:
            self.inside("systemctl", "exit", timeout=10)
            self.boot.wait(timeout=10)
        except (subprocess.TimeoutExpired, OSError):
            pass
        finally:
            for proc in (
                psutil.Process(self.boot.pid).children(recursive=True) if psutil.pid_exists(self.boot.pid) else []
            ):
                proc.kill()
            if self.boot.poll() is None:
                self.boot.kill()
                self.boot.wait(timeout=10)
            self.log.close()
            self._cleanup()
            for name, value in self.saved.items():
                Path("/proc/sys", name).write_text(value)


class Dockerd:
    """A private dockerd (Debian's docker.io) on a socket of its own, no iptables, no default bridge,
    with an image made of an empty root and the host's /usr (no registry is reachable here)."""

    LEFTOVERS = ("/etc/docker", "/run/docker", "/run/containerd", "/opt/containerd")
    CGROUP = "cascade-test-docker"

    def __init__(self, base: Path, reaper):
        self.base = base
        self.existed = {path for path in self.LEFTOVERS if os.path.exists(path)}
        # containerd's socket lives under the exec root: a pytest path is too long for a unix socket
        self.short = Path(tempfile.mkdtemp(prefix="dk.", dir="/tmp"))
        self.sock = self.short / "docker.sock"
        self.log = open(base / "dockerd.log", "wb")  # noqa: SIM115 (open while dockerd runs; closed in close())
        self.proc = reaper.popen(
            [
                "dockerd",
                "--data-root",
                str(base / "root"),
                "--exec-root",
                str(self.short / "x"),
                "--pidfile",
                str(self.short / "docker.pid"),
                "-H",
                "unix://%s" % self.sock,
                "--iptables=false",
                "--ip6tables=false",
                "--ip-forward=false",
                "--ip-masq=false",
                "--bridge=none",
                "--cgroup-parent=/" + self.CGROUP,
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_for(lambda: self.cli("version").returncode == 0, timeout=30, message="dockerd to answer")
            self._import_image()
        except BaseException:
            self.close()
            raise

    def _import_image(self):
        base = self.base
        rootfs = base / "rootfs"
        for sub in ("usr", "tmp", "proc", "sys", "dev", "etc", "root"):
            (rootfs / sub).mkdir(parents=True)
        for link in ("bin", "lib", "lib64", "sbin"):
            (rootfs / link).symlink_to("usr/" + link)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        imported = self.cli("import", "-", "local/hostusr:1", stdin=tar.stdout)
        tar.wait()
        assert imported.returncode == 0, imported.stderr

    def cli(self, *args, **kwargs):
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.run(
            [DOCKER, "-H", "unix://%s" % self.sock, *args], capture_output=True, text=True, timeout=60, **kwargs
        )

    def run_backend(self, site, name, publish=False):
        """The site's backend in a container that docker restarts always; on the host's network, or
        behind docker-proxy with ``publish``."""
        mounts = {"/usr", str(Path(sys.executable).resolve().parents[1]), str(Path(__file__).resolve().parents[1])}
        args = [
            "run",
            "-d",
            "--name",
            name,
            "--restart=always",
            "-w",
            str(site.app_dir),
            "-v",
            "%s:%s" % (site.root, site.root),
        ]
        for path in sorted(mounts):
            args += ["-v", "%s:%s:ro" % (path, path)]
        for key, value in secret_env(site).items():
            args += ["-e", "%s=%s" % (key, value)]
        if publish:
            self.cli("network", "create", "cascade-test")
            args += ["--network", "cascade-test", "-p", "127.0.0.1:%d:8000" % site.port]
            port, host = 8000, "0.0.0.0"
        else:
            args += ["--network", "host"]
            port, host = site.port, "127.0.0.1"
        argv = [sys.executable, "-m", "uvicorn", "main:app", "--host", host, "--port", str(port)]
        done = self.cli(*args, "local/hostusr:1", *argv)
        assert done.returncode == 0, done.stderr
        wait_for(lambda: site.health()["ok"], timeout=30, message="the container to serve")
        return done.stdout.strip()

    def inspect(self, name):
        return json.loads(self.cli("inspect", name).stdout)[0]

    def close(self):
        ids = self.cli("ps", "-aq").stdout.split() if self.proc.poll() is None else []
        if ids:
            self.cli("rm", "-f", *ids)
        self.cli("network", "rm", "cascade-test")
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.log.close()
        for line in Path("/proc/mounts").read_text().splitlines():
            if line.split()[1].startswith((str(self.base), str(self.short))):
                subprocess.run(["umount", "-l", line.split()[1]], capture_output=True)
        shutil.rmtree(self.short, ignore_errors=True)
        for hierarchy in Path("/sys/fs/cgroup").iterdir():
            tree = hierarchy / self.CGROUP
            if tree.is_dir():
                for sub in sorted((p for p in tree.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                    sub.rmdir()
                tree.rmdir()
        for path in self.LEFTOVERS:
            if path not in self.existed:
                shutil.rmtree(path, ignore_errors=True)
