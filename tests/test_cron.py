"""The crontab entry, on the real crontab of a throwaway user (root's own crontab is never touched)."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from cascade_ops.config.inventory import load_inventory
from cascade_ops.config.values import parse_duration
from cascade_ops.errors import ConfigError
from cascade_ops.transport.local import LocalTransport
from cascade_ops.watchdog import cron, timers
from support import REPO, Site, SSHServer, ssh_vars, wait_for

pytestmark = pytest.mark.skipif(
    shutil.which("crontab") is None or os.geteuid() != 0,
    reason="needs crontab (Debian's cron) and root to create a test user",
)

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
    done = subprocess.run(
        ["/bin/sh", "-c", command], cwd="/", env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    record = json.loads((site.state_dir / "watch.log").read_text().splitlines()[-1])
    assert record["action"] == "recover" and record["outcome"] == "recovered"
    assert site.health()["ok"]
    log = site.root / ".cascade" / "cron.log"
    assert "recover" in log.read_text()
    status = site.cli("cron.status", "--user", cron_user)
    assert '"action": "recover"' in status.stdout


@pytest.mark.unit
@pytest.mark.parametrize(
    "every, in_cron, on_calendar",
    [
        ("1m", "* * * * *", "*:*"),
        ("5m", "*/5 * * * *", "*:0/5"),
        ("30m", "*/30 * * * *", "*:0/30"),
        ("60m", "0 * * * *", "0/1:00"),
        ("1h", "0 * * * *", "0/1:00"),
        ("6h", "0 */6 * * *", "0/6:00"),
        ("24h", "0 0 * * *", "daily"),
    ],
)
def test_one_period_spelled_for_cron_and_for_a_timer(every, in_cron, on_calendar):
    assert cron.schedule(every) == in_cron
    assert timers.on_calendar(every) == (on_calendar, parse_duration(every))


@pytest.mark.unit
@pytest.mark.parametrize("every", ["7m", "90s", "5h", "48h", "soon", "0s"])
def test_uneven_schedules_are_refused_by_cron_and_timers_alike(every):
    for spell, who in ((cron.schedule, "cron"), (timers.on_calendar, "a timer")):
        with pytest.raises(ConfigError, match="--every") as refused:
            spell(every)
        assert "soon" in every or str(refused.value).split(": ", 1)[-1].startswith(who)


@pytest.mark.unit
def test_values_are_quoted_and_percent_escaped():
    runner = cron.runner("/venv/bin/python", "/srv/my project", None)
    command = cron.watch_command(
        runner, "/srv/my project", "/etc/inv.yaml", "web*", ["x=$(rm -rf /);`id`", "p=50%"], "/var/log/c.log"
    )
    assert "'x=$(rm -rf /);`id`'" in command and "p=50\\%" in command and "'/srv/my project'" in command
    assert "/venv/bin/python -m invoke -r '/srv/my project' watch --inventory /etc/inv.yaml" in command


def test_an_installed_cli_runs_the_watch_by_its_absolute_path():
    runner = cron.runner("/venv/bin/python", "/srv/app", "/opt/cascade ops/bin/cascade-ops")
    command = cron.watch_command(runner, "/srv/app", "/etc/inv.yaml", None, [], "/var/log/c.log")
    assert "&& '/opt/cascade ops/bin/cascade-ops' watch --inventory /etc/inv.yaml >>" in command


def test_fab_cron_install_writes_the_remote_hosts_crontab(make_fleet, cron_user):
    fleet = make_fleet(1)
    argv = [
        os.path.join(os.path.dirname(sys.executable), "fab"),
        "-H",
        "web1",
        "cron-install",
        "--inventory",
        str(fleet.inventory),
        "--user",
        cron_user,
        "--every",
        "15m",
        "--project",
        str(REPO),
    ]
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
    done = subprocess.run(
        ["/bin/sh", "-c", cron.command_of(lines[0])],
        cwd="/",
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads((site.state_dir / "watch.log").read_text().splitlines()[-1])["outcome"] == "recovered"
    assert site.health()["ok"]


def test_fab_cron_status_and_remove_act_on_the_hosts_entry_and_no_cli_there_is_refused(make_fleet, cron_user):
    fleet = make_fleet(1)
    fab = [os.path.join(os.path.dirname(sys.executable), "fab"), "-H", "web1"]
    common = ["--inventory", str(fleet.inventory), "--user", cron_user]
    refused = subprocess.run(
        fab + ["cron-install"] + common,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, HOME="/nonexistent"),
    )
    assert refused.returncode == 2 and "cascade-ops is not installed at" in refused.stdout + refused.stderr
    assert crontab_lines(cron_user) == []
    assert (
        subprocess.run(
            fab + ["cron-install", "--project", str(REPO)] + common, cwd=REPO, capture_output=True, timeout=120
        ).returncode
        == 0
    )
    [line] = crontab_lines(cron_user)
    status = subprocess.run(fab + ["cron-status"] + common, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert status.returncode == 0 and "crontab: %s" % line in status.stdout, status.stdout + status.stderr
    removed = subprocess.run(fab + ["cron-remove"] + common, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert removed.returncode == 0 and "removed the crontab entry" in removed.stdout
    assert crontab_lines(cron_user) == []


@pytest.fixture
def host_account(tmp_path):
    """A user with a home and a shell, who can reach nothing of the controller's (its checkout, its
    venv, the test's files): a real host's account. Removed, crontab and home included, at teardown."""
    name = "cascadeh%s" % os.urandom(3).hex()
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", "--password", "*", name], check=True)
    try:
        yield name, os.path.expanduser("~%s" % name)
    finally:
        subprocess.run(["crontab", "-u", name, "-r"], capture_output=True)
        subprocess.run(["pkill", "-KILL", "-u", name], capture_output=True)
        subprocess.run(["userdel", "--force", "--remove", name], capture_output=True)


@pytest.mark.skipif(not os.path.exists("/usr/bin/python3"), reason="the host account's own python3")
def test_a_hosts_cron_entry_runs_its_bootstrapped_cli_with_no_checkout_anywhere(
    host_account, reaper, ssh_keys, tmp_path
):
    from pathlib import Path

    user, home = host_account

    def as_cron(command):
        """``command`` as cron runs it for that user (its environment, from /), on a machine where the
        controller's checkout is not there: hidden under an empty tmpfs in a mount namespace of its own."""
        hide = 'mount -t tmpfs tmpfs %s && exec /usr/sbin/runuser -u %s -- /bin/sh -c "$0"' % (REPO, user)
        return subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", hide, command],
            cwd="/",
            env={"PATH": "/usr/bin:/bin", "HOME": home, "SHELL": "/bin/sh"},
            capture_output=True,
            text=True,
            timeout=120,
        )

    assert as_cron("test -e %s" % (REPO / "tasks.py")).returncode == 1
    ssh_dir = Path(home) / ".ssh"  # sshd reads it as that user: the test's key directory is root's alone
    ssh_dir.mkdir(mode=0o700)
    (ssh_dir / "authorized_keys").write_text((ssh_keys / "client.pub").read_text())
    subprocess.run(["chown", "-R", "%s:" % user, str(ssh_dir)], check=True)
    server = SSHServer(ssh_keys, reaper)
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(server.known_hosts_line() + "\n")
    site_root = Path(home) / "site"
    site_root.mkdir()
    site = Site(site_root, reaper, **dict(ssh_vars(server, known_hosts), user=user, auth_module=None))
    site.vars.pop("python")  # the backend's interpreter is root's here; the host's watch only probes it
    site.inventory = tmp_path / "inventory.yaml"  # the controller's, where the host account cannot read it
    site.write_inventory()
    subprocess.run(["chown", "-R", "%s:" % user, str(site_root)], check=True)
    site.start_backend_by_hand()
    fab = [os.path.join(os.path.dirname(sys.executable), "fab"), "-H", "web"]
    booted = subprocess.run(
        fab + ["bootstrap", "--inventory", str(site.inventory)], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert booted.returncode == 0, booted.stdout + booted.stderr
    done = subprocess.run(
        fab + ["cron-install", "--inventory", str(site.inventory)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    [line] = crontab_lines(user)
    cli = os.path.join(home, ".local", "share", "cascade-ops", "bin", "cascade-ops")
    assert " %s watch --inventory " % cli in line and str(REPO) not in line and "invoke" not in line
    tick = as_cron(cron.command_of(line))
    assert tick.returncode == 0, tick.stdout + tick.stderr
    log = site.state_dir / "watch.log"
    wait_for(log.exists, message="the tick's log")
    assert json.loads(log.read_text().splitlines()[-1])["outcome"] == "healthy"
