"""Adding an owner kind is one module with a ``DRIVER`` and one entry in ``agent.owners.KINDS``.
Here a kind cascade-ops does not ship (tests/fake_owner.py; its manager is
tests/supervisors/fake_manager.py) is registered, and nothing else is touched: its variables are
accepted, its hung backend is found, named and recovered through it, never beside it."""

import json
import os
import subprocess
import sys

import psutil
import pytest
from managers import SCRIPTS, secret_env, stop, uvicorn_argv

from cascade_ops.agent import owners
from cascade_ops.config.inventory import load_inventory
from cascade_ops.errors import ConfigError
from support import wait_for

FAKE = owners.OwnerKind("fake_owner", "fake-managed program", ("fake_program",), marks=("fake_manager.py",))


@pytest.fixture
def fake_kind(monkeypatch):
    monkeypatch.setitem(owners.KINDS, "fake", FAKE)


class FakeManager:
    def __init__(self, site, reaper):
        self.state = site.root / "fake-manager.json"
        self.proc = reaper.popen(
            [sys.executable, str(SCRIPTS / "fake_manager.py"), str(self.state), "web", "--", *uvicorn_argv(site)],
            cwd=site.root,
            env=dict(os.environ, **secret_env(site)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def said(self):
        return json.loads(self.state.read_text()) if self.state.exists() else {}

    def running_pid(self):
        said = self.said()
        return said["main_pid"] if said.get("state") == "RUNNING" else None


def _inventory(tmp_path, **extra):
    lines = ["all:", "  hosts:", "    web:", "      port: 8123", "      app_dir: /srv/app"]
    lines += ["      %s: %s" % item for item in extra.items()]
    path = tmp_path / "inventory.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.unit
def test_an_unregistered_kind_and_its_variables_are_refused_by_name(tmp_path):
    path = _inventory(tmp_path, manager="fake")
    with pytest.raises(ConfigError, match=r"inventory.yaml:6: manager: expected auto or .*docker, got .fake."):
        load_inventory(str(path))
    with pytest.raises(ConfigError, match=r"fake_program.*unknown variable|unknown variable.*fake_program"):
        load_inventory(str(_inventory(tmp_path, fake_program="web")))


@pytest.mark.unit
def test_a_registered_kind_brings_its_manager_choice_and_variables(tmp_path, fake_kind):
    [host] = load_inventory(str(_inventory(tmp_path, manager="fake", fake_program="web"))).select()
    assert (host.vars["manager"], host.vars["fake_program"]) == ("fake", "web")


def test_a_hung_backend_of_a_registered_kind_is_recovered_through_its_manager(fake_kind, hang_app_site, reaper):
    site = hang_app_site
    site.vars.update(manager="fake", fake_program="web")
    site.write_inventory()
    manager = FakeManager(site, reaper)
    before = wait_for(
        lambda: manager.running_pid() if site.health()["ok"] else None,
        timeout=30,
        message="the fake manager's program to serve",
    )
    stop(before)

    checked = site.recover(check=True)
    said = {s.name: s.message for s in checked.hosts["web"].steps}
    assert said["terminate"].startswith("would ask fake-managed program web (RUNNING, main pid %d) to stop" % before)
    assert psutil.Process(before).status() == psutil.STATUS_STOPPED  # check mode changed nothing

    run = site.recover()
    assert run.exit_code == 0, run.to_json()
    said = {s.name: s.message for s in run.hosts["web"].steps}
    assert said["terminate"].startswith("asked fake-managed program web (RUNNING, main pid %d) to stop" % before)
    assert said["start"].startswith("started fake-managed program web (main pid "), said["start"]
    after = wait_for(manager.running_pid, message="the manager to run its program again")
    assert after != before and not psutil.pid_exists(before)
    assert site.holders() == [after] and psutil.Process(after).ppid() == manager.proc.pid
    assert manager.said()["restarts"] == 0  # asked to stop and start, never left to respawn a killed one
    assert not (site.state_dir / "backend.pid").exists()  # cascade-ops started nothing of its own
