"""Fixtures built from the helpers in ``support.py``."""

import os
import shutil
import subprocess
import uuid

import pytest

from support import HANG_APP, SSHD, Bystander, Fleet, Reaper, Site, WebhookServer, free_port, wait_for


@pytest.fixture
def reaper():
    r = Reaper()
    yield r
    r.reap()


@pytest.fixture
def site(tmp_path, reaper):
    return Site(tmp_path, reaper)


@pytest.fixture
def bystander(tmp_path, reaper):
    """A signal-recording process with "uvicorn" in its command line, beside the backend."""
    return Bystander(tmp_path, reaper)


@pytest.fixture
def make_site(tmp_path, reaper):
    def make(name="site", **extra):
        root = tmp_path / name
        root.mkdir()
        return Site(root, reaper, **extra)

    return make


@pytest.fixture
def redis_url(reaper, tmp_path):
    """A real redis-server on a free loopback port, stopped by PID at teardown."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed (.ci/run installs it)")
    port = free_port()
    proc = reaper.popen(
        [
            server,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = "redis://127.0.0.1:%d/0" % port

    from cascade_ops.steps.verify import redis_ping

    def answers():
        try:
            return redis_ping(url, 0.5) == "+PONG"
        except OSError:
            return False

    wait_for(answers, message="redis-server on port %d" % port)
    yield url, proc


@pytest.fixture
def webhook():
    server = WebhookServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def ssh_keys(tmp_path_factory):
    """A client key and two host keys (one trusted, one not), generated for this test session."""
    if not os.path.exists(SSHD) or shutil.which("ssh-keygen") is None:
        pytest.skip("openssh-server is not installed (.ci/run installs it)")
    root = tmp_path_factory.mktemp("ssh")
    for name in ("client", "host", "stranger"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / name)], check=True)
    (root / "authorized_keys").write_text((root / "client.pub").read_text())
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
    return root


@pytest.fixture
def make_fleet(tmp_path, reaper, ssh_keys):
    def make(count=3, **extra):
        return Fleet(tmp_path, reaper, ssh_keys, count, **extra)

    return make


@pytest.fixture
def cron_user():
    name = "cascade%s" % uuid.uuid4().hex[:8]
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["crontab", "-u", name, "-r"], capture_output=True)
        subprocess.run(["userdel", "--force", name], check=True)


@pytest.fixture
def hang_app_site(site):
    """A site whose backend can be hung for real (a blocked loop at /block), without the auth module."""
    (site.app_dir / "main.py").write_text(HANG_APP)
    site.vars.update(auth_module=None)
    site.write_inventory()
    return site


@pytest.fixture
def sudo_user(ssh_keys):
    """An unprivileged SSH user allowed `sudo -n` (root's own processes hold the port)."""
    if shutil.which("sudo") is None or os.geteuid() != 0:
        pytest.skip("needs sudo (.ci/run installs it) and root to create a user")
    name = "cascadeop%s" % uuid.uuid4().hex[:6]
    # "*": no password, yet not locked ("!"), which sshd without PAM would refuse.
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", "--password", "*", name], check=True)
    # sshd reads authorized keys as the user: the test session's key file is root-only.
    ssh_dir = os.path.expanduser("~%s/.ssh" % name)
    os.makedirs(ssh_dir, mode=0o700)
    shutil.copy(ssh_keys / "client.pub", os.path.join(ssh_dir, "authorized_keys"))
    subprocess.run(["chown", "-R", "%s:%s" % (name, name), ssh_dir], check=True)
    rule = "/etc/sudoers.d/%s" % name
    with open(rule, "w") as f:
        f.write("%s ALL=(root) NOPASSWD: ALL\n" % name)
    os.chmod(rule, 0o440)
    try:
        yield name
    finally:
        os.unlink(rule)
        subprocess.run(["userdel", "--force", "--remove", name], capture_output=True)
