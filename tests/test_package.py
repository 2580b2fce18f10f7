"""cascade-ops as its users install it: a wheel built by setuptools, installed into a fresh venv far
from the checkout (no index: dependencies come from wheels repacked off this venv, as `bootstrap`
ships them), runs the bundled demo; `bootstrap` installs this very version on an SSH host, once."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from cascade_ops import resources
from cascade_ops.api import wheels
from cascade_ops.transport.local import LocalTransport
from cascade_ops.watchdog import cron
from support import REPO, free_port

LOCAL = LocalTransport({"host": "localhost"})

VERSION = resources.version()


def run(argv, cwd, timeout=300, **kwargs):
    return subprocess.run(
        [str(a) for a in argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        **kwargs,
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A fresh venv holding the wheel setuptools builds of this checkout, with the demo extra."""
    root = tmp_path_factory.mktemp("installed")
    source = root / "source"  # building in a copy keeps build/ out of the checkout
    shutil.copytree(
        REPO,
        source,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", ".cascade", "__pycache__", "build", "*.egg-info", ".mypy_cache", ".ruff_cache"
        ),
    )
    links = root / "links"
    built = run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", links, source], cwd=root
    )
    assert built.returncode == 0, built.stderr
    for dist in wheels.requirements("cascade-ops", ("demo",)):
        name, data = wheels.repacked(dist)
        (links / name).write_bytes(data)
    venv = root / "venv"
    assert run([sys.executable, "-m", "venv", venv], cwd=root).returncode == 0
    done = run(
        [
            venv / "bin" / "pip",
            "install",
            "-q",
            "--no-index",
            "--disable-pip-version-check",
            "--find-links",
            links,
            "cascade-ops[demo]==%s" % VERSION,
        ],
        cwd=root,
    )
    assert done.returncode == 0, done.stderr
    return venv


def test_the_wheel_s_command_answers_anywhere(installed, tmp_path):
    cli = installed / "bin" / "cascade-ops"
    version = run([cli, "--version"], cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.splitlines()[0] == "cascade-ops %s" % VERSION
    listed = run([cli, "--list"], cwd=tmp_path).stdout
    for name in ("recover", "deploy", "diagnose", "verify", "watch", "report", "bootstrap", "cron.install", "demo"):
        assert "  " + name in listed, listed
    helped = run([cli, "--help", "recover"], cwd=tmp_path).stdout
    assert "Recover the backend on the inventory's hosts" in helped and "--inventory" in helped
    module = run([installed / "bin" / "python", "-m", "cascade_ops", "--version"], cwd=tmp_path)
    assert module.stdout.splitlines()[0] == "cascade-ops %s" % VERSION
    missing = run([cli, "recover"], cwd=tmp_path)
    assert missing.returncode == 4 and "inventory.yaml" in missing.stderr


def test_the_wheel_recovers_its_bundled_demo_with_its_built_in_playbook(installed, tmp_path, reaper):
    cli = installed / "bin" / "cascade-ops"
    port = free_port()
    reaper.ports.append(port)
    reaper.pidfiles.append(tmp_path / ".cascade" / "demo-backend" / ".cascade-ops" / "backend.pid")
    first = run([cli, "demo", "--port", port, "--json"], cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    steps = {s["name"]: s for s in json.loads(first.stdout)["hosts"]["localhost"]["steps"]}
    assert steps["verify"]["status"] == "ok" and "jwt ok" in steps["verify"]["message"]
    inventory = tmp_path / ".cascade" / "demo-inventory.yaml"
    hang = run([cli, "demo.hang", "-i", inventory], cwd=tmp_path)
    assert hang.returncode == 0, hang.stderr
    again = run([cli, "recover", "-i", inventory, "--json"], cwd=tmp_path)  # no playbooks/ beside it
    assert again.returncode == 0, again.stdout + again.stderr
    steps = {s["name"]: s for s in json.loads(again.stdout)["hosts"]["localhost"]["steps"]}
    assert steps["terminate"]["status"] == steps["start"]["status"] == "changed"
    assert steps["verify"]["status"] == "ok"


def test_bootstrap_installs_this_version_on_an_ssh_host_once(make_fleet, tmp_path, cron_user):
    fleet = make_fleet(1)
    prefix = tmp_path / "host-venv"
    cli = [os.path.join(os.path.dirname(sys.executable), "cascade-ops"), "-H", "web1"]  # the checkout's script
    first = subprocess.run(
        cli + ["bootstrap", "-i", str(fleet.inventory), "--prefix", str(prefix)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert first.returncode == 0, first.stdout + first.stderr
    assert "web1: installed %s" % (prefix / "bin" / "cascade-ops") in first.stdout
    there = run([prefix / "bin" / "cascade-ops", "--version"], cwd=tmp_path)
    assert there.stdout.splitlines()[0] == "cascade-ops %s" % VERSION
    again = fleet.cli("bootstrap", "--prefix", str(prefix))
    assert again.returncode == 0 and "web1: already at %s" % (prefix / "bin" / "cascade-ops") in again.stdout

    # The host's watchdog then runs that CLI, by its absolute path, from the host's own crontab.
    fab = [os.path.join(os.path.dirname(sys.executable), "fab"), "-H", "web1"]
    entry = subprocess.run(
        fab
        + [
            "cron-install",
            "--inventory",
            str(fleet.inventory),
            "--user",
            cron_user,
            "--python",
            str(prefix / "bin" / "python"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert entry.returncode == 0, entry.stdout + entry.stderr
    [line] = LOCAL.agent("crontab_lines", user=cron_user)
    assert " %s watch --inventory " % (prefix / "bin" / "cascade-ops") in line and "invoke" not in line
    done = subprocess.run(
        ["/bin/sh", "-c", cron.command_of(line)],
        cwd="/",
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    site = fleet.sites["web1"]
    assert json.loads((site.state_dir / "watch.log").read_text().splitlines()[-1])["outcome"] == "recovered"
    assert site.health()["ok"]
