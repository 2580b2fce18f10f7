"""The hangs production has, each on a real backend: it ends healthy, fast, and the incident report
names the kind of hang it saw."""

import json
import os
import signal
import socket
import time
from pathlib import Path

import psutil
import pytest

from cascade_ops.agent.procfs import listen_sockets
from support import HANG_APP, gone, poke, wait_for


@pytest.fixture
def hang_site(site):
    (site.app_dir / "main.py").write_text(HANG_APP)
    site.vars.update(auth_module=None, grace="5s")
    site.write_inventory()
    return site


def _poke(site, path):
    poke(site.port, path)


def _hung(site):
    wait_for(lambda: not site.health()["ok"], timeout=15, message="the backend to stop answering")


def _recover_and_report(site, max_seconds):
    started = time.monotonic()
    run = site.recover()
    elapsed = time.monotonic() - started
    assert run.exit_code == 0, run.to_json()
    assert site.health()["ok"]
    assert elapsed < max_seconds, "recovery took %.1fs" % elapsed
    doc = json.loads(Path(run.hosts["web"].incident_report).read_text())
    return run, doc["hang"]


@pytest.mark.parametrize(
    "path,kind,words",
    [
        ("/block", "blocked_loop", "blocking sleep"),
        ("/spin", "spinning", "spins on the CPU"),
        ("/deadlock", "lock", "waits on a lock"),
    ],
)
def test_a_hung_handler_is_killed_without_waiting_out_grace(hang_site, path, kind, words):
    hang_site.start_backend_by_hand()
    _poke(hang_site, path)
    _hung(hang_site)
    run, hang = _recover_and_report(hang_site, max_seconds=4.5)  # grace is 5 s: it was not waited out
    # Stopped once its replacement runs on the kept socket: said by the start step.
    said = " ".join(s.message for s in run.hosts["web"].steps if s.name in ("terminate", "start"))
    assert "still listening 0.1s after SIGTERM" in said
    assert hang["kind"] == kind and words in hang["summary"], hang
    text = hang_site.cli("report").stdout
    assert "hang: pid" in text and words in text


def test_a_stopped_backend_is_named_stopped(hang_site):
    proc = hang_site.start_backend_by_hand()
    os.kill(proc.pid, signal.SIGSTOP)
    _run, hang = _recover_and_report(hang_site, max_seconds=4.5)
    assert hang["kind"] == "stopped" and "state T" in hang["summary"]


def test_a_blocked_reload_worker_goes_with_its_reloader(hang_site):
    reloader = hang_site.start_backend_by_hand("--reload")
    tree = [reloader.pid] + [c.pid for c in psutil.Process(reloader.pid).children(recursive=True)]
    _poke(hang_site, "/block")
    _hung(hang_site)
    assert psutil.Process(reloader.pid).status() != psutil.STATUS_STOPPED  # the reloader itself is fine
    _run, hang = _recover_and_report(hang_site, max_seconds=6)
    assert hang["kind"] == "blocked_loop" and hang["pid"] != reloader.pid  # the worker was the hung one
    assert all(gone(pid) for pid in tree)
    assert hang_site.holders() == [hang_site.backend_pid()]


def test_a_full_accept_backlog_is_reported(hang_site):
    hang_site.start_backend_by_hand("--backlog", "4")
    _poke(hang_site, "/block")
    _hung(hang_site)
    waiting = []
    for _ in range(12):  # non-blocking: once the queue is full the kernel drops the SYNs
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", hang_site.port))
        waiting.append(sock)
    wait_for(
        lambda: any(s["backlog"] >= s["backlog_max"] for s in listen_sockets(hang_site.port)),
        message="a full accept queue",
    )
    try:
        _run, hang = _recover_and_report(hang_site, max_seconds=6)
    finally:
        for sock in waiting:
            sock.close()
    assert hang["backlog_full"] and "accept backlog full" in hang["summary"], (hang, _run.hosts["web"].incident_report)


def test_a_listener_on_another_address_is_left_alone(hang_site, reaper):
    """[::1]:PORT and 127.0.0.2:PORT cannot keep the backend from binding 127.0.0.1:PORT."""
    others = []
    for family, address in ((socket.AF_INET6, "::1"), (socket.AF_INET, "127.0.0.2")):
        code = "import socket, time; s = socket.socket(%d); s.bind((%r, %d)); s.listen(); time.sleep(600)" % (
            family,
            address,
            hang_site.port,
        )
        others.append(reaper.popen([os.sys.executable, "-c", code, "uvicorn-lookalike"]))
    wait_for(lambda: len(hang_site.holders()) == 2, message="two listeners on other addresses")
    proc = hang_site.start_backend_by_hand()
    os.kill(proc.pid, signal.SIGSTOP)
    run, _hang = _recover_and_report(hang_site, max_seconds=6)
    terminate = next(s for s in run.hosts["web"].steps if s.name == "terminate")
    assert "on another address" in terminate.message
    assert all(p.poll() is None for p in others)  # never signalled, though they match process_match
    diagnosed = json.loads(hang_site.cli("diagnose", "--json").stdout)["hosts"]["web"]
    assert sorted(h["in_the_way"] for h in diagnosed["holders"]) == [False, False, True]


def test_a_deploy_with_a_request_in_flight_drains_instead_of_being_killed(site):
    """The backends we start bound their drain below ``grace`` (--timeout-graceful-shutdown):
    without it uvicorn waits for an in-flight request (or a WebSocket that ignores the close)
    for ever, and every deploy ends in SIGKILL."""
    (site.app_dir / "main.py").write_text(HANG_APP)
    site.vars.update(grace="3s")
    site.write_inventory()
    assert site.recover().exit_code == 0
    old = site.backend_pid()
    _poke(site, "/slow")
    wait_for(
        lambda: any(c.status == "ESTABLISHED" for c in psutil.Process(old).net_connections()),
        message="the request in flight",
    )
    site.auth_module.write_text(site.auth_module.read_text() + "\n# release 2\n")
    run = site.recover()
    start = next(s for s in run.hosts["web"].steps if s.name == "start")  # the old one stops once the new runs
    assert run.exit_code == 0 and "pid %d exited on SIGTERM" % old in start.message, start.message
    assert 1.5 < start.duration_s < 4.0  # it drained for grace - 1 s, then exited by itself
