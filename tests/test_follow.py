"""The resident watchdog, `watch --follow`: it heals a hang within about a second without a client
failing, keeps its inventory when a new one is broken, spends the restart budget once, finishes a
recovery before it obeys SIGTERM, and holds its memory. Real backends and real followers."""

import json
import os
import signal
import subprocess
import time

import psutil
import pytest
from test_zero_loss import Clients

from cascade_ops.agent.probe import http_probe
from support import poke, wait_for


class Following:
    """`invoke watch --follow` on a site, in its own process group, stopped by PID at the end."""

    def __init__(self, site, *extra):
        self.site = site
        self.log = site.root / "follower.out"
        with open(self.log, "w") as out:  # the child keeps its own descriptor of it
            self.proc = site.reaper.popen(
                site.cli_argv("watch", "--follow", "--every", "0.2s", *extra),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def text(self):
        return self.log.read_text()

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def following(hang_app_site):
    made = []

    def make(*extra):
        made.append(Following(hang_app_site, *extra))
        return made[-1]

    yield make
    for follower in made:
        follower.close()


@pytest.mark.parametrize("how", ["stopped", "blocked_loop"])
def test_the_follower_heals_a_hang_within_a_second_and_no_client_fails(hang_app_site, following, how):
    site = hang_app_site
    assert site.recover().exit_code == 0
    follower = following()
    wait_for(lambda: (site.state_dir / "watch.log").exists(), message="the follower's first tick")
    old = site.backend_pid()
    hung_at = time.monotonic()
    if how == "stopped":
        os.kill(old, signal.SIGSTOP)
        wait_for(
            lambda: site.backend_pid() != old or psutil.Process(old).status() == psutil.STATUS_STOPPED,
            message="stopped",
        )
    else:
        poke(site.port, "/block")
        # Blocked once a connection is no longer accepted (or already healed): clients come after, so
        # none is one the stale process took before it hung (that one is lost with it, by any tool).
        wait_for(
            lambda: (
                site.backend_pid() != old
                or http_probe("127.0.0.1", site.port, "/health", 0.15, 0.05)["error"] == "timeout"
            ),
            message="blocked",
        )
    with Clients(site.port) as clients:
        wait_for(lambda: site.backend_pid() != old and site.health()["ok"], timeout=10, message="healed")
        healed = time.monotonic() - hung_at
        after = len(clients.threads)
        wait_for(lambda: len(clients.outcomes) >= after, message="clients answered")
    assert healed < 3.0, healed  # on this 2-core machine, with the suite running beside it
    assert clients.failed() == [], clients.outcomes
    wait_for(lambda: "recover recovered" in follower.text(), message="the follower's report of it")
    last = json.loads((site.state_dir / "watch.log").read_text().splitlines()[-1])
    assert last["outcome"] == "recovered" or last["action"] == "none"


def test_a_broken_inventory_on_sighup_keeps_the_old_one(hang_app_site, following):
    site = hang_app_site
    assert site.recover().exit_code == 0
    follower = following()
    wait_for(lambda: (site.state_dir / "watch.log").exists(), message="the follower's first tick")
    good = site.inventory.read_text()
    site.inventory.write_text(good.replace("port:", "port: [", 1))
    os.kill(follower.proc.pid, signal.SIGHUP)
    wait_for(lambda: "kept the inventory in use" in follower.text(), message="the reload refused")
    assert follower.proc.poll() is None
    old = site.backend_pid()
    os.kill(old, signal.SIGSTOP)  # still following, on the old inventory
    wait_for(lambda: site.backend_pid() != old and site.health()["ok"], timeout=10, message="healed")
    site.inventory.write_text(good)


def test_a_crash_looping_backend_spends_the_budget_and_alerts_once(hang_app_site, following, webhook):
    site = hang_app_site
    site.vars.update(max_restarts=2, window="1h", alert_webhook=webhook.url, start_timeout="2s")
    site.write_inventory()
    assert site.recover().exit_code == 0
    (site.app_dir / "main.py").write_text("import sys\nsys.exit('crash on import')\n")
    os.kill(site.backend_pid(), signal.SIGKILL)
    follower = following()
    wait_for(lambda: "budget_exhausted" in follower.text(), timeout=30, message="the budget spent")
    state = json.loads((site.state_dir / "watch-state.json").read_text())
    wait_for(lambda: follower.text().count("budget_exhausted") >= 3, timeout=10, message="still probing")
    assert len(state["restarts"]) == 2 and follower.proc.poll() is None
    budget_alerts = [a for a in webhook.received if "budget" in json.dumps(a)]
    assert len(budget_alerts) == 1, webhook.received


def test_sigterm_during_a_recovery_lets_it_finish_then_exits_143(hang_app_site, following):
    site = hang_app_site
    site.vars.update(start_timeout="20s")
    site.write_inventory()
    assert site.recover().exit_code == 0
    slow = "import time\ntime.sleep(2)\n" + (site.app_dir / "main.py").read_text()  # a start that takes 2 s
    (site.app_dir / "main.py").write_text(slow)
    follower = following()
    wait_for(lambda: (site.state_dir / "watch.log").exists(), message="the follower's first tick")
    old = site.backend_pid()
    os.kill(old, signal.SIGSTOP)
    wait_for(lambda: site.backend_pid() != old, timeout=10, message="the recovery under way")
    os.kill(follower.proc.pid, signal.SIGTERM)
    assert follower.proc.wait(30) == 143
    assert site.health()["ok"], "the recovery was cut short"
    assert "recover recovered" in follower.text(), follower.text()


def test_memory_holds_over_three_hundred_probe_cycles(hang_app_site):
    from cascade_ops.api import schedules as scheduled

    site = hang_app_site
    assert site.recover().exit_code == 0
    lines = []
    scheduled.follow(str(site.inventory), every="0.01s", cycles=100, report=lines.append)  # warm
    before = psutil.Process().memory_info().rss
    started = time.monotonic()
    code = scheduled.follow(str(site.inventory), every="0.01s", cycles=300, report=lines.append)
    grew = psutil.Process().memory_info().rss - before
    assert code == 0 and grew < 2 << 20, grew
    assert time.monotonic() - started < 90


def test_fab_service_install_runs_a_follower_on_the_host_it_names(make_fleet):
    """Over SSH, with the host-local inventory cron-install writes: a fleet that heals itself."""
    import sys

    from support import REPO

    fleet = make_fleet(1)
    site = fleet.sites["web1"]
    assert fleet.cli("recover").returncode == 0
    fab = [os.path.join(os.path.dirname(sys.executable), "fab"), "-H", "web1"]
    args = ["--inventory", str(fleet.inventory)]
    done = subprocess.run(
        fab + ["service-install", "--every", "0.3s", "--project", str(REPO)] + args,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and "web1: installed detached follower pid " in done.stdout, done.stdout + done.stderr
    follower = int(done.stdout.split("detached follower pid ")[1].split()[0])
    site.reaper.track(follower)
    try:
        assert "watch-inventory.yaml" in " ".join(psutil.Process(follower).cmdline())
        status = subprocess.run(fab + ["service-status"] + args, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert "detached follower pid %d" % follower in status.stdout, status.stdout + status.stderr
        old = site.backend_pid()
        os.kill(old, signal.SIGSTOP)
        wait_for(lambda: site.backend_pid() != old and site.health()["ok"], timeout=20, message="healed")
    finally:
        removed = subprocess.run(fab + ["service-remove"] + args, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert removed.returncode == 0 and "removed the follower" in removed.stdout, removed.stdout + removed.stderr
    wait_for(
        lambda: not psutil.pid_exists(follower) or psutil.Process(follower).status() == psutil.STATUS_ZOMBIE,
        message="the follower stopped",
    )
