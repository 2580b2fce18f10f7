"""Backends something else owns, on real owners: a supervisord program and a gunicorn master here;
systemd units in test_systemd.py, docker containers in test_docker.py. Each hangs for real (SIGSTOP,
a blocked event loop); the recovery goes through the owner, never beside it."""

import json
from pathlib import Path

import psutil
import pytest
from managers import BIN, Gunicorn, Supervisord, have, secret_env, stop, uvicorn_argv

from support import HANG_APP, poke, wait_for

pytestmark = pytest.mark.skipif(not have("supervisord", "gunicorn"), reason="pip install supervisor gunicorn")


def hang(site, pid, how):
    if how == "stopped":
        stop(pid)
    else:
        poke(site.port, "/block")
    wait_for(lambda: not site.health()["ok"], message="the backend to hang")


@pytest.fixture
def supervised(hang_app_site, reaper):
    site = hang_app_site
    sv = Supervisord(site.root, reaper, uvicorn_argv(site), secret_env(site))
    wait_for(lambda: sv.running_pid() and site.health()["ok"], timeout=30, message="supervisord's program")
    return sv


@pytest.mark.parametrize("how", ["stopped", "blocked"])
def test_a_hung_supervisord_program_is_restarted_by_supervisord(site, supervised, how):
    before = supervised.running_pid()
    hang(site, before, how)
    run = site.recover()
    host = run.hosts["web"]
    assert run.exit_code == 0, run.to_json()
    steps = {s.name: s.message for s in host.steps}
    assert steps["terminate"].startswith("asked supervisord program web (RUNNING, main pid %d) to stop" % before)
    assert steps["start"].startswith("started supervisord program web (main pid ")
    after = wait_for(supervised.running_pid, message="supervisord to call it RUNNING (startsecs=1)")
    assert after != before and not psutil.pid_exists(before)
    assert site.holders() == [after]  # exactly one backend serves, and it is supervisord's
    assert psutil.Process(after).ppid() == supervised.proc.pid
    assert not (site.state_dir / "backend.pid").exists()  # cascade-ops started nothing of its own
    report = json.loads(Path(host.incident_report).read_text())
    assert report["diagnosis"]["holders"][0]["owner"]["name"] == "web"
    words = site.cli("report").stdout
    assert "run by supervisord program web" in words and "asked supervisord program web" in words, words


def test_over_ssh_a_supervisord_program_is_recovered_through_supervisord(make_fleet, reaper):
    fleet = make_fleet(1)
    site = fleet.sites["web1"]
    (site.app_dir / "main.py").write_text(HANG_APP)
    site.vars.update(auth_module=None)
    fleet.write_inventory()
    sv = Supervisord(site.root, reaper, uvicorn_argv(site), secret_env(site))
    before = wait_for(lambda: sv.running_pid() if site.health()["ok"] else None, timeout=30, message="program")
    stop(before)
    done = fleet.cli("recover", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    said = {s["name"]: s["message"] for s in json.loads(done.stdout)["hosts"]["web1"]["steps"]}
    assert said["terminate"].startswith("asked supervisord program web")
    assert site.holders() == [wait_for(sv.running_pid, message="RUNNING")]


def test_check_mode_and_diagnose_name_the_program(site, supervised):
    pid = supervised.running_pid()
    stop(pid)
    shown = site.cli("diagnose")
    assert "supervisor:web" in shown.stdout, shown.stdout
    run = site.recover(check=True)
    terminate = next(s for s in run.hosts["web"].steps if s.name == "terminate")
    assert terminate.message.startswith("would ask supervisord program web (RUNNING, main pid %d) to stop" % pid)
    assert supervised.running_pid() == pid and psutil.Process(pid).status() == psutil.STATUS_STOPPED


def test_a_program_configured_as_detached_is_refused_before_any_signal(site, supervised):
    pid = supervised.running_pid()
    stop(pid)
    site.vars.update(manager="detached")
    site.write_inventory()
    run = site.recover()
    assert run.exit_code == 2
    terminate = next(s for s in run.hosts["web"].steps if s.name == "terminate")
    assert "manager is detached, but pid %d is run by supervisord program web" % pid in terminate.message
    assert psutil.Process(pid).status() == psutil.STATUS_STOPPED  # untouched


def test_a_stopped_program_is_started_by_supervisord_when_settings_name_it(site, supervised):
    from cascade_ops.agent import supervisor

    supervisor.rpc(str(supervised.conf)).supervisor.stopProcess("web", True)
    site.vars.update(program="web", supervisor_conf=str(supervised.conf))
    site.write_inventory()
    run = site.recover()
    assert run.exit_code == 0, run.to_json()
    assert site.holders() == [wait_for(supervised.running_pid, message="RUNNING")]


# --------------------------------------------------------------------------- gunicorn


@pytest.mark.parametrize("how,count", [("stopped", 2), ("blocked", 1)])
def test_a_hung_gunicorn_worker_is_replaced_by_its_master(hang_app_site, reaper, how, count):
    # One blocked worker of two goes unnoticed (the other accepts every new connection), so the
    # blocked loop is shown on a master with one worker.
    g = Gunicorn(hang_app_site, reaper, workers=count)
    hung, *others = g.workers()
    shown = hang_app_site.cli("diagnose").stdout
    assert "gunicorn:%d" % g.proc.pid in shown, shown
    if how == "stopped":
        stop(hung)
    else:
        poke(hang_app_site.port, "/block")
    wait_for(lambda: not hang_app_site.health()["ok"] or how == "stopped", message="the worker to hang")
    run = hang_app_site.recover()
    assert run.exit_code == 0, run.to_json()
    steps = {s.name: s.message for s in run.hosts["web"].steps}
    assert "gunicorn master pid %d respawns them" % g.proc.pid in steps["terminate"]
    workers = g.workers()
    assert hung not in workers and set(others) <= set(workers) and len(workers) == count  # only the hung one
    assert sorted(hang_app_site.holders()) == sorted([g.proc.pid, *workers])


def test_a_hung_gunicorn_master_goes_with_its_workers_through_supervisord(hang_app_site, reaper):
    site = hang_app_site
    (site.root / "home").mkdir()
    argv = [
        str(BIN / "gunicorn"),
        "-k",
        "uvicorn.workers.UvicornWorker",
        "-w",
        "2",
        "-b",
        "127.0.0.1:%d" % site.port,
        "--chdir",
        str(site.app_dir),
        "main:app",
    ]
    sv = Supervisord(site.root, reaper, argv, dict(secret_env(site), HOME=str(site.root / "home")))
    master = wait_for(lambda: sv.running_pid() if site.health()["ok"] else None, timeout=30, message="gunicorn")
    stop(master)
    run = site.recover()
    assert run.exit_code == 0, run.to_json()
    steps = {s.name: s.message for s in run.hosts["web"].steps}
    assert steps["terminate"].startswith("asked supervisord program web (RUNNING, main pid %d) to stop" % master)
    now = wait_for(sv.running_pid, message="RUNNING")
    workers = [c.pid for c in psutil.Process(now).children()]
    assert now != master and not psutil.pid_exists(master) and len(workers) == 2
    assert sorted(site.holders()) == sorted([now, *workers])


def test_new_files_reach_a_healthy_gunicorn_by_a_graceful_reload(site, reaper):
    g = Gunicorn(site, reaper)  # the demo backend, without the auth router yet
    old = g.workers()
    run = site.recover()
    assert run.exit_code == 0, run.to_json()
    steps = {s.name: s.message for s in run.hosts["web"].steps}
    assert steps["terminate"].startswith("reloaded gunicorn master pid %d (SIGHUP)" % g.proc.pid)
    assert psutil.Process(g.proc.pid).is_running() and not set(old) & set(g.workers())
    assert "jwt ok" in steps["verify"]  # the new workers serve the router the release mounted
