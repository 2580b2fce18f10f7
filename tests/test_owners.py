"""Through whom a recovery acts, as pure functions of constructed facts: the owner of each holder,
what the settings say, gunicorn masters and workers, and how the agent reads owners off a host."""

import pytest
from test_plans import READ_ONLY, run_on

from cascade_ops.agent import docker, supervisor, systemd
from cascade_ops.steps.base import StepFailed
from cascade_ops.steps.ownership import DETACH, OWNER, RELOAD, WORKERS, effective_manager, route
from cascade_ops.steps.start import Start
from cascade_ops.steps.terminate import Terminate
from support import diagnosis, process

pytestmark = pytest.mark.unit  # a pure decision, parsing or layout: pytest -m unit

UVICORN = "/venv/bin/python -m uvicorn main:app --port 8000"
GUNICORN = "/venv/bin/python /venv/bin/gunicorn -k uvicorn.workers.UvicornWorker -w 2 main:app"
UNIT = {
    "kind": "systemd",
    "unit": "web.service",
    "cgroup": "/system.slice/web.service",
    "reachable": True,
    "main_pid": 100,
    "state": "active/running",
    "restarts": 0,
    "exec_start": UVICORN,
}


def vars_(**extra):
    from test_plans import host_vars

    return host_vars(**extra)


def one_holder(owner, state="S", probe_ok=False, pid=100):
    return diagnosis(
        [process(1, 0, "/sbin/init"), process(pid, 1, UVICORN, state=state)],
        {pid: [7]},
        probe_ok=probe_ok,
        owners={pid: owner} if owner else None,
    )


def targets(d):
    return tuple(h.process for h in d.in_the_way)


# --------------------------------------------------------------------------- which owner


def test_a_holder_in_a_reachable_unit_is_stopped_through_the_unit():
    d = one_holder(UNIT, state="T")
    way = route(d, targets(d), vars_(), healthy=False)
    assert way.action == OWNER and way.owner.name == "web.service" and [p.pid for p in way.targets] == [100]


def test_a_detached_holder_is_terminated_by_cascade_ops_itself():
    d = one_holder(None, state="T")
    assert route(d, targets(d), vars_(), healthy=False).action == DETACH


def test_a_unit_this_host_cannot_ask_is_refused_before_any_signal():
    nested = {
        "kind": "systemd",
        "unit": "web.service",
        "cgroup": "/cascade-test-sd/system.slice/web.service",
        "reachable": False,
        "why": "no systemd runs this host's processes",
    }  # nothing more is known
    d = one_holder(nested, state="T")
    with pytest.raises(StepFailed, match=r"pid 100 is run by systemd unit web.service.*cannot be asked.*no systemd"):
        route(d, targets(d), vars_(), healthy=False)


def test_a_process_a_cron_job_left_in_cron_service_is_not_cron_s_to_restart():
    cron = dict(
        UNIT, unit="cron.service", cgroup="/system.slice/cron.service", main_pid=50, exec_start="/usr/sbin/cron -f"
    )
    d = one_holder(cron, state="T")
    way = route(d, targets(d), vars_(), healthy=False)
    assert way.action == DETACH and "cron.service, which does not run it" in way.notes[0]
    # ...unless the settings say that unit is the backend's
    assert route(d, targets(d), vars_(unit="cron.service"), healthy=False).action == OWNER


@pytest.mark.parametrize(
    "settings,observed,message",
    [
        ({"manager": "systemd"}, None, r"manager is systemd, but pid 100 is run by no owner"),
        ({"unit": "api.service"}, UNIT, r"manager is systemd \(api.service\), but pid 100 is run by systemd unit web"),
        ({"manager": "supervisor"}, UNIT, r"manager is supervisor, but pid 100 is run by systemd unit"),
        ({"manager": "detached"}, UNIT, r"manager is detached, but pid 100 is run by systemd unit web.service"),
    ],
)
def test_settings_that_disagree_with_what_runs_fail_before_any_signal(settings, observed, message):
    d = one_holder(observed, state="T")
    with pytest.raises(StepFailed, match=message):
        route(d, targets(d), vars_(**settings), healthy=False)


def test_holders_of_two_owners_are_refused():
    other = dict(UNIT, unit="api.service", cgroup="/system.slice/api.service", main_pid=101)
    d = diagnosis(
        [process(1, 0, "/sbin/init"), process(100, 1, UVICORN, state="T"), process(101, 1, UVICORN)],
        {100: [7], 101: [7]},
        owners={100: UNIT, 101: other},
    )
    with pytest.raises(StepFailed, match="different owners"):
        route(d, targets(d), vars_(), healthy=False)


def test_auto_takes_its_kind_from_the_named_owner():
    assert effective_manager(vars_()) == "auto"
    assert effective_manager(vars_(unit="web.service")) == "systemd"
    assert effective_manager(vars_(program="web")) == "supervisor"
    assert effective_manager(vars_(container="web")) == "docker"
    assert effective_manager(vars_(manager="detached", unit="web.service")) == "detached"


def test_a_container_is_named_by_name_or_by_an_id_prefix():
    ident = "ab" * 32
    container = {
        "kind": "docker",
        "container": ident,
        "name": "web",
        "socket": "/run/docker.sock",
        "main_pid": 100,
        "reachable": True,
    }
    d = one_holder(container, state="T")
    for name in ("web", ident, ident[:12]):
        assert route(d, targets(d), vars_(container=name), healthy=False).action == OWNER
    with pytest.raises(StepFailed, match="manager is docker"):
        route(d, targets(d), vars_(container=ident[:4]), healthy=False)


# --------------------------------------------------------------------------- gunicorn


def gunicorn(worker_state="S", master_state="S", probe_ok=False, owner=None):
    procs = [
        process(1, 0, "/sbin/init"),
        process(200, 1, GUNICORN, state=master_state, exe="/usr/bin/python3"),
        process(201, 200, GUNICORN, state=worker_state, exe="/usr/bin/python3"),
        process(202, 200, GUNICORN, exe="/usr/bin/python3"),
    ]
    for p in procs[1:]:
        p["comm"] = "gunicorn"
    return diagnosis(
        procs,
        {200: [7], 201: [7], 202: [7]},
        probe_ok=probe_ok,
        owners={pid: owner for pid in (200, 201, 202)} if owner else None,
    )


def test_a_hung_worker_is_ended_and_its_master_respawns_it():
    d = gunicorn(worker_state="T")
    way = route(d, targets(d), vars_(), healthy=False)
    assert way.action == WORKERS and way.master.pid == 200 and [p.pid for p in way.targets] == [201]


def test_workers_that_fail_the_probe_without_a_stopped_one_are_all_ended():
    d = gunicorn()
    way = route(d, targets(d), vars_(), healthy=False)
    assert way.action == WORKERS and [p.pid for p in way.targets] == [201, 202]


def test_a_healthy_gunicorn_with_new_files_is_reloaded_by_sighup():
    d = gunicorn(probe_ok=True)
    way = route(d, targets(d), vars_(), healthy=True)
    assert way.action == RELOAD and way.master.pid == 200


def test_a_hung_master_goes_with_its_workers_through_its_owner():
    unit = dict(UNIT, main_pid=200, exec_start=GUNICORN)
    d = gunicorn(master_state="T", owner=unit)
    way = route(d, targets(d), vars_(), healthy=False)
    assert way.action == OWNER and sorted(p.pid for p in way.targets) == [200, 201, 202]


# --------------------------------------------------------------------------- steps in check mode


def test_check_mode_names_the_owner_and_what_it_would_be_asked():
    d = one_holder(UNIT, state="T")
    run, transport = run_on(d, check=True)
    stop = Terminate().execute(run, {})
    assert stop.message.startswith("would ask systemd unit web.service (active/running, main pid 100) to stop pid 100")
    start = Start().execute(run, {})
    assert start.message == "would ask systemd unit web.service (active/running, main pid 100) to start it"
    assert set(transport.commands()) <= READ_ONLY


NOTHING_LISTENS = {
    "sockets": [],
    "holders": [],
    "unreadable_pids": 0,
    "processes": [process(1, 0, "/sbin/init")],
    "protected": [],
    "probe": None,
}


def test_a_down_backend_is_started_by_the_unit_the_settings_name():
    d = diagnosis([process(1, 0, "/sbin/init")], {})
    missing = {
        "kind": "systemd",
        "unit": "web.service",
        "load_state": "not-found",
        "reachable": True,
        "state": "inactive/dead",
    }
    run, transport = run_on(
        d, check=True, answers={"host_facts": NOTHING_LISTENS, "configured_owner": missing}, unit="web.service"
    )
    result = Start().execute(run, {})
    assert result.message.startswith("would create transient systemd unit web.service running /venv/bin/python -m")
    assert transport.commands() == ["host_facts", "configured_owner"]


def test_an_owner_that_cannot_be_asked_to_start_fails_the_step():
    d = diagnosis([process(1, 0, "/sbin/init")], {})
    gone = {
        "kind": "supervisor",
        "program": "web",
        "reachable": False,
        "why": "2 supervisord processes run here: set supervisor_conf",
    }
    run, _ = run_on(d, answers={"host_facts": NOTHING_LISTENS, "configured_owner": gone}, program="web")
    result = Start().execute(run, {})
    assert result.status == "failed" and result.message == (
        "supervisord program web cannot be asked to start the backend: "
        "2 supervisord processes run here: set supervisor_conf"
    )


# --------------------------------------------------------------------------- reading owners off a host


@pytest.mark.parametrize(
    "text,unit",
    [
        ("0::/system.slice/web.service\n", "web.service"),
        ("12:pids:/\n1:name=systemd:/system.slice/web.service\n0::/\n", "web.service"),
        ("9:name=systemd:/cascade-test-sd/system.slice/web.service\n", "web.service"),
        ("0::/user.slice/user-1000.slice/user@1000.service/app.slice/api.service\n", "api.service"),
        ("0::/user.slice/user-1000.slice/session-3.scope\n", None),
        ("0::/system.slice/docker-0123abcd.scope\n", None),
        ("0::/\n", None),
    ],
)
def test_the_unit_of_a_cgroup(tmp_path, text, unit, monkeypatch):
    path = tmp_path / "cgroup"
    path.write_text(text)
    real_open = open
    monkeypatch.setattr("builtins.open", lambda p, *a, **k: real_open(path if p == "/proc/7/cgroup" else p, *a, **k))
    assert systemd.unit_of(systemd.cgroup_path(7)) == unit


def test_supervisord_s_configuration_is_read_off_its_command_line(tmp_path):
    assert (
        supervisor.conf_from_cmdline(["/v/bin/python", "/v/bin/supervisord", "-n", "-c", "s.conf"], "/srv")
        == "/srv/s.conf"
    )
    assert supervisor.conf_from_cmdline(["supervisord", "--configuration=/etc/x.conf"], "/") == "/etc/x.conf"
    (tmp_path / "supervisord.conf").write_text("[supervisord]\n")
    assert supervisor.conf_from_cmdline(["supervisord"], str(tmp_path)) == str(tmp_path / "supervisord.conf")


def test_dockerd_s_socket_is_read_off_its_command_line():
    assert docker.socket_from_cmdline(["dockerd", "-H", "unix:///tmp/d/docker.sock"]) == "/tmp/d/docker.sock"
    assert docker.socket_from_cmdline(["dockerd", "--host=unix:///x.sock"]) == "/x.sock"
    assert docker.socket_from_cmdline(["dockerd", "-H", "tcp://0.0.0.0:2375"]) is None
