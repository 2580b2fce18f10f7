"""The crontab entry, on the real crontab of a throwaway user (root's own crontab is never touched)."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from cascade_ops import cron
from cascade_ops.errors import ConfigError
from cascade_ops.inventory import load_inventory
from cascade_ops.transport import LocalTransport
from support import REPO

pytestmark = pytest.mark.skipif(shutil.which("crontab") is None or os.geteuid() != 0,
                                reason="needs crontab (Debian's cron) and root to create a test user")

LOCAL = LocalTransport({"host": "localhost"})
FOREIGN = "17 3 * * * /usr/bin/backup --nightly  # someone else's"


def crontab_lines(user):
    return LOCAL.agent("crontab_lines", user=user)


def test_install_replace_remove_keep_other_entries(site, cron_user):
    LOCAL.agent("crontab_entry", marker="# someone else's", entry=FOREIGN, user=cron_user)
    root_before = subprocess.run(["crontab", "-l"], capture_output=True, text=True).stdout

    first = site.cli("cron.install", "--user", cron_user, "--every", "5m")
    assert first.returncode == 0, first.stderr
    assert "installed" in first.stdout
    twice = site.cli("cron.install", "--user", cron_user, "--every", "5m")
    assert "unchanged" in twice.stdout
    lines = crontab_lines(cron_user)
    assert lines[0] == FOREIGN and len(lines) == 2 and lines[1].startswith("*/5 * * * * ")

    site.cli("cron.install", "--user", cron_user, "--every", "10m")
    lines = crontab_lines(cron_user)
    assert lines[0] == FOREIGN and len(lines) == 2 and lines[1].startswith("*/10 * * * * ")

    status = site.cli("cron.status", "--user", cron_user)
    assert "*/10 * * * *" in status.stdout and "last tick: none yet" in status.stdout

    removed = site.cli("cron.remove", "--user", cron_user)
    assert removed.returncode == 0 and crontab_lines(cron_user) == [FOREIGN]
    assert subprocess.run(["crontab", "-l"], capture_output=True, text=True).stdout == root_before


def test_the_installed_command_performs_a_tick(site, cron_user):
    assert site.cli("cron.install", "--user", cron_user, "--every", "1m").returncode == 0
    entry = crontab_lines(cron_user)[-1]
    command = cron.command_of(entry)
    assert str(REPO) in command and "watch" in command and " %s -m invoke " % sys.executable in command
    # cron runs the line with /bin/sh, a minimal environment and another working directory.
    done = subprocess.run(["/bin/sh", "-c", command], cwd="/", env={"PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    record = json.loads((site.state_dir / "watch.log").read_text().splitlines()[-1])
    assert record["action"] == "recover" and record["outcome"] == "recovered"
    assert site.health()["ok"]
    log = site.root / ".cascade" / "cron.log"
    assert "recover" in log.read_text()
    status = site.cli("cron.status", "--user", cron_user)
    assert '"action": "recover"' in status.stdout


@pytest.mark.parametrize("every, expected", [("1m", "* * * * *"), ("5m", "*/5 * * * *"), ("30m", "*/30 * * * *"),
                                             ("1h", "0 * * * *"), ("6h", "0 */6 * * *"), ("24h", "0 0 * * *")])
def test_schedules(every, expected):
    assert cron.schedule(every) == expected


@pytest.mark.parametrize("every", ["7m", "90s", "5h", "soon"])
def test_uneven_schedules_are_refused(every):
    with pytest.raises(ConfigError):
        cron.schedule(every)


def test_values_are_quoted_and_percent_escaped():
    runner = cron.runner("/venv/bin/python", "/srv/my project", None)
    command = cron.watch_command(runner, "/srv/my project", "/etc/inv.yaml", "web*",
                                 ["x=$(rm -rf /);`id`", "p=50%"], "/var/log/c.log")
    assert "'x=$(rm -rf /);`id`'" in command and "p=50\\%" in command and "'/srv/my project'" in command
    assert "/venv/bin/python -m invoke -r '/srv/my project' watch --inventory /etc/inv.yaml" in command


def test_an_installed_cli_runs_the_watch_by_its_absolute_path():
    runner = cron.runner("/venv/bin/python", "/srv/app", "/opt/cascade ops/bin/cascade-ops")
    command = cron.watch_command(runner, "/srv/app", "/etc/inv.yaml", None, [], "/var/log/c.log")
    assert "&& '/opt/cascade ops/bin/cascade-ops' watch --inventory /etc/inv.yaml >>" in command


def test_fab_cron_install_writes_the_remote_hosts_crontab(make_fleet, cron_user):
    fleet = make_fleet(1)
    argv = [os.path.join(os.path.dirname(sys.executable), "fab"), "-H", "web1", "cron-install",
            "--inventory", str(fleet.inventory), "--user", cron_user, "--every", "15m"]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("web1: installed")
    # The "remote" sshd runs on this machine: its crontab is the one we can read here.
    lines = crontab_lines(cron_user)
    site = fleet.sites["web1"]
    host_local = site.state_dir / "watch-inventory.yaml"
    assert len(lines) == 1 and lines[0].startswith("*/15 * * * * ") and str(host_local) in lines[0]
    assert str(fleet.inventory) not in lines[0]  # the host needs no controller's inventory
    own = load_inventory(str(host_local))
    assert list(own.hosts) == ["web1"] and own.hosts["web1"].vars["connection"] == "local"
    assert own.hosts["web1"].vars["port"] == site.port and "ssh" not in host_local.read_text()
    again = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert again.stdout.startswith("web1: unchanged") and crontab_lines(cron_user) == lines
    # The entry heals the host by itself: cron's shell, no SSH, no controller.
    done = subprocess.run(["/bin/sh", "-c", cron.command_of(lines[0])], cwd="/", env={"PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads((site.state_dir / "watch.log").read_text().splitlines()[-1])["outcome"] == "recovered"
    assert site.health()["ok"]
