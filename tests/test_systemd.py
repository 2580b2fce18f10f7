"""Backends run by systemd units, on a real systemd booted as PID 1 of its own namespaces
(tests/supervisors/systemd-ns.sh). cascade-ops runs inside them, as on a host systemd runs: a hung
unit is stopped and started through systemctl, never raced by a copy of our own; from outside that
systemd (as from a container's host) the unit's process is left alone."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from managers import SystemdNamespace, secret_env, stop, uvicorn_argv

from support import INVOKE, REPO, SSHServer, poke, ssh_vars, wait_for

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("nsenter") or not os.path.exists("/lib/systemd/systemd"),
    reason="needs root, nsenter and Debian's systemd",
)


@pytest.fixture
def systemd(tmp_path, reaper):
    base = tmp_path / "systemd"
    base.mkdir()
    ns = SystemdNamespace(base, reaper)
    yield ns
    ns.close()


@pytest.fixture
def unit_site(hang_app_site, systemd):
    site = hang_app_site
    env_file = site.root / "web.env"
    env_file.write_text("".join("%s=%s\n" % item for item in secret_env(site).items()))
    systemd.add_unit(
        "web.service",
        "\n".join(
            [
                "[Service]",
                "ExecStart=%s" % " ".join(uvicorn_argv(site)),
                "EnvironmentFile=%s" % env_file,
                "Restart=always",
                "RestartSec=100ms",
                "",
            ]
        ),
    )
    assert systemd.inside("systemctl", "start", "web.service").returncode == 0
    wait_for(lambda: site.health()["ok"], timeout=30, message="web.service to serve")
    return site


def recover_inside(systemd, site, *args):
    done = systemd.inside(
        *INVOKE,
        "recover",
        "--inventory",
        str(site.inventory),
        "--json",
        *args,
        "--playbook",
        str(REPO / "playbooks" / "recover.yaml"),
        cwd=REPO,
    )
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)["hosts"]["web"]


def messages(host):
    return {s["name"]: s["message"] for s in host["steps"]}


@pytest.mark.parametrize("how", ["stopped", "blocked"])
def test_a_hung_unit_is_restarted_through_systemd_without_a_respawn_race(systemd, unit_site, how):
    main = int(systemd.show("web.service", "MainPID"))
    if how == "stopped":
        stop(systemd.host_pid(main))
    else:
        poke(unit_site.port, "/block")
    wait_for(lambda: not unit_site.health()["ok"], message="the unit's backend to hang")
    code, host = recover_inside(systemd, unit_site)
    assert code == 0, host
    said = messages(host)
    assert said["terminate"].startswith("asked systemd unit web.service (active/running, main pid %d) to stop" % main)
    assert said["start"].startswith("started systemd unit web.service (main pid ")
    now = int(systemd.show("web.service", "MainPID"))
    assert now != main and systemd.show("web.service", "ActiveState") == "active"
    assert systemd.show("web.service", "NRestarts") == "0"  # systemd never respawned it on its own
    assert unit_site.holders() == [systemd.host_pid(now)]  # exactly one backend, the unit's
    assert not (unit_site.state_dir / "backend.pid").exists()


def test_from_outside_its_systemd_a_unit_s_backend_is_left_alone(systemd, unit_site):
    main = int(systemd.show("web.service", "MainPID"))
    pid = systemd.host_pid(main)
    stop(pid)
    shown = unit_site.cli("diagnose")
    assert "systemd:web.service" in shown.stdout and "cannot be asked from here" in shown.stdout, shown.stdout
    run = unit_site.recover()
    assert run.exit_code == 2
    said = {s.name: s.message for s in run.hosts["web"].steps}
    assert "pid %d is run by systemd unit web.service" % pid in said["terminate"]
    assert "refusing to signal it" in said["terminate"]
    assert psutil.Process(pid).status() == psutil.STATUS_STOPPED  # untouched
    assert int(systemd.show("web.service", "MainPID")) == main


def test_a_backend_with_no_unit_yet_is_started_as_a_transient_unit(site, systemd):
    site.vars.update(unit="cascade-web")
    site.write_inventory()
    code, host = recover_inside(systemd, site)
    assert code == 0, host
    said = messages(host)
    assert said["start"].startswith("created transient systemd unit cascade-web.service (main pid ")
    assert "jwt ok" in said["verify"]  # the secret reached it through a 0600 environment file
    assert (site.state_dir / "backend.env").stat().st_mode & 0o777 == 0o600
    main = int(systemd.show("cascade-web.service", "MainPID"))
    assert site.holders() == [systemd.host_pid(main)]
    code, again = recover_inside(systemd, site)  # healthy: nothing to do
    assert code == 0 and messages(again)["start"].startswith("running and healthy")
    assert int(systemd.show("cascade-web.service", "MainPID")) == main


def test_a_watchdog_timer_installs_once_ticks_and_goes_away(site, systemd):
    units = systemd.base / "units"
    args = ["--inventory", str(site.inventory), "--unit-dir", str(units)]
    try:
        first = systemd.inside(*INVOKE, "timer.install", "--every", "5m", *args, cwd=REPO)
        assert first.returncode == 0, first.stdout + first.stderr
        name = first.stdout.split("installed systemd timer ")[1].split()[0]
        assert systemd.show(name, "ActiveState") == "active" and systemd.show(name, "Persistent") == "yes"
        assert systemd.show(name, "RandomizedDelayUSec") == "30s"
        again = systemd.inside(*INVOKE, "timer.install", "--every", "5m", *args, cwd=REPO)
        assert "unchanged systemd timer" in again.stdout, again.stdout + again.stderr
        # one tick, as the timer would start it: the backend is down, so it recovers
        service = name.replace(".timer", ".service")
        assert systemd.inside("systemctl", "start", service).returncode == 0
        assert json.loads((site.state_dir / "watch.log").read_text().splitlines()[-1])["outcome"] == "recovered"
        assert site.health()["ok"]
        status = systemd.inside(*INVOKE, "timer.status", "--inventory", str(site.inventory), cwd=REPO)
        assert "%s loaded/active" % name in status.stdout, status.stdout + status.stderr
    finally:
        removed = systemd.inside(*INVOKE, "timer.remove", *args, cwd=REPO)
    assert removed.returncode == 0 and "removed the systemd timer" in removed.stdout, removed.stdout + removed.stderr
    assert not list(units.glob("cascade-ops-watch-*"))
    assert systemd.show(name, "LoadState") == "not-found"
    assert not list(Path("/etc/systemd/system").glob("*/cascade-ops-watch-*"))  # nothing left enabled


def test_where_systemd_does_not_run_timer_install_points_to_cron(site, tmp_path):
    done = site.cli("timer.install", "--unit-dir", str(tmp_path))
    assert done.returncode == 2 and "systemd does not run this host" in done.stdout + done.stderr
    assert "use cron.install instead" in done.stdout + done.stderr and not list(tmp_path.glob("*.timer"))


def test_fab_timer_install_writes_the_timer_on_the_host_it_names(site, systemd, ssh_keys, tmp_path):
    """An SSH host that systemd runs: sshd started as a unit inside the namespace."""

    def launch(argv):
        systemd.inside("mkdir", "-p", "/run/sshd")  # its privilege-separation directory: /run is the namespace's
        done = systemd.inside("systemd-run", "--unit=cascade-test-sshd", *argv)
        assert done.returncode == 0, done.stderr

    server = SSHServer(ssh_keys, None, launch=launch)
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(server.known_hosts_line() + "\n")
    site.vars.update(ssh_vars(server, known_hosts))
    site.write_inventory()
    units = systemd.base / "units"
    fab = [os.path.join(os.path.dirname(sys.executable), "fab"), "-H", "web"]
    args = ["--inventory", str(site.inventory), "--unit-dir", str(units)]
    try:
        # --project: this "host" sees the checkout (a real one would run `bootstrap` first).
        done = subprocess.run(
            fab + ["timer-install", "--every", "10m", "--project", str(REPO)] + args,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        name = done.stdout.split("installed systemd timer ")[1].split()[0]
        assert systemd.show(name, "ActiveState") == "active" and systemd.show(name, "RandomizedDelayUSec") == "1min"
        assert "watch-inventory.yaml" in (units / name.replace(".timer", ".service")).read_text()
    finally:
        subprocess.run(fab + ["timer.remove"] + args, cwd=REPO, capture_output=True, timeout=120)
    assert not list(units.glob("cascade-ops-watch-*"))


def test_the_follower_runs_as_a_service_and_systemd_restarts_it_when_it_hangs(site, systemd):
    site.vars.update(auth_module=None)
    site.write_inventory()
    units = systemd.base / "units"
    args = ["--inventory", str(site.inventory), "--unit-dir", str(units)]
    try:
        done = systemd.inside(*INVOKE, "service.install", "--every", "0.5s", *args, cwd=REPO)
        assert done.returncode == 0, done.stdout + done.stderr
        name = done.stdout.split("installed systemd service ")[1].split()[0]
        assert systemd.show(name, "ActiveState") == "active" and systemd.show(name, "Type") == "notify"
        assert systemd.show(name, "Restart") == "always"
        wait_for(lambda: site.health()["ok"], timeout=60, message="the follower to start the backend")
        # While it recovered, the follower asked for host_timeout's worth of watchdog; then 10 s again.
        wait_for(lambda: systemd.show(name, "WatchdogUSec") == "10s", timeout=30, message="the watchdog back at 10s")
        main = int(systemd.show(name, "MainPID"))
        stop(systemd.host_pid(main))  # the follower itself hangs: its loop says nothing more
        wait_for(
            lambda: (
                systemd.show(name, "NRestarts") not in ("", "0")
                and int(systemd.show(name, "MainPID") or 0) not in (0, main)
            ),
            timeout=45,
            message="systemd's watchdog to restart the follower",
        )
        wait_for(lambda: systemd.show(name, "SubState") == "running", timeout=30, message="the new follower ready")
        status = systemd.inside(*INVOKE, "service.status", "--inventory", str(site.inventory), cwd=REPO)
        assert "loaded/active/running" in status.stdout and "restarts" in status.stdout, status.stdout
        assert site.health()["ok"]  # the backend it started outlived its restart (KillMode=process)
    finally:
        removed = systemd.inside(*INVOKE, "service.remove", *args, cwd=REPO)
    assert removed.returncode == 0 and "removed the follower" in removed.stdout, removed.stdout + removed.stderr
    assert systemd.show(name, "LoadState") == "not-found"


def test_where_systemd_does_not_run_the_follower_is_a_detached_process(hang_app_site, reaper):
    site = hang_app_site
    assert site.recover().exit_code == 0
    done = site.cli("service.install", "--every", "0.3s")
    assert done.returncode == 0 and "installed detached follower pid " in done.stdout, done.stdout + done.stderr
    follower = int(done.stdout.split("detached follower pid ")[1].split()[0])
    reaper.track(follower)
    assert "not supervised" in done.stdout
    again = site.cli("service.install", "--every", "0.3s")
    assert "unchanged detached follower" in again.stdout, again.stdout
    assert "detached follower pid %d" % follower in site.cli("service.status").stdout
    old = site.backend_pid()
    os.kill(old, 19)  # SIGSTOP: the follower heals it
    wait_for(lambda: site.backend_pid() != old and site.health()["ok"], timeout=20, message="healed")
    removed = site.cli("service.remove")
    assert removed.returncode == 0 and "removed the follower" in removed.stdout, removed.stdout + removed.stderr
    wait_for(
        lambda: not psutil.pid_exists(follower) or psutil.Process(follower).status() == psutil.STATUS_ZOMBIE,
        message="the follower stopped",
    )
    assert "no follower" in site.cli("service.status").stdout


def test_a_socket_unit_holds_the_queue_across_a_units_restart(site, systemd):
    """systemd_socket: the transient unit comes with a socket unit; systemd (PID 1) holds the
    listener, so the connections that queue during a hang are answered after the restart."""
    from test_zero_loss import Clients

    site.vars.update(unit="cascade-web", systemd_socket=True, auth_module=None)
    site.write_inventory()
    code, host = recover_inside(systemd, site)
    assert code == 0, host
    assert "with cascade-web.socket holding" in messages(host)["start"] or messages(host)["start"].startswith(
        "created transient systemd unit cascade-web.service"
    ), host
    assert systemd.show("cascade-web.socket", "ActiveState") == "active"
    main = int(systemd.show("cascade-web.service", "MainPID"))
    stop(systemd.host_pid(main))
    wait_for(lambda: site.health().get("error") == "timeout", message="the hang")
    with Clients(site.port) as clients:
        wait_for(lambda: len(clients.threads) >= 5, message="clients queued behind the hang")
        code, host = recover_inside(systemd, site)
        wait_for(lambda: site.health()["ok"], message="service back")
        after = len(clients.threads)
        wait_for(lambda: len(clients.outcomes) >= after, message="clients answered")
    assert code == 0, host
    said = messages(host)
    assert "kept by systemd's socket unit" in said["terminate"], said
    assert clients.failed() == [], clients.outcomes
    assert int(systemd.show("cascade-web.service", "MainPID")) not in (0, main)
    report = json.loads(Path(host["incident_report"]).read_text())
    assert report["socket"]["kept"] and "socket unit" in report["socket"]["why"]
