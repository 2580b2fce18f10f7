"""The one scheduler and the transports: every command reaches hosts the same way, and a fault
means the same thing locally and over SSH."""

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest

from cascade_ops import agent
from cascade_ops.errors import HostCommandError
from cascade_ops.transport.base import decode_reply
from cascade_ops.transport.local import LocalTransport
from support import free_port, wait_for


def test_diagnose_prints_every_reachable_host_and_exits_3_within_host_timeout(site):
    site.recover()
    silent = socket.socket()  # accepts TCP (the kernel does) but never says a word of SSH
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    ssh = {
        "connection": "ssh",
        "address": "127.0.0.1",
        "connect_timeout": "20s",
        "host_timeout": "3s",
        "port": 8000,
        "app_dir": "/srv/app",
    }
    lines = ["    %s:" % name for name in ("down", "silent")]
    site.inventory.write_text(
        site.inventory.read_text()
        + "".join(
            "%s\n%s"
            % (line, "".join("      %s: %s\n" % (k, json.dumps(v)) for k, v in dict(ssh, ssh_port=port).items()))
            for line, port in zip(lines, (free_port(), silent.getsockname()[1]))
        )
    )
    try:
        started = time.monotonic()
        done = site.cli("diagnose")
        elapsed = time.monotonic() - started
        as_json = site.cli("diagnose", "--json")
    finally:
        silent.close()
    assert done.returncode == 3, done.stdout + done.stderr
    assert "web port %d: healthy" % site.port in done.stdout
    assert "down: unreachable: cannot connect" in done.stdout
    assert "silent: unreachable: not connected within host_timeout 3s" in done.stdout
    assert elapsed < 3 + 6  # the silent host's 20 s connect_timeout never held the others up
    doc = json.loads(as_json.stdout)["hosts"]
    assert doc["web"]["healthy"] is True and "unreachable" in doc["down"]["error"]


def test_a_local_agent_failure_is_the_same_error_as_over_ssh(tmp_path):
    """Any exception in a local agent command (here a ValueError) is the HostCommandError the
    agent server would have sent back over SSH, never a raw exception."""
    kwargs = {"dest": str(tmp_path / "f"), "backup_dir": str(tmp_path), "content_b64": "!!not base64"}
    with pytest.raises(HostCommandError) as local:
        LocalTransport({"host": "h"}).agent("install_file", **kwargs)
    # The agent as the SSH transport runs it: its package imported by a bare interpreter.
    package = os.path.dirname(agent.__file__)
    boot = "import sys; sys.path.insert(0, %r); from %s.server import main; sys.exit(main(sys.argv))" % (
        os.path.dirname(package),
        os.path.basename(package),
    )
    served = subprocess.run(
        [sys.executable, "-I", "-c", boot, "install_file"],
        capture_output=True,
        text=True,
        input=json.dumps(kwargs) + "\n",
        timeout=30,
    )
    with pytest.raises(HostCommandError) as remote:
        decode_reply("h", "install_file", served.stdout)
    assert str(local.value) == str(remote.value) and "Error" in str(local.value)
    assert not (tmp_path / "f").exists()


def test_an_incident_report_that_cannot_be_written_is_a_warning_not_a_failure(site):
    site.recover()
    shutil.rmtree(site.state_dir / "incidents")  # the first run changed things: it left a report
    (site.state_dir / "incidents").write_text("a file where the directory should be")
    site.cli("demo.hang")
    wait_for(lambda: not site.health()["ok"], message="hang")
    run = site.recover()
    host = run.hosts["web"]
    assert run.exit_code == 0 and host.status == "changed", host.to_json()
    assert host.incident_report is None and "incident report not written" in host.warnings[0]
    assert site.health()["ok"]
    recap = site.cli("recover")
    assert recap.returncode == 0


def test_a_local_host_cut_off_at_host_timeout_stops_acting(site):
    (site.app_dir / "main.py").write_text(  # imports forever: start waits start_timeout (12 s)
        "import time\nfrom fastapi import FastAPI\napp = FastAPI()\ntime.sleep(600)\n"
    )
    site.vars.update(start_timeout="12s", host_timeout="4s")
    site.write_inventory()
    started = time.monotonic()
    run = site.recover()
    assert time.monotonic() - started < 8
    steps = run.hosts["web"].steps
    assert steps[-1].name == "deadline" and "cut off after host_timeout 4s" in steps[-1].message
    main_at_cut = (site.app_dir / "main.py").read_text()
    assert "include_router(auth_router)" in main_at_cut  # the run had changed it before the cut
    wait_for(
        lambda: not any(t.name == "host-web" for t in threading.enumerate()),
        timeout=30,
        message="the cut-off host's thread to end",
    )
    # Had it gone on acting, its start would have failed and its rollback restored main.py and
    # written an incident report.
    assert (site.app_dir / "main.py").read_text() == main_at_cut
    assert not (site.state_dir / "incidents").exists()
