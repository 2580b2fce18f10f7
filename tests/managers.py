"""Real owners for tests: supervisord, a gunicorn master, systemd booted as PID 1 of its own
namespaces, dockerd. Each is started here, watched by PID, and stopped by the test's reaper."""

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import psutil

from cascade_ops.agent import supervisor
from support import wait_for

BIN = Path(sys.executable).parent
SCRIPTS = Path(__file__).resolve().parent / "supervisors"


def uvicorn_argv(site):
    return [sys.executable, "-m", "uvicorn", "main:app", "--app-dir", str(site.app_dir), "--host", "127.0.0.1",
            "--port", str(site.port)]


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
        self.conf.write_text("\n".join([
            "[supervisord]", "logfile=%s/supervisord.log" % root, "pidfile=%s/supervisord.pid" % root,
            "childlogdir=%s" % root,
            "[unix_http_server]", "file=%s/supervisor.sock" % root,
            "[supervisorctl]", "serverurl=unix://%s/supervisor.sock" % root,
            "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
            "[program:web]", "command=%s" % " ".join(argv), "environment=%s" % environment,
            "autorestart=true", "startsecs=1", "stopasgroup=true", "killasgroup=true",
            "stdout_logfile=%s/web.log" % root, "redirect_stderr=true", ""]))
        self.proc = reaper.popen([str(BIN / "supervisord"), "-n", "-c", str(self.conf)], cwd=root,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

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
            self.proc = reaper.popen([str(BIN / "gunicorn"), "-k", "uvicorn.workers.UvicornWorker", "-w",
                                      str(workers), "-b", "127.0.0.1:%d" % site.port, "--chdir", str(site.app_dir),
                                      "main:app"], env=env, stdout=log, stderr=log, start_new_session=True)
        self.site = site
        wait_for(lambda: len(self.workers()) == workers and site.health()["ok"], timeout=30,
                 message="gunicorn and its workers")

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
