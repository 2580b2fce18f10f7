"""Acting on the host the operator named, the way ssh would: ~/.ssh/config aliases that share an
address, Port, User, IdentityFile, ProxyJump, UserKnownHostsFile and StrictHostKeyChecking, over
real sshd hosts on loopback. ~/.ssh/config is a temporary HOME's: the real one is never touched."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from support import INVOKE, REPO, free_port

FAB = [os.path.join(os.path.dirname(sys.executable), "fab")]
BACKEND_VARS = ("port", "bind_host", "app_dir", "auth_module", "probe_timeout", "grace", "start_timeout", "python")


def _home(tmp_path, config):
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True, exist_ok=True)
    (home / ".ssh" / "config").write_text(textwrap.dedent(config))
    return home


def _run(argv, home, timeout=120):
    return subprocess.run(
        argv,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        env=dict(os.environ, HOME=str(home)),
    )


def _alias(name, server, key, known_hosts, **extra):
    lines = [
        "Host %s" % name,
        "  HostName 127.0.0.1",
        "  Port %d" % server.port,
        "  User root",
        "  IdentityFile %s" % key,
        "  UserKnownHostsFile %s" % known_hosts,
    ]
    lines += ["  %s %s" % (k, v) for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def test_an_alias_sharing_an_address_acts_on_exactly_its_host(make_fleet, tmp_path, ssh_keys):
    fleet = make_fleet(3)
    assert fleet.cli("recover").returncode == 0
    home = _home(tmp_path, _alias("fleet2", fleet.servers["web2"], ssh_keys / "client", fleet.known_hosts))
    pids = {name: site.backend_pid() for name, site in fleet.sites.items()}
    os.kill(pids["web2"], signal.SIGSTOP)
    for host in ("fleet2", "fleet2:%d" % fleet.servers["web2"].port):
        done = _run(FAB + ["-H", host, "recover", "--inventory", str(fleet.inventory)], home)
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.startswith("web2 ") and "web1 " not in done.stdout and "web3 " not in done.stdout
    assert fleet.sites["web2"].health()["ok"] and fleet.sites["web2"].backend_pid() != pids["web2"]
    assert [fleet.sites[n].backend_pid() for n in ("web1", "web3")] == [pids["web1"], pids["web3"]]
    # An address several inventory hosts share, with no port: which one is meant cannot be told.
    ambiguous = _run(FAB + ["-H", "127.0.0.1", "recover", "--inventory", str(fleet.inventory)], home)
    assert ambiguous.returncode == 4, ambiguous.stdout + ambiguous.stderr
    assert "by 3 inventory hosts" in ambiguous.stderr and all(n in ambiguous.stderr for n in ("web1", "web2", "web3"))
    nowhere = _run(FAB + ["-H", "127.0.0.1:%d" % free_port(), "diagnose", "--inventory", str(fleet.inventory)], home)
    assert nowhere.returncode == 4 and "no inventory host is reached at 127.0.0.1:" in nowhere.stderr


def _alias_inventory(fleet, tmp_path, names):
    """An inventory whose host names are ssh_config aliases: only the backend's variables in it."""
    lines = ["all:", "  vars:", "    connection: ssh", "    connect_timeout: 3", "  hosts:"]
    for alias, site in names.items():
        lines.append("    %s:" % alias)
        lines += ["      %s: %r" % (k, str(site.vars[k])) for k in BACKEND_VARS if site.vars.get(k) is not None]
    inventory = tmp_path / "aliases.yaml"
    inventory.write_text("\n".join(lines) + "\n")
    return inventory


def test_an_inventory_of_aliases_uses_their_port_user_key_and_known_hosts(make_fleet, tmp_path, ssh_keys):
    fleet = make_fleet(2)
    names = {"fleet1": fleet.sites["web1"], "fleet2": fleet.sites["web2"]}
    inventory = _alias_inventory(fleet, tmp_path, names)
    home = _home(
        tmp_path,
        "".join(_alias(a, fleet.servers["web%s" % a[-1]], ssh_keys / "client", fleet.known_hosts) for a in names),
    )
    done = _run(INVOKE + ["recover", "--inventory", str(inventory)], home)
    assert done.returncode == 0, done.stdout + done.stderr
    assert all(site.health()["ok"] for site in names.values())
    pid = names["fleet2"].backend_pid()
    os.kill(pid, signal.SIGSTOP)
    by_alias = _run(FAB + ["-H", "fleet2", "recover", "--inventory", str(inventory)], home)
    assert by_alias.returncode == 0 and by_alias.stdout.startswith("fleet2 "), by_alias.stdout + by_alias.stderr
    assert names["fleet2"].health()["ok"] and names["fleet2"].backend_pid() != pid


def test_strict_host_key_checking_accept_new_records_the_key_and_yes_refuses_it(make_fleet, tmp_path, ssh_keys):
    fleet = make_fleet(1)
    site = fleet.sites["web1"]
    fresh = tmp_path / "fresh_known_hosts"
    inventory = _alias_inventory(fleet, tmp_path, {"fleet1": site})
    strict = _home(
        tmp_path, _alias("fleet1", fleet.servers["web1"], ssh_keys / "client", fresh, StrictHostKeyChecking="yes")
    )
    refused = _run(INVOKE + ["diagnose", "--inventory", str(inventory)], strict)
    assert refused.returncode == 3 and "unknown host key" in refused.stdout + refused.stderr
    assert not fresh.exists() or fresh.read_text() == ""
    accepting = _home(
        tmp_path,
        _alias("fleet1", fleet.servers["web1"], ssh_keys / "client", fresh, StrictHostKeyChecking="accept-new"),
    )
    done = _run(INVOKE + ["diagnose", "--inventory", str(inventory)], accepting)
    assert done.returncode == 7 and "nothing listens" in done.stdout, done.stdout + done.stderr  # reached
    assert "[127.0.0.1]:%d" % fleet.servers["web1"].port in fresh.read_text()


def test_proxy_jump_is_followed_and_its_host_key_verified(make_fleet, tmp_path, ssh_keys):
    fleet = make_fleet(2)
    inventory = _alias_inventory(fleet, tmp_path, {"fleet2": fleet.sites["web2"]})
    jump = _alias("jump", fleet.servers["web1"], ssh_keys / "client", fleet.known_hosts)
    target = _alias("fleet2", fleet.servers["web2"], ssh_keys / "client", fleet.known_hosts, ProxyJump="jump")
    through = _run(INVOKE + ["diagnose", "--inventory", str(inventory)], _home(tmp_path, jump + target))
    assert through.returncode == 7 and "fleet2 port" in through.stdout, through.stdout + through.stderr
    # Through a jump host that cannot be reached, the target is unreachable: the jump is really taken.
    closed = jump.replace("Port %d" % fleet.servers["web1"].port, "Port %d" % free_port())
    done = _run(INVOKE + ["diagnose", "--inventory", str(inventory)], _home(tmp_path, closed + target))
    assert done.returncode == 3, done.stdout + done.stderr
    # A jump host whose key is unknown is refused like any other host.
    unknown = jump.replace(str(fleet.known_hosts), str(tmp_path / "empty_known_hosts"))
    done = _run(INVOKE + ["diagnose", "--inventory", str(inventory)], _home(tmp_path, unknown + target))
    assert done.returncode == 3 and "unknown host key" in done.stdout + done.stderr


def test_an_authentication_failure_names_the_user_and_the_key(make_fleet, tmp_path, ssh_keys):
    fleet = make_fleet(1)
    inventory = _alias_inventory(fleet, tmp_path, {"fleet1": fleet.sites["web1"]})
    home = _home(tmp_path, _alias("fleet1", fleet.servers["web1"], ssh_keys / "stranger", fleet.known_hosts))
    done = _run(INVOKE + ["diagnose", "--inventory", str(inventory)], home)
    assert done.returncode == 3, done.stdout + done.stderr
    text = done.stdout + done.stderr
    assert (
        "authentication failed for user root at 127.0.0.1:%d with key %s"
        % (fleet.servers["web1"].port, ssh_keys / "stranger")
        in text
    )


def test_verify_of_a_hung_backend_over_ssh_prints_nothing_on_stderr(make_fleet):
    fleet = make_fleet(1)
    site = fleet.sites["web1"]
    assert fleet.cli("recover").returncode == 0
    os.kill(site.backend_pid(), signal.SIGSTOP)
    for _ in range(3):  # the traceback came from the tunnel's closing, in 2 runs of 3
        done = fleet.cli("verify", "--accept-new-host-keys")
        assert done.returncode == 2 and "health FAILED" in done.stdout, done.stdout + done.stderr
        assert done.stderr == "", done.stderr


@pytest.fixture
def password_user():
    """A user who logs in with a password only (no key of ours is authorized for it)."""
    name = "cascadepw%s" % os.urandom(3).hex()
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", name], check=True)
    password = "pw-" + os.urandom(6).hex()
    subprocess.run(["chpasswd"], input="%s:%s\n" % (name, password), text=True, check=True)
    try:
        yield name, password
    finally:
        subprocess.run(["pkill", "-KILL", "-u", name], capture_output=True)
        subprocess.run(["userdel", "--force", "--remove", name], capture_output=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create a user")
def test_ask_pass_is_ansibles_k_a_password_login(site, reaper, ssh_keys, password_user, tmp_path):
    from support import SSHServer, ssh_vars

    user, password = password_user
    server = SSHServer(ssh_keys, reaper, passwords=True)
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(server.known_hosts_line() + "\n")
    site.vars.update(ssh_vars(server, known_hosts), user=user, key_file=None, python="/usr/bin/python3")
    site.write_inventory()
    home = _home(tmp_path, "")  # no keys of its own, no agent: the password is the only way in

    def diagnose(*flags, typed=None):
        return subprocess.run(
            INVOKE + ["diagnose", "--inventory", str(site.inventory), *flags],
            cwd=REPO,
            input=typed,
            capture_output=True,
            text=True,
            timeout=120,
            start_new_session=True,
            env=dict(os.environ, HOME=str(home), SSH_AUTH_SOCK=""),
        )

    refused = diagnose()
    assert refused.returncode == 3 and "authentication failed for user %s" % user in refused.stdout
    wrong = diagnose("-k", typed="not-it\n")
    assert wrong.returncode == 3 and "authentication failed" in wrong.stdout
    done = diagnose("-k", typed=password + "\n")
    assert done.returncode in (0, 7) and "web port %d" % site.port in done.stdout, done.stdout + done.stderr
    assert password not in done.stdout + done.stderr
