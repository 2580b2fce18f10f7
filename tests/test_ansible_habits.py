"""Ansible's habits: its flags mean the same here, --limit patterns select what ansible selects,
recaps count as Ansible counts, --list-hosts and retry files, and reports that tell every host of a
run and the truth about a planned restart. Checked against ansible-core itself where it runs."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from cascade_ops.config.inventory import load_inventory
from cascade_ops.errors import ConfigError
from support import INVOKE, PLAYBOOK, REPO, free_port

ANSIBLE_BIN = os.path.dirname(sys.executable)
ANSIBLE_PLAYBOOK = os.path.join(ANSIBLE_BIN, "ansible-playbook")
CASCADE_OPS = [os.path.join(os.path.dirname(sys.executable), "cascade-ops")]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

INI = """\
[web]
host1 port=8001 app_dir=/srv/a
host2 port=8002 app_dir=/srv/b
host3 port=8003 app_dir=/srv/c

[db]
host3
db1 port=5432 app_dir=/srv/d

[all:vars]
ansible_connection=local
"""


def _help_flags(text):
    """short flag -> its long names, from a --help text."""
    found = {}
    for short, longs in re.findall(
        r"^\s+-([A-Za-z])(?:\s+[A-Z_]+)?,\s+((?:--[\w-]+(?:[= ][A-Z_]+)?(?:,\s*)?)+)", text, re.M
    ):
        found[short] = set(re.findall(r"--([\w-]+)", longs))
    return found


@pytest.mark.skipif(not os.path.exists(ANSIBLE_PLAYBOOK), reason="ansible-core (in the test extra)")
def test_every_short_flag_means_what_it_means_to_ansible_playbook():
    ansible = _help_flags(
        subprocess.run([ANSIBLE_PLAYBOOK, "--help"], capture_output=True, text=True, timeout=60).stdout
    )
    for task in ("recover", "deploy", "diagnose", "verify", "watch"):
        ours = _help_flags(
            subprocess.run(INVOKE + ["--help", task], cwd=REPO, capture_output=True, text=True, timeout=60).stdout
        )
        assert ours, task
        for short, longs in ours.items():
            assert short in ansible, "%s: -%s is not an ansible-playbook flag" % (task, short)
            assert longs & ansible[short], "%s: -%s is %s here, %s to Ansible" % (task, short, longs, ansible[short])
    recover = _help_flags(
        subprocess.run(INVOKE + ["--help", "recover"], cwd=REPO, capture_output=True, text=True, timeout=60).stdout
    )
    assert {"e", "v", "K", "k", "C", "D", "i", "l", "f"} <= set(recover) and "a" not in recover


def test_an_unknown_option_is_a_usage_error_exit_4():
    done = subprocess.run(
        CASCADE_OPS + ["recover", "--no-such-option"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 4 and "usage: No idea what '--no-such-option' is" in done.stderr


@pytest.mark.parametrize(
    "pattern", ["web:!host2", "web,!host2", "web:&db", "all:!db", "host*:!host3", "web,db1", "!host1"]
)
def test_limit_patterns_select_what_ansible_selects(tmp_path, pattern):
    inventory = tmp_path / "hosts"
    inventory.write_text(INI)
    ours = [h.name for h in load_inventory(str(inventory)).select(pattern)]
    ansible = os.path.join(ANSIBLE_BIN, "ansible")
    if not os.path.exists(ansible):
        pytest.skip("ansible-core (in the test extra)")
    listed = subprocess.run(
        [ansible, pattern, "-i", str(inventory), "--list-hosts"],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, ANSIBLE_LOCALHOST_WARNING="false"),
    )
    theirs = [line.strip() for line in listed.stdout.splitlines()[1:] if line.strip()]
    assert sorted(ours) == sorted(theirs), (pattern, listed.stdout + listed.stderr)


def test_a_limit_file_and_a_pattern_that_leaves_nothing(tmp_path):
    inventory = tmp_path / "hosts"
    inventory.write_text(INI)
    retry = tmp_path / "recover.retry"
    retry.write_text("host3\ndb1\n")
    loaded = load_inventory(str(inventory))
    assert [h.name for h in loaded.select("@%s" % retry)] == ["host3", "db1"]
    with pytest.raises(ConfigError, match="leaves no host"):
        loaded.select("web:&db1")


def test_a_password_in_the_inventory_is_refused_by_name(tmp_path):
    inventory = tmp_path / "hosts"
    inventory.write_text(
        INI.replace("ansible_connection=local", "ansible_connection=local\nansible_become_password=hunter2")
    )
    with pytest.raises(ConfigError) as refused:
        load_inventory(str(inventory))
    assert "ansible_become_password" in str(refused.value) and "--ask-become-pass" in str(refused.value)
    assert "hunter2" not in str(refused.value) and refused.value.exit_code == 4


def _two_local_and_one_down(make_site, tmp_path, stuck_first=False):
    """An inventory of real local sites, and one SSH host whose port nothing listens on."""
    good = make_site("good", auth_module=None)
    names = [("web1", good)]
    if stuck_first:
        stuck = make_site(
            "stuck",
            auth_module=None,
            start_timeout="2s",
            start_command="%s -c 'import time; time.sleep(60)'" % sys.executable,
        )
        names.insert(0, ("web0", stuck))
    lines = ["all:", "  hosts:"]
    for name, site in names:
        lines.append("    %s:" % name)
        lines += ["      %s: %s" % (k, json.dumps(v)) for k, v in site.vars.items() if v is not None]
    lines += [
        "    down:",
        "      connection: ssh",
        "      address: 127.0.0.1",
        "      ssh_port: %d" % free_port(),
        "      port: 8000",
        "      app_dir: /srv/app",
        "      connect_timeout: 2",
    ]
    inventory = tmp_path / "hosts.yaml"
    inventory.write_text("\n".join(lines) + "\n")
    return inventory, good


def test_list_hosts_quiet_retry_file_and_a_recap_that_counts_like_ansible(make_site, tmp_path):
    inventory, good = _two_local_and_one_down(make_site, tmp_path)
    listed = subprocess.run(
        INVOKE + ["recover", "-i", str(inventory), "--list-hosts", "-l", "all:!down"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0 and listed.stdout.split() == ["hosts", "(1):", "web1"]
    assert not good.state_dir.exists()  # listing acts on nothing
    retry = tmp_path / "recover.retry"
    done = subprocess.run(
        INVOKE + ["recover", "-i", str(inventory), "--quiet", "--retry-file", str(retry)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 3, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert not [line for line in lines if line.startswith("web1 ") and " changed " in line and "ok=" not in line]
    assert any(line.startswith("down ") and "connect" in line and "failed" in line for line in lines)
    web1 = next(line for line in lines if line.startswith("web1 ") and "ok=" in line)
    steps = json.loads((good.state_dir / "history.jsonl").read_text().splitlines()[-1])["steps"]
    ok_or_changed = sum(1 for s in steps if s["status"] in ("ok", "changed"))
    assert "ok=%d " % ok_or_changed in web1  # Ansible's ok counts the changed tasks too
    assert lines[-1].split()[:3] == ["TOTAL", "2", "hosts:"] and "1 unreachable" in lines[-1]
    assert retry.read_text() == "down\n"
    again = subprocess.run(
        INVOKE + ["recover", "-i", str(inventory), "--list-hosts", "-l", "@%s" % retry],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.stdout.split() == ["hosts", "(1):", "down"]


def test_diagnose_exits_7_when_a_host_is_not_healthy(site):
    down = site.cli("diagnose")
    assert down.returncode == 7 and "nothing listens" in down.stdout
    assert json.loads(site.cli("diagnose", "--json").stdout)["exit_code"] == 7
    assert site.recover().exit_code == 0
    assert site.cli("diagnose").returncode == 0


def test_a_deploys_incident_report_says_planned_restart_not_hang_and_report_shows_a_given_one(site):
    assert site.recover().exit_code == 0
    first = sorted((site.state_dir / "incidents").iterdir())[-1]
    site.auth_module.write_text(site.auth_module.read_text() + "\n# release 2\n")
    assert site.recover().exit_code == 0
    newest = sorted((site.state_dir / "incidents").iterdir())[-1]
    doc = json.loads(newest.read_text())
    assert (
        doc["hang"] is None
        and doc["planned_restart"].startswith("files changed: ")
        and "auth.py" in doc["planned_restart"]
    )
    shown = site.cli("report")
    assert "planned restart: files changed" in shown.stdout and "hang:" not in shown.stdout
    given = site.cli("report", "--incident", first.name)
    assert given.returncode == 0 and str(first) in given.stdout and "planned restart" not in given.stdout
    missing = site.cli("report", "--incident", "incident-nope.json")
    assert missing.returncode == 2 and "no stored incident report incident-nope.json" in missing.stdout + missing.stderr


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium (.ci/run installs it)")
@pytest.mark.parametrize("stopped_rollout", [False, True], ids=["unreachable", "stopped-rollout"])
def test_the_html_report_shows_every_host_of_a_run(make_site, tmp_path, stopped_rollout):
    from cascade_ops import api

    inventory, _ = _two_local_and_one_down(make_site, tmp_path, stuck_first=stopped_rollout)
    extra = {"serial": 1} if stopped_rollout else {}
    run = api.recover(str(inventory), playbook=str(PLAYBOOK), **extra)
    assert run.exit_code in (2, 3)
    expected = (
        {"web1": "not_run", "down": "not_run", "web0": "failed"}
        if stopped_rollout
        else {"web1": "changed", "down": "unreachable"}
    )
    assert {n: h.status for n, h in run.hosts.items()} == expected
    page = tmp_path / "runs.html"
    done = subprocess.run(
        INVOKE + ["report", "-i", str(inventory), "--html", "--out", str(page)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode in (0, 3), done.stdout + done.stderr
    browser = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--user-data-dir=%s" % (tmp_path / "p")]
    dom = subprocess.run(
        browser + ["--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, HOME=str(tmp_path)),
    ).stdout
    heading = re.search(r"run [\w-]+: (\d+) hosts, (\d+) not ok", dom)
    assert heading and int(heading.group(1)) == len(expected), dom[:2000]
    assert int(heading.group(2)) == sum(1 for s in expected.values() if s not in ("ok", "changed"))
    for name, status in expected.items():
        assert re.search(r"<h3>%s <span[^>]*>%s</span>" % (name, status), dom), (name, status)
    if stopped_rollout:  # the failed step's cause, whole: the start's log lines, not only its first line
        assert "not healthy within 2s" in dom and "has no lines from this start" in dom
