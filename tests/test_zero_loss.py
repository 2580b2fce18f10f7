"""Recover without failing a client: the listening socket is kept across the restart, so the
connections that queued during the hang are answered by the replacement and none is refused while
it starts. Real uvicorn backends, real hangs, real clients on new connections."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import psutil
import pytest

from cascade_ops.steps.takeover import FD_PLACEHOLDER
from support import poke, wait_for


class Clients:
    """Clients that each open a new connection and GET /health, one every ``every`` seconds, with a
    ``timeout``, until stopped; every outcome is kept (200, reset, refused, timeout)."""

    def __init__(self, port, every=0.05, timeout=10.0):
        self.port, self.every, self.timeout = port, every, timeout
        self.outcomes = []
        self.threads = []
        self._stop = threading.Event()
        self._pacer = threading.Thread(target=self._pace, daemon=True)

    def __enter__(self):
        self._pacer.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._pacer.join()
        for thread in self.threads:
            thread.join(self.timeout + 5)

    def _pace(self):
        while not self._stop.is_set():
            thread = threading.Thread(target=self._one, daemon=True)
            thread.start()
            self.threads.append(thread)
            self._stop.wait(self.every)

    def _one(self):
        import socket

        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout) as sock:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                data = b""
                while b"\r\n" not in data:
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            outcome = data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/") else "closed"
        except ConnectionRefusedError:
            outcome = "refused"
        except ConnectionResetError:
            outcome = "reset"
        except OSError as exc:
            outcome = type(exc).__name__
        self.outcomes.append(outcome)

    def failed(self):
        return [o for o in self.outcomes if o != "200"]


def _hang(site, how):
    pid = site.backend_pid()
    if how == "stopped":
        os.kill(pid, signal.SIGSTOP)
    else:
        poke(site.port, "/block")
    wait_for(lambda: site.health().get("error") == "timeout", message="the hang")
    return pid


@pytest.mark.parametrize("how", ["stopped", "blocked_loop"])
def test_clients_that_queue_during_a_hang_all_get_200_and_none_is_refused(hang_app_site, how):
    site = hang_app_site
    assert site.recover().exit_code == 0
    old = _hang(site, how)  # first: a request the stale process took before it hung is lost with it
    with Clients(site.port) as clients:
        wait_for(lambda: len(clients.threads) >= 5, message="clients queued behind the hang")
        done = site.cli("recover")
        wait_for(lambda: site.health()["ok"], message="service back")
        after = len(clients.threads)
        wait_for(lambda: len(clients.outcomes) >= after + 3, message="clients after the recovery")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "kept port %d's listening socket" % site.port in done.stdout, done.stdout
    assert "on the kept socket" in done.stdout and "none refused" in done.stdout
    assert not psutil.pid_exists(old) or psutil.Process(old).status() == psutil.STATUS_ZOMBIE
    assert len(clients.outcomes) >= 10 and clients.failed() == [], clients.outcomes
    report = site.cli("report")
    assert "socket: kept across the restart" in report.stdout


def test_a_deploy_to_a_healthy_backend_drops_no_connection(hang_app_site):
    site = hang_app_site
    assert site.recover().exit_code == 0
    old = site.backend_pid()
    site.vars.update(auth_module=str(site.auth_module))  # a release: the auth module, mounted in main.py
    site.write_inventory()
    with Clients(site.port, every=0.02) as clients:
        wait_for(lambda: len(clients.outcomes) >= 5, message="clients flowing")
        done = site.cli("deploy")
        after = len(clients.threads)
        wait_for(lambda: len(clients.outcomes) >= after, message="clients answered")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "on the kept socket" in done.stdout and site.backend_pid() != old
    assert clients.failed() == [], clients.outcomes


@pytest.mark.parametrize("how", ["stopped", "blocked_loop"])
def test_a_reload_tree_is_replaced_on_its_kept_socket(hang_app_site, how):
    site = hang_app_site
    manual = site.start_backend_by_hand("--reload")
    tree = [manual.pid] + [c.pid for c in psutil.Process(manual.pid).children(recursive=True)]
    worker = next(p for p in site.holders() if p != manual.pid)
    if how == "stopped":
        os.kill(worker, signal.SIGSTOP)
    else:
        poke(site.port, "/block")
    wait_for(lambda: site.health().get("error") == "timeout", message="the hang")
    with Clients(site.port) as clients:
        wait_for(lambda: len(clients.threads) >= 5, message="clients queued behind the hang")
        done = site.cli("recover")
        wait_for(lambda: site.health()["ok"], message="service back")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "on the kept socket" in done.stdout
    assert all(not psutil.pid_exists(p) or psutil.Process(p).status() == psutil.STATUS_ZOMBIE for p in tree)
    assert clients.failed() == [], clients.outcomes


def test_a_start_command_without_the_placeholder_takes_the_old_path_and_says_why(hang_app_site):
    site = hang_app_site
    site.vars.update(start_command="%s -m uvicorn main:app --port %d" % (sys.executable, site.port))
    site.write_inventory()
    assert site.recover().exit_code == 0
    os.kill(site.backend_pid(), signal.SIGSTOP)
    done = site.cli("recover")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "socket not kept: start_command has no %s" % FD_PLACEHOLDER in done.stdout
    assert "socket: not kept: start_command has no" in site.cli("report").stdout
    # With the placeholder, the same command keeps it.
    site.vars.update(start_command="%s -m uvicorn main:app --fd %s" % (sys.executable, FD_PLACEHOLDER))
    site.write_inventory()
    os.kill(site.backend_pid(), signal.SIGSTOP)
    kept = site.cli("recover")
    assert kept.returncode == 0 and "on the kept socket" in kept.stdout, kept.stdout + kept.stderr


@pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists("/usr/bin/python3"),
    reason="needs root to run the agent as another user (and the system python3)",
)
def test_another_user_cannot_copy_roots_socket_and_is_told_why(hang_app_site):
    site = hang_app_site
    assert site.recover().exit_code == 0
    holder = psutil.Process(site.backend_pid())
    from cascade_ops.agent.procfs import listen_sockets, read_stat

    inode = listen_sockets(site.port)[0]["inode"]
    ticks = int(read_stat(holder.pid)[1][19])
    # The agent as a host ships it: a stdlib-only package, here run by another user (from a directory
    # that user may enter: the test's own is root's alone).
    with tempfile.TemporaryDirectory(dir="/tmp") as shipped:
        shutil.copytree(Path(__file__).resolve().parent.parent / "cascade_ops" / "agent", Path(shipped) / "agent")
        subprocess.run(["chmod", "-R", "a+rX", shipped], check=True)
        code = "from agent.takeover import take_over_check; print(take_over_check(%d, %d, %d))" % (
            holder.pid,
            ticks,
            inode,
        )
        done = subprocess.run(
            ["runuser", "-u", "nobody", "--", "/usr/bin/python3", "-c", code],
            cwd=shipped,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert "'ok': False" in done.stdout and ("no ptrace rights" in done.stdout or "cannot be read" in done.stdout), (
        done.stdout + done.stderr
    )
    assert site.health()["ok"]


@pytest.mark.parametrize("count", [1, 2])
def test_a_gunicorn_masters_hung_worker_is_replaced_and_no_client_fails(hang_app_site, reaper, count):
    """The master holds the socket through its workers' restart: the queue is never dropped."""
    from managers import Gunicorn, have, stop

    if not have("gunicorn"):
        pytest.skip("pip install gunicorn (in the test extra)")
    site = hang_app_site
    g = Gunicorn(site, reaper, workers=count)
    stop(g.workers()[0])  # first: a request the worker took before it stopped is lost with it
    if count == 1:
        wait_for(lambda: site.health().get("error") == "timeout", message="the hang")
    with Clients(site.port) as clients:
        wait_for(lambda: len(clients.threads) >= 5, message="clients queued behind the hang")
        done = site.cli("recover")
        wait_for(lambda: site.health()["ok"] and len(g.workers()) == count, message="workers back")
        after = len(clients.threads)
        wait_for(lambda: len(clients.outcomes) >= after, message="clients answered")
    assert done.returncode == 0, done.stdout + done.stderr
    assert clients.failed() == [], clients.outcomes
