"""Backends in docker containers that docker restarts always, on a private real dockerd: on the
host's network (the backend itself holds the port) and behind docker-proxy (the proxy holds it).
A hung container is stopped and started by dockerd, never raced by a copy of our own."""

import os
import shutil

import psutil
import pytest
from managers import Dockerd, stop

from support import poke, wait_for

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("dockerd") or not shutil.which("docker"),
    reason="needs root and Debian's docker.io (.ci/run installs it)",
)


@pytest.fixture
def dockerd(tmp_path, reaper):
    base = tmp_path / "docker"
    base.mkdir()
    daemon = Dockerd(base, reaper)
    yield daemon
    daemon.close()


@pytest.mark.parametrize("how", ["stopped", "blocked"])
def test_a_hung_container_is_restarted_by_dockerd(dockerd, hang_app_site, how):
    site = hang_app_site
    ident = dockerd.run_backend(site, "web")
    main = dockerd.inspect("web")["State"]["Pid"]
    if how == "stopped":
        stop(main)
    else:
        poke(site.port, "/block")
    wait_for(lambda: not site.health()["ok"], message="the container's backend to hang")
    run = site.recover()
    assert run.exit_code == 0, run.to_json()
    said = {s.name: s.message for s in run.hosts["web"].steps}
    assert said["terminate"].startswith("asked docker container web (running, main pid %d) to stop" % main)
    assert said["start"].startswith("started docker container web (main pid ")
    state = dockerd.inspect("web")
    assert state["Id"] == ident and state["State"]["Running"] and state["RestartCount"] == 0
    assert site.holders() == [state["State"]["Pid"]] and not psutil.pid_exists(main)
    assert not (site.state_dir / "backend.pid").exists()


def test_a_container_behind_docker_proxy_is_judged_by_what_it_runs(dockerd, hang_app_site):
    site = hang_app_site
    dockerd.run_backend(site, "web", publish=True)
    proxy = site.holders()
    assert [psutil.Process(p).name() for p in proxy] == ["docker-proxy"]
    main = dockerd.inspect("web")["State"]["Pid"]
    stop(main)
    wait_for(lambda: not site.health()["ok"], message="the container's backend to hang")
    shown = site.cli("diagnose")
    assert "docker:web" in shown.stdout, shown.stdout
    run = site.recover()
    assert run.exit_code == 0, run.to_json()
    state = dockerd.inspect("web")
    assert state["State"]["Running"] and state["State"]["Pid"] != main and state["RestartCount"] == 0
    assert [psutil.Process(p).name() for p in site.holders()] == ["docker-proxy"]
