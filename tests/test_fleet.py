"""Fleet recovery over real SSH (sshd on loopback), in parallel, rolling, strict about host keys."""

import json
import os
import pty
import re
import select
import signal
import socket
import subprocess
import sys
import time
import uuid

import psutil

from cascade_ops import api
from cascade_ops.model.facts import Diagnosis
from cascade_ops.transport.bundle import agent_bundle
from support import INVOKE, REPO, SSHServer, free_port, ssh_vars, wait_for


def statuses(result_json):
    return {name: host["recap"]["status"] for name, host in result_json["hosts"].items()}


def holder_table(d: Diagnosis):
    return [
        (
            h.pid,
            h.process.ppid,
            h.process.user,
            h.process.state,
            h.process.command,
            tuple(s.endpoint for s in h.sockets),
            h.backlog,
        )
        for h in d.holders
    ]


def test_remote_facts_give_the_same_holder_table_as_local(make_fleet):
    fleet = make_fleet(1)
    site = fleet.sites["web1"]
    assert fleet.cli("recover").returncode == 0
    os.kill(site.backend_pid(), signal.SIGSTOP)
    waiting = [socket.create_connection(("127.0.0.1", site.port)) for _ in range(2)]
    try:
        remote = api.diagnose(str(fleet.inventory))["web1"]
        local = api.diagnose(str(fleet.inventory), vars=["connection=local"])["web1"]
    finally:
        for conn in waiting:
            conn.close()
    assert holder_table(remote) == holder_table(local)
    assert remote.holders[0].process.state == "stopped" and remote.backlog == 2
    assert remote.verdict() == local.verdict()


def test_three_hung_hosts_recovered_in_parallel_then_rerun_changes_nothing(make_fleet):
    fleet = make_fleet(3)
    first = fleet.cli("recover", "--limit", "cascade", "--json")
    assert first.returncode == 0, first.stdout + first.stderr
    old = {name: site.backend_pid() for name, site in fleet.sites.items()}
    for pid in old.values():
        os.kill(pid, signal.SIGSTOP)

    result = fleet.cli("recover", "--limit", "cascade", "--json")

    assert result.returncode == 0, result.stdout + result.stderr
    doc = json.loads(result.stdout)
    assert statuses(doc) == {"web1": "changed", "web2": "changed", "web3": "changed"}
    for name, site in fleet.sites.items():
        assert site.health()["ok"] and site.backend_pid() != old[name]
        assert doc["hosts"][name]["incident_report"].startswith(str(site.state_dir))
    again = json.loads(fleet.cli("recover", "--json").stdout)
    assert statuses(again) == {"web1": "ok", "web2": "ok", "web3": "ok"}


def test_down_and_silent_hosts_are_unreachable_others_recover(make_fleet, reaper):
    fleet = make_fleet(2)
    silent = socket.socket()  # accepts TCP (the kernel does) but never says a word of SSH
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        base = dict(fleet.sites["web1"].vars, connect_timeout=2)
        fleet.extra_hosts["down"] = dict(base, ssh_port=free_port())
        fleet.extra_hosts["silent"] = dict(base, ssh_port=silent.getsockname()[1])
        fleet.write_inventory()
        started = time.monotonic()
        result = fleet.cli("recover", "--json")
        elapsed = time.monotonic() - started
    finally:
        silent.close()
    assert result.returncode == 3, result.stdout + result.stderr
    doc = json.loads(result.stdout)
    assert statuses(doc) == {"web1": "changed", "web2": "changed", "down": "unreachable", "silent": "unreachable"}
    assert "refused" in doc["hosts"]["down"]["steps"][0]["message"].lower()
    assert doc["hosts"]["down"]["recap"]["unreachable"] == 1 and doc["hosts"]["down"]["recap"]["failed"] == 0
    silent_step = doc["hosts"]["silent"]["steps"][0]
    assert "no SSH banner within connect_timeout 2s" in silent_step["message"] and silent_step["duration_s"] >= 1.5
    assert "Traceback" not in result.stderr and "Exception" not in result.stderr  # paramiko's go to a debug log
    assert elapsed < 30
    assert all(site.health()["ok"] for site in fleet.sites.values())


def test_unknown_host_key_is_refused_and_accept_new_records_it(make_fleet, reaper, ssh_keys):
    fleet = make_fleet(1)
    stranger = SSHServer(ssh_keys, reaper, host_key="stranger")
    fleet.extra_hosts["stranger"] = dict(fleet.sites["web1"].vars, ssh_port=stranger.port)
    fleet.write_inventory()

    refused = fleet.cli("recover", "--limit", "stranger", "--json")
    assert refused.returncode == 3
    message = json.loads(refused.stdout)["hosts"]["stranger"]["steps"][0]["message"]
    fingerprint = subprocess.run(
        ["ssh-keygen", "-lf", str(ssh_keys / "stranger.pub")], capture_output=True, text=True
    ).stdout.split()[1]
    assert "unknown host key" in message and fingerprint in message and str(stranger.port) in message
    assert not fleet.sites["web1"].state_dir.exists(), "nothing may run on a host that was refused"

    accepted = fleet.cli("recover", "--limit", "stranger", "--accept-new-host-keys")
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert (
        "note: recorded a new host key ssh-ed25519 %s for [127.0.0.1]:%d" % (fingerprint, stranger.port)
        in accepted.stdout
    )
    assert stranger.known_hosts_line("stranger") in fleet.known_hosts.read_text()


def test_changed_host_key_is_always_refused(make_fleet):
    fleet = make_fleet(1)
    server = fleet.servers["web1"]
    forged = fleet.known_hosts.read_text().replace(server.known_hosts_line("host"), server.known_hosts_line("stranger"))
    fleet.known_hosts.write_text(forged)
    result = fleet.cli("recover", "--accept-new-host-keys", "--json")
    assert result.returncode == 3
    assert "host key CHANGED" in json.loads(result.stdout)["hosts"]["web1"]["steps"][0]["message"]


def test_serial_rollout_stops_at_the_host_that_cannot_start(make_fleet):
    fleet = make_fleet(3)
    assert fleet.cli("recover").returncode == 0
    pids = {name: site.backend_pid() for name, site in fleet.sites.items()}
    for pid in pids.values():
        os.kill(pid, signal.SIGSTOP)
    # web2's release crashes at start-up; the rollout must not reach web3.
    (fleet.sites["web2"].app_dir / "main.py").write_text(
        (fleet.sites["web2"].app_dir / "main.py").read_text() + "\nraise SystemExit('broken release')\n"
    )

    result = fleet.cli("recover", "--serial", "1", "--json")

    assert result.returncode == 2
    doc = json.loads(result.stdout)
    assert statuses(doc) == {"web1": "changed", "web2": "failed", "web3": "not_run"}
    assert "rollout stopped after batch 2 of 3" in doc["hosts"]["web3"]["steps"][0]["message"]
    assert fleet.sites["web1"].health()["ok"]
    again = fleet.cli("recover", "--serial", "1")  # the reason shows in the human output too
    assert "rollout stopped after batch" in again.stdout.split("RECAP")[1]
    assert psutil.Process(pids["web3"]).status() == psutil.STATUS_STOPPED


def test_check_mode_over_ssh_changes_nothing(make_fleet):
    fleet = make_fleet(1)
    site = fleet.sites["web1"]
    result = fleet.cli("recover", "--check", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    steps = {s["name"]: s for s in json.loads(result.stdout)["hosts"]["web1"]["steps"]}
    assert steps["start"]["message"].startswith("would start") and steps["deploy_file"]["status"] == "changed"
    assert not (site.app_dir / "api" / "auth.py").exists() and not site.state_dir.exists()
    assert site.holders() == []


INJECTION = "x; touch cx-semicolon $(touch cx-dollar) `touch cx-backtick` 'q\" \\\nnewline"


def test_injection_strings_in_inventory_values_stay_inert(make_fleet):
    fleet = make_fleet(1)
    site = fleet.sites["web1"]
    hostile_dir = site.root / ("app " + INJECTION)
    site.app_dir.rename(hostile_dir)
    site.app_dir, site.state_dir = hostile_dir, hostile_dir / ".cascade-ops"
    site.reaper.pidfiles.append(site.state_dir / "backend.pid")
    site.vars.update(app_dir=str(hostile_dir), process_match="uvicorn|" + re.escape(INJECTION))
    fleet.write_inventory()

    result = fleet.cli("recover", "--json", "--var", "keep_backups=2", "--var", "app=main:app")
    again = fleet.cli("recover", "--json")

    assert result.returncode == 0, result.stdout + result.stderr
    assert again.returncode == 0 and statuses(json.loads(again.stdout)) == {"web1": "ok"}
    assert site.health()["ok"] and (hostile_dir / "api" / "auth.py").exists()
    for place in (os.path.expanduser("~"), site.root, hostile_dir, REPO, "/"):
        assert not [n for n in os.listdir(place) if n.startswith("cx-")], "a shell ran an inventory value"


def test_fab_deploy_to_a_host_named_on_the_command_line(make_fleet):
    fleet = make_fleet(1)
    site = fleet.sites["web1"]
    server = fleet.servers["web1"]
    # Not an inventory host: the inventory's `all` variables describe the backend.
    shared = {k: v for k, v in site.vars.items() if k not in ("connection", "address", "ssh_port", "user")}
    fleet.inventory.write_text(
        "all:\n  vars:\n"
        + "".join("    %s: '%s'\n" % (k, str(v).replace("'", "''")) for k, v in shared.items())
        + "  hosts: {}\n"
    )
    # The inventory needs at least one host to be valid: a local one that this deploy does not touch.
    fleet.inventory.write_text(
        fleet.inventory.read_text().replace("  hosts: {}\n", "  hosts:\n    other: {connection: local}\n")
    )

    done = subprocess.run(
        [
            os.path.join(os.path.dirname(sys.executable), "fab"),
            "-H",
            "root@127.0.0.1:%d" % server.port,
            "deploy",
            "--inventory",
            str(fleet.inventory),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "127.0.0.1" in done.stdout and "verify" in done.stdout
    assert site.health()["ok"] and (site.app_dir / "api" / "auth.py").exists()


def test_host_hanging_mid_run_is_cut_off_at_its_deadline(make_fleet, reaper):
    fleet = make_fleet(2)
    slow = fleet.sites["web2"]
    # web2's backend never finishes importing: its start step would wait start_timeout (60 s).
    (slow.app_dir / "main.py").write_text(
        "import time\nfrom fastapi import FastAPI\napp = FastAPI()\ntime.sleep(600)\n"
    )
    slow.vars.update(start_timeout="60s", host_timeout="6s")
    fleet.write_inventory()

    started = time.monotonic()
    result = fleet.cli("recover", "--json")
    elapsed = time.monotonic() - started

    assert result.returncode == 2, result.stdout + result.stderr
    doc = json.loads(result.stdout)
    assert statuses(doc) == {"web1": "changed", "web2": "failed"}
    last = doc["hosts"]["web2"]["steps"][-1]
    assert last["name"] == "deadline" and "cut off after host_timeout 6s (mid-run)" in last["message"]
    assert elapsed < 40
    assert fleet.sites["web1"].health()["ok"]
    # The cut-off stopped web2's agent (it was waiting out start_timeout, holding web2's lock).
    agent = agent_bundle().name

    def agents():
        return [p for p in psutil.process_iter(["cmdline"]) if agent in " ".join(p.info["cmdline"] or ())]

    wait_for(lambda: not agents(), timeout=10, message="web2's agent to stop")
    reaper.track(slow.backend_pid())  # still importing: the next run's start replaces the pid file
    again = fleet.cli("recover", "--limit", "web2", "--var", "host_timeout=3s")
    assert again.returncode != 5 and "another cascade-ops run holds" not in again.stdout


def test_become_lets_an_unprivileged_ssh_user_recover_a_root_backend(make_fleet, sudo_user):
    fleet = make_fleet(1)
    site = fleet.sites["web1"]
    assert fleet.cli("recover").returncode == 0  # started by root
    root_pid = site.backend_pid()
    os.kill(root_pid, signal.SIGSTOP)
    site.vars.update(user=sudo_user)
    fleet.write_inventory()

    # Without sudo the user sees the listening socket but not who holds it. (The system python:
    # the test venv lives under root's home, which this user cannot enter.)
    blind = api.diagnose(str(fleet.inventory), vars=["python=/usr/bin/python3"])["web1"]
    assert blind.holders == () and blind.orphan_sockets and blind.unreadable_pids > 0
    assert "unhealthy" in blind.verdict()
    # Without become, a recovery stops in preflight, naming each permission it lacks: nothing raw.
    refused = fleet.cli("recover")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    for what in (
        "app_dir %s cannot be reached by user %s" % (site.app_dir, sudo_user),
        "%s cannot be reached by user %s" % (sys.executable, sudo_user),
        "not writable by user",
        "use become",
    ):
        assert what in refused.stdout, (what, refused.stdout)
    assert "PermissionError" not in refused.stdout + refused.stderr

    result = fleet.cli("recover", "--var", "become=true", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert site.health()["ok"] and site.backend_pid() != root_pid
    assert psutil.Process(site.backend_pid()).username() == "root"

    # Once sudo wants a password, every command says so (and how to fix it), not "no output".
    with open("/etc/sudoers.d/%s" % sudo_user, "w") as rule:
        rule.write("%s ALL=(root) ALL\n" % sudo_user)
    for command in ("recover", "diagnose"):
        done = fleet.cli(command, "--var", "become=true")
        assert done.returncode == 2, done.stdout + done.stderr
        assert "become: sudo on this host wants a password for %s" % sudo_user in done.stdout, done.stdout
        assert "NOPASSWD" in done.stdout and "Traceback" not in done.stderr


def test_a_become_password_reaches_sudo_on_its_stdin_and_nowhere_else(make_fleet, sudo_user, tmp_path):
    fleet = make_fleet(1)
    site = fleet.sites["web1"]
    assert fleet.cli("recover").returncode == 0  # started by root
    os.kill(site.backend_pid(), signal.SIGSTOP)
    password = "pw-%s" % uuid.uuid4().hex
    subprocess.run(["chpasswd"], input="%s:%s\n" % (sudo_user, password), text=True, check=True)
    with open("/etc/sudoers.d/%s" % sudo_user, "w") as rule:  # a password every time
        rule.write("Defaults:%s timestamp_timeout=0\n%s ALL=(root) ALL\n" % (sudo_user, sudo_user))
    site.vars.update(user=sudo_user, become=True)
    fleet.write_inventory()

    # --ask-become-pass asks once for the run (from stdin here: no terminal in this session)
    root_pid = site.backend_pid()
    asked = subprocess.run(
        INVOKE + ["recover", "--inventory", str(fleet.inventory), "--ask-become-pass", "--json"],
        cwd=REPO,
        input=password + "\n",
        capture_output=True,
        text=True,
        timeout=180,
        start_new_session=True,
    )
    assert asked.returncode == 0, asked.stdout + asked.stderr
    assert site.health()["ok"] and site.backend_pid() != root_pid
    assert psutil.Process(site.backend_pid()).username() == "root"
    report = json.loads(asked.stdout)["hosts"]["web1"]["incident_report"]
    with open(report) as f:
        assert password not in asked.stdout + asked.stderr + f.read()

    # become_password_file (0600) serves unattended runs the same way
    secret = tmp_path / "become-password"
    secret.write_text(password + "\n")
    secret.chmod(0o600)
    site.vars.update(become_password_file=str(secret))
    fleet.write_inventory()
    os.kill(site.backend_pid(), signal.SIGSTOP)
    unattended = fleet.cli("watch", "--json")
    assert unattended.returncode == 0, unattended.stdout + unattended.stderr
    assert json.loads(unattended.stdout)["hosts"]["web1"]["outcome"] == "recovered" and site.health()["ok"]
    assert password not in unattended.stdout + (site.state_dir / "watch.log").read_text()

    secret.chmod(0o644)
    loose = fleet.cli("diagnose")
    assert loose.returncode == 2 and "is readable by other users (mode 644): chmod 600 it" in loose.stdout
    secret.write_text("not-the-password\n")
    secret.chmod(0o600)
    wrong = fleet.cli("diagnose")
    assert wrong.returncode == 2, wrong.stdout + wrong.stderr
    assert "web1: become: sudo refused the become password for %s" % sudo_user in wrong.stdout, wrong.stdout
    assert "not-the-password" not in wrong.stdout + wrong.stderr


def test_a_host_without_sftp_gets_the_agent_and_the_release_over_the_session(
    make_site, ssh_keys, reaper, sudo_user, tmp_path
):
    server = SSHServer(ssh_keys, reaper, sftp=False)
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(server.known_hosts_line() + "\n")
    # a fresh home (no agent there yet); sudo for the root-owned test files
    site = make_site(**dict(ssh_vars(server, known_hosts), user=sudo_user, become=True))
    home = os.path.expanduser("~%s" % sudo_user)
    done = site.recover()
    assert done.exit_code == 0, done.to_json()
    assert any("no SFTP subsystem" in note for note in done.hosts["web"].notes)
    assert os.path.isdir(os.path.join(home, agent_bundle().remote_path))
    assert site.health()["ok"] and (site.app_dir / "api" / "auth.py").exists()  # the release went inline


def test_watch_over_ssh_recovers_and_reports_an_unreachable_host(make_fleet):
    fleet = make_fleet(1)
    fleet.extra_hosts["down"] = dict(fleet.sites["web1"].vars, ssh_port=free_port())
    fleet.write_inventory()
    result = fleet.cli("watch", "--json")
    assert result.returncode == 3, result.stdout + result.stderr
    ticks = json.loads(result.stdout)["hosts"]
    assert (ticks["web1"]["action"], ticks["web1"]["outcome"]) == ("recover", "recovered")
    assert ticks["down"]["action"] == "unreachable"
    assert fleet.sites["web1"].health()["ok"]
    again = json.loads(fleet.cli("watch", "--json", "--limit", "web1").stdout)["hosts"]
    assert again["web1"]["action"] == "none"


def test_fab_h_acts_on_the_named_hosts_only_once_each(make_fleet):
    fleet = make_fleet(3)
    assert fleet.cli("recover").returncode == 0
    fab = [os.path.join(os.path.dirname(sys.executable), "fab")]
    verify = subprocess.run(
        fab + ["-H", "web2", "verify", "--inventory", str(fleet.inventory)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert {line.split()[0] for line in verify.stdout.splitlines() if line.strip()} == {"web2"}
    diagnose = subprocess.run(
        fab + ["-H", "web1,web2", "diagnose", "--inventory", str(fleet.inventory)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert diagnose.returncode == 0, diagnose.stdout + diagnose.stderr
    tables = [line.split()[0] for line in diagnose.stdout.splitlines() if " port " in line]
    assert tables == ["web1", "web2"]


def test_fab_h_user_port_and_key_win_and_the_host_keeps_its_groups_variables(make_fleet, ssh_keys):
    fleet = make_fleet(1)
    site, server = fleet.sites["web1"], fleet.servers["web1"]
    assert fleet.cli("recover").returncode == 0
    # The backend's variables at group level; the host has only how to reach it, and no key.
    group = {k: v for k, v in site.vars.items() if k not in ("address", "ssh_port", "user", "key_file")}
    fleet.inventory.write_text(
        "all:\n  children:\n    cascade:\n      vars:\n%s      hosts:\n        web1:\n"
        "          address: 127.0.0.1\n          ssh_port: %d\n          user: root\n"
        % ("".join("        %s: %s\n" % (k, json.dumps(v)) for k, v in group.items()), server.port)
    )
    fab = [os.path.join(os.path.dirname(sys.executable), "fab"), "-i", str(ssh_keys / "client")]
    by_address = subprocess.run(
        fab + ["-H", "root@127.0.0.1:%d" % server.port, "diagnose", "--inventory", str(fleet.inventory)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert by_address.returncode == 0, by_address.stdout + by_address.stderr
    assert "web1 port %d: healthy" % site.port in by_address.stdout  # found by address, with its group's port
    elsewhere = subprocess.run(
        fab + ["-H", "nobody@web1:%d" % free_port(), "recover", "--check", "--inventory", str(fleet.inventory)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert elsewhere.returncode == 3, elsewhere.stdout + elsewhere.stderr
    assert "cannot connect to 127.0.0.1:" in elsewhere.stdout and ":%d " % server.port not in elsewhere.stdout


def test_the_agent_finds_its_own_python_apart_from_the_backends(make_fleet):
    fleet = make_fleet(1)
    # `python` is the backend's interpreter only: the agent discovers a Python 3 of its own.
    ok = fleet.cli("diagnose", "--var", "python=/nowhere/venv/bin/python")
    assert ok.returncode == 7 and "web1 port %d: unhealthy: nothing listens" % fleet.sites["web1"].port in ok.stdout, (
        ok.stdout + ok.stderr
    )
    missing = fleet.cli("diagnose", "--var", "agent_python=/nowhere/python3")
    assert missing.returncode == 2
    assert "no Python 3 for the agent on this host (/nowhere/python3): set agent_python" in missing.stdout


def test_every_command_prints_one_json_envelope(make_fleet):
    fleet = make_fleet(2)
    for argv in (["recover"], ["diagnose"], ["verify"], ["report"], ["watch"]):
        done = fleet.cli(*argv, "--json")
        doc = json.loads(done.stdout)
        assert set(doc) == {"hosts", "exit_code"} and set(doc["hosts"]) == {"web1", "web2"}, (argv, doc)
        assert doc["exit_code"] == done.returncode == 0, (argv, done.stdout + done.stderr)
    helped = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "fab"), "--help", "deploy"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "playbooks/deploy.yaml" in " ".join(helped.stdout.split())


def read_terminal(argv, cwd, timeout=90):
    """Run ``argv`` with a terminal as its stdout (as for a person) and return what it showed."""
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(argv, stdout=terminal, stderr=terminal, stdin=subprocess.DEVNULL, cwd=cwd)
    os.close(terminal)
    seen = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if select.select([controller], [], [], 1.0)[0]:
                try:
                    chunk = os.read(controller, 4096)
                except OSError:  # the other end closed: the run is over
                    break
                if not chunk:
                    break
                seen += chunk
    finally:
        os.close(controller)
        proc.wait(timeout=30)
    return proc.returncode, seen.decode("utf-8", "replace").replace("\r\n", "\n")


def test_what_a_person_reads_while_a_release_fails_on_a_fleet_host(make_fleet):
    """Which host waits for what, aligned columns through a rollback, and the cause in the report."""
    fleet = make_fleet(1)
    site = fleet.sites["web1"]
    assert fleet.cli("recover").returncode == 0
    site.auth_module.write_text(
        site.auth_module.read_text() + "\nimport time\ntime.sleep(5)\nraise RuntimeError('release 2 broke')\n"
    )
    code, shown = read_terminal(INVOKE + ["recover", "--inventory", str(fleet.inventory)], REPO)
    assert code == 2, shown
    steps, recap = shown.split("RECAP")
    waiting = [line for line in steps.splitlines() if " waiting " in line]
    assert waiting and waiting[0].split()[:2] == ["web1", "start"], shown
    rows = [
        line
        for line in steps.splitlines()
        if line.startswith("web1 ") and " waiting " not in line and re.search(r"\d\.\d{3}s  ", line)
    ]
    assert any("rollback:start" in row for row in rows) and "rolled_back" in recap
    assert len({re.search(r"\d\.\d{3}s  ", row).start() for row in rows}) == 1, rows
    report = fleet.cli("report")
    assert "release 2 broke" in report.stdout, report.stdout
    assert site.health()["ok"]
