"""The safety core as pure functions of facts: which processes to signal, batch sizes, and each
step's plan. Fast: constructed facts and a recording transport, no host."""

import json
import time
from dataclasses import replace

import pytest

from cascade_ops import api
from cascade_ops.config.hostvars import SPECS, HostVars
from cascade_ops.config.values import parse_serial
from cascade_ops.engine.playbook import load_playbook
from cascade_ops.engine.runner import batch_size
from cascade_ops.errors import ConfigError
from cascade_ops.steps import HostRun
from cascade_ops.steps.base import Context, Plan, Skipped, StepFailed, Unchanged
from cascade_ops.steps.diagnose import Diagnose
from cascade_ops.steps.files import DeployFile, JwtSecret, MountRouter, SeedApp
from cascade_ops.steps.outputs import (
    Check,
    Diagnosed,
    FileChanged,
    Installed,
    RestartPlanned,
    Signalled,
    StopPlanned,
    Verified,
)
from cascade_ops.steps.ownership import DETACH, Route
from cascade_ops.steps.preflight import Preflight
from cascade_ops.steps.start import Start, StartFacts, StartPlan
from cascade_ops.steps.terminate import StopFacts, Terminate
from cascade_ops.steps.termination import judge_recorded, plan_termination
from cascade_ops.steps.verify import Verify, VerifyFacts
from cascade_ops.transport.recording import RecordingTransport
from support import diagnosis, process

pytestmark = pytest.mark.unit  # a pure decision, parsing or layout: pytest -m unit

UVICORN = "/venv/bin/python -m uvicorn main:app --port 8000"
SPAWN = "/venv/bin/python -c from multiprocessing.spawn import spawn_main; spawn_main(tracker_fd=5)"
# Commands a check-mode run may ask for: reads only.
READ_ONLY = {
    "host_facts",
    "file_state",
    "read_text",
    "path_kind",
    "list_dir",
    "secret_state",
    "read_secret",
    "tail",
    "take_over_check",
    "configured_owner",
    "owner_status",
    "owner_log",
}


def host_vars(**extra):
    values = {spec.name: spec.default for spec in SPECS.values()}
    values.update(
        host="unit",
        connection="local",
        port=8000,
        app_dir="/srv/app",
        state_dir="/srv/app/.cascade-ops",
        jwt_secret_file="/srv/app/.cascade-ops/jwt-secret",
        python="/venv/bin/python",
        grace=5.0,
    )
    values.update(extra)
    return HostVars.of(values)


def run_on(d=None, check=False, answers=None, **extra):
    transport = RecordingTransport(
        dict({"read_text": None, "take_over_check": {"ok": False, "why": "not asked"}}, **(answers or {}))
    )
    run = HostRun("unit", host_vars(**extra), transport, check=check)
    if d is not None:
        run.register(Diagnosed(d, time.monotonic()))
    return run, transport


def ctx(check=False, **extra):
    """What a plan reads besides its facts: plans are pure, so a plan test needs no run at all."""
    return Context(host_vars(**extra), check=check)


def pids(plan):
    return sorted(p.pid for p in plan.targets)


# --------------------------------------------------------------------------- who is signalled

PY = "/usr/lib/python3.11"


def test_a_reload_worker_and_its_reloader_both_holding_the_socket_go_together():
    d = diagnosis(
        [
            process(1, 0, "/sbin/init"),
            process(50, 1, "bash", exe="/bin/bash"),
            process(100, 50, UVICORN + " --reload", exe=PY),
            process(101, 100, SPAWN, exe=PY),
        ],
        {100: [7], 101: [7]},
    )
    plan = plan_termination(d, "uvicorn", force=False)
    assert pids(plan) == [100, 101] and not plan.refused and not plan.spared


def test_the_incidents_node_process_sharing_the_socket_is_eligible_with_its_workers():
    d = diagnosis(
        [
            process(1, 0, "/sbin/init"),
            process(100, 1, UVICORN, exe=PY),
            process(200, 100, "node server.js", exe="/usr/bin/node"),
            process(201, 200, "node worker.js", exe="/usr/bin/node"),
        ],
        {100: [7], 200: [7]},
    )
    assert pids(plan_termination(d, "uvicorn", force=False)) == [100, 200, 201]


def test_a_tmux_server_whose_command_line_names_uvicorn_is_never_included():
    tmux = "tmux new -d -s b python -m uvicorn main:app --port 8000"
    d = diagnosis(
        [
            process(1, 0, "/sbin/init"),
            process(30, 1, tmux, exe="/usr/bin/tmux"),
            process(31, 30, "-bash", exe="/bin/bash"),
            process(32, 31, UVICORN, exe=PY),
            process(33, 30, "vim notes", exe="/usr/bin/vim"),
        ],
        {32: [7]},
    )
    plan = plan_termination(d, "uvicorn", force=False)
    assert pids(plan) == [32] and not plan.spared


def test_a_broad_process_match_spares_the_holders_parent_and_its_other_children():
    d = diagnosis(
        [
            process(1, 0, "/sbin/init"),
            process(40, 1, "sh supervise.sh", exe="/bin/sh"),
            process(41, 40, UVICORN, exe=PY),
            process(42, 40, "sleep 600", exe="/bin/sleep"),
            process(43, 41, "sleep 5", exe="/bin/sleep"),
            process(44, 41, "python -c worker", exe=PY),
        ],
        {41: [7]},
    )
    plan = plan_termination(d, ".*", force=False)
    assert pids(plan) == [41, 44]  # the backend and its worker only
    assert [p.pid for p in plan.spared] == [43]  # its other child is reported; its parent and sibling unseen


def test_an_unrelated_holder_is_refused_and_nothing_is_signalled_without_force():
    d = diagnosis(
        [process(1, 0, "/sbin/init"), process(100, 1, UVICORN), process(300, 1, "nginx: master")], {100: [7], 300: [8]}
    )
    plan = plan_termination(d, "uvicorn", force=False)
    assert [r.holder.pid for r in plan.refused] == [300] and "does not match" in plan.refused[0].why
    assert pids(plan_termination(d, "uvicorn", force=True)) == [100, 300]


def test_a_protected_holder_is_refused_as_protected_even_with_force():
    d = diagnosis(
        [
            process(1, 0, "/sbin/init"),
            process(40, 1, "sshd: root"),
            process(41, 40, UVICORN),
            process(42, 41, UVICORN + " worker"),
        ],
        {41: [7], 42: [7]},
        protected=[40, 41],
    )
    plan = plan_termination(d, "uvicorn", force=True)
    assert 41 not in pids(plan) and 40 not in pids(plan)
    assert [r.holder.pid for r in plan.refused] == [41] and plan.refused[0].why.startswith("protected")


def recorded(pid=60, cwd="/srv/app", **record):
    """What the agent reports of state_dir/backend.pid: the pid, the start record, the live cwd."""
    start = dict(
        pid=pid, start_ticks=pid * 10, argv=UVICORN.split(), cwd="/srv/app", cwd_real="/srv/app", port=8000, user="app"
    )
    start.update(record)
    return {"pid": pid, "record": start, "cwd": cwd}


def judged(d):
    started, why = judge_recorded(d, 8000, "/srv/app")
    return plan_termination(d, "uvicorn", force=False, started=started), why


def test_a_backend_an_earlier_run_started_and_still_starting_goes_too():
    d = diagnosis(
        [process(1, 0, "/sbin/init"), process(60, 1, UVICORN, exe=PY), process(61, 60, SPAWN, exe=PY)],
        {},
        recorded=recorded(),
    )  # importing for ever: not listening
    plan, why = judged(d)
    assert pids(plan) == [60, 61] and why == ""


@pytest.mark.parametrize(
    "proc,claim,why",
    [
        (process(60, 1, "/venv/bin/python -m uvicorn other:app --port 9000"), recorded(), "command line is not"),
        (process(60, 1, UVICORN, start_ticks=999), recorded(), "another time than recorded (a reused pid)"),
        (process(60, 1, "sleep 600"), recorded(), "command line is not the one recorded"),
        (process(60, 1, UVICORN), recorded(cwd="/srv/other"), "runs in /srv/other, not in app_dir /srv/app"),
        (
            process(60, 1, UVICORN),
            dict(
                recorded(cwd="/srv/other"), record=dict(recorded()["record"], cwd="/srv/other", cwd_real="/srv/other")
            ),
            "not in app_dir /srv/app",
        ),
        (process(60, 1, UVICORN), recorded(port=9000), "started for port 9000, not 8000"),
        (
            process(60, 1, UVICORN),
            dict(recorded(), record=dict(recorded()["record"], pid=61)),
            "start record names pid 61",
        ),
        (process(60, 1, UVICORN), dict(recorded(), record=None), "has no start record"),
    ],
    ids=["another-app", "reused-pid", "sleep", "cwd", "app-dir", "port", "record-pid", "no-record"],
)
def test_a_stale_pid_file_is_a_claim_and_an_unproven_one_is_named_not_signalled(proc, claim, why):
    d = diagnosis([process(1, 0, "/sbin/init"), proc], {}, recorded=claim)
    plan, refusal = judged(d)
    assert pids(plan) == [] and refusal.startswith("pid 60 named by backend.pid") and why in refusal


def test_a_holder_of_another_user_is_refused_naming_both_users_unless_force():
    d = diagnosis([process(1, 0, "/sbin/init"), process(100, 1, UVICORN, user="alice")], {100: [7]}, run_user="root")
    plan = plan_termination(d, "uvicorn", force=False, backend_user="root")
    assert pids(plan) == [] and "runs as user alice, not as the backend's user root" in plan.refused[0].why
    assert pids(plan_termination(d, "uvicorn", force=True, backend_user="root")) == [100]
    same = plan_termination(d, "uvicorn", force=False, backend_user="alice")
    assert pids(same) == [100] and not same.refused


def test_an_owner_managed_holder_of_another_user_is_asked_through_its_owner():
    unit = {"kind": "systemd", "unit": "web.service", "main_pid": 100}
    d = diagnosis([process(1, 0, "/sbin/init"), process(100, 1, UVICORN, user="www")], {100: [7]}, owners={100: unit})
    assert pids(plan_termination(d, "uvicorn", force=False, backend_user="root")) == [100]


def test_a_worker_is_never_found_by_a_matching_parent_that_does_not_hold_the_port():
    d = diagnosis(
        [
            process(1, 0, "/sbin/init"),
            process(20, 1, "python uvicorn-supervisor.py", exe=PY),
            process(21, 20, SPAWN, exe=PY),
        ],
        {21: [7]},
    )
    plan = plan_termination(d, "uvicorn", force=False)
    assert pids(plan) == [] and [r.holder.pid for r in plan.refused] == [21]


# --------------------------------------------------------------------------- batches


@pytest.mark.parametrize(
    "serial,total,size",
    [
        (None, 7, 7),
        (None, 0, 1),
        (1, 7, 1),
        ("3", 7, 3),
        ("10", 3, 10),
        ("50%", 7, 4),
        ("1%", 7, 1),
        ("100%", 7, 7),
        (" 2 ", 5, 2),
    ],
)
def test_batch_sizes(serial, total, size):
    assert batch_size(None if serial is None else parse_serial(serial), total) == size


@pytest.mark.parametrize("serial", ["0", "-1", "0%", "101%", "150%", "x", "1.5", "%", True, ""])
def test_one_rule_for_serial_on_the_command_line_and_in_a_playbook(serial, tmp_path):
    with pytest.raises(ValueError, match="count of hosts"):
        parse_serial(serial)
    with pytest.raises(ConfigError, match="--serial"):
        api._run_options({"serial": serial})
    book = tmp_path / "book.yaml"
    book.write_text("name: b\nserial: %s\nsteps: [diagnose]\n" % json.dumps(serial))
    with pytest.raises(ConfigError, match="count of hosts") as caught:
        load_playbook(str(book))
    assert caught.value.line == 2 and caught.value.field == "serial"


# --------------------------------------------------------------------------- step plans

HEALTHY = diagnosis([process(1, 0, "/sbin/init"), process(100, 1, UVICORN)], {100: [7]}, probe_ok=True)
HUNG = diagnosis([process(1, 0, "/sbin/init"), process(100, 1, UVICORN, state="T")], {100: [7]})


def test_preflight_refuses_the_whole_run_naming_every_problem():
    run, transport = run_on(answers={"preflight": ["app_dir /srv/ap does not exist", "bind_host 127.0.0.l is bad"]})
    with pytest.raises(StepFailed, match=r"not starting: app_dir /srv/ap does not exist; bind_host .*was changed"):
        Preflight().plan(Preflight().gather(run, {}), {}, ctx())
    assert transport.commands() == ["preflight"]
    assert isinstance(Preflight().plan([], {}, ctx()), Unchanged)


def test_diagnose_registers_the_facts_for_the_later_steps_and_changes_nothing():
    found = Diagnosed(HUNG, 1.0)
    outcome = Diagnose().plan(found, {}, ctx())
    assert isinstance(outcome, Unchanged) and "stopped" in outcome.message and outcome.register == (found,)


def test_terminate_leaves_a_healthy_unchanged_backend_running():
    run, transport = run_on(HEALTHY)
    step = Terminate()
    outcome = step.plan(step.gather(run, {}), {}, ctx())
    assert isinstance(outcome, Unchanged) and outcome.register == ()
    assert transport.calls == []


def test_terminate_plans_the_hung_tree_and_check_mode_signals_nothing():
    run, transport = run_on(HUNG, check=True)
    result = Terminate().execute(run, {})
    assert result.status == "changed" and result.message.startswith("would terminate pid 100")
    assert set(transport.commands()) <= READ_ONLY
    planned = run.last(StopPlanned)
    assert run.last(RestartPlanned) is not None and planned is not None and planned.hung
    assert [p.pid for p in planned.route.targets] == [100] and run.last(Signalled) is None


def test_terminate_refuses_an_invisible_holder():
    d = diagnosis([process(1, 0, "/sbin/init")], {}, orphan_inodes=[9])
    with pytest.raises(StepFailed, match="cannot see"):
        Terminate().plan(StopFacts(d, d, None, ()), {}, ctx())


def test_terminate_names_a_refused_holder():
    d = diagnosis([process(1, 0, "/sbin/init"), process(300, 1, "nginx: master", state="T")], {300: [8]})
    with pytest.raises(StepFailed, match=r"refusing to signal anything.*pid 300"):
        Terminate().plan(StopFacts(d, d, None, ()), {}, ctx())


def test_terminate_restarts_a_healthy_backend_for_changed_files_and_says_which():
    outcome = Terminate().plan(StopFacts(HEALTHY, HEALTHY, None, ("/srv/app/main.py",)), {}, ctx())
    assert isinstance(outcome, Plan) and "files changed: /srv/app/main.py" in outcome.summary
    assert not outcome.payload.hung and [p.pid for p in outcome.payload.route.targets] == [100]


def test_start_plans_only_on_a_free_port_and_never_beside_a_holder():
    free = StartFacts(None, None, None, None, None)
    assert isinstance(Start().plan(free, {}, ctx()), Plan)
    assert isinstance(Start().plan(replace(free, current=HEALTHY), {}, ctx()), Unchanged)
    with pytest.raises(StepFailed, match="run the terminate step first"):
        Start().plan(replace(free, current=HUNG), {}, ctx())


def test_verify_skips_in_check_mode_and_leaves_a_healthy_no_op_alone():
    assert isinstance(Verify().plan(VerifyFacts(True, None, None), {"always": False}, ctx(check=True)), Skipped)
    left = Verify().plan(VerifyFacts(False, HEALTHY, None), {"always": False}, ctx())
    assert isinstance(left, Unchanged) and left.register == ()
    run, transport = run_on(HEALTHY)
    assert Verify().gather(run, {"always": False}).checks is None and transport.calls == []
    failed = Check("health", False, "503", 0.01)
    with pytest.raises(StepFailed, match="health FAILED") as caught:
        Verify().plan(VerifyFacts(False, None, (failed,)), {"always": True}, ctx())
    assert caught.value.register == (Verified((failed,)),)  # the incident report shows what failed


def test_deploy_file_plans_by_hash_and_refuses_invalid_python(tmp_path):
    src = tmp_path / "auth.py"
    src.write_text("router = 1\n")
    args = {"src": str(src), "dest": "/srv/app/api/auth.py", "validate": "python"}
    import hashlib

    same = {"file_state": {"exists": True, "sha256": hashlib.sha256(b"router = 1\n").hexdigest()}}
    run, _ = run_on(answers=same)
    assert isinstance(DeployFile().plan(DeployFile().gather(run, args), args, ctx()), Unchanged)
    run, transport = run_on(answers={"file_state": {"exists": False}}, check=True)
    result = DeployFile().execute(run, args)
    assert result.message.startswith("would replace") and run.every(FileChanged) == [FileChanged(args["dest"])]
    assert set(transport.commands()) <= READ_ONLY and run.every(Installed) == []
    src.write_text("def broken(:\n")
    run, _ = run_on(answers={"file_state": {"exists": False}})
    with pytest.raises(StepFailed, match="not valid Python"):
        DeployFile().plan(DeployFile().gather(run, args), args, ctx())


def test_jwt_secret_plans_creation_and_refuses_a_bad_file():
    auth = ctx(auth_module="/src/auth.py")
    plan = JwtSecret().plan({"exists": False}, {"path": "/s"}, auth)
    assert isinstance(plan, Plan) and plan.register == (FileChanged("/s"),)
    # No auth module reads it: a running backend does not use it, so it is not a reason to restart one.
    plan = JwtSecret().plan({"exists": False}, {"path": "/s"}, ctx(auth_module=None))
    assert isinstance(plan, Plan) and plan.register == () and "not restarted for it" in plan.summary
    with pytest.raises(StepFailed, match="not a regular file"):
        JwtSecret().plan({"exists": True, "problems": ["it is not a regular file"]}, {"path": "/s"}, auth)
    assert isinstance(JwtSecret().plan({"exists": True, "problems": []}, {"path": "/s"}, auth), Unchanged)


def test_mount_router_plans_an_edit_once(tmp_path):
    args = {"main": "/srv/app/main.py", "module": "api.auth", "router": "router", "alias": "auth_router"}
    planned = MountRouter().plan("from fastapi import FastAPI\napp = FastAPI()\n", args, ctx())
    assert isinstance(planned, Plan) and b"app.include_router(auth_router)" in planned.payload
    assert planned.register == (FileChanged(args["main"]),)
    assert isinstance(MountRouter().plan(planned.payload.decode(), args, ctx()), Unchanged)


def test_seed_app_fills_only_an_empty_app_dir(tmp_path):
    args = {"src": str(tmp_path), "dest": "/srv/app"}
    assert isinstance(SeedApp().plan(("dir", [".cascade-ops"], True), args, ctx()), Plan)
    assert isinstance(SeedApp().plan(("dir", ["main.py"], True), args, ctx()), Unchanged)
    with pytest.raises(StepFailed, match="exists and is not a directory"):
        SeedApp().plan(("file", None, True), args, ctx())
    with pytest.raises(StepFailed, match=r"app_seed .* is not a directory"):
        SeedApp().plan((None, None, False), args, ctx())


def test_start_fails_when_the_port_is_served_by_a_process_it_did_not_start():
    stray = diagnosis([process(1, 0, "/sbin/init"), process(700, 1, UVICORN)], {700: [7]}, probe_ok=True)
    answers = {
        "file_size": 10,
        "spawn": {"pid": 800},
        "host_facts": {},
        "tail": ["[Errno 98] in use"],
        "wait_healthy": {"ok": True, "elapsed_s": 0.1},
    }
    run, transport = run_on(None, answers=answers)
    transport.answers["host_facts"] = lambda **kwargs: _raw_of(stray)
    with pytest.raises(StepFailed, match=r"pid 800 does not hold port 8000, which is served by pid 700"):
        Start().apply(run, {}, Plan("start", payload=StartPlan(Route(DETACH), None, None, None)))
    assert (
        "tail",
        {
            "path": "/srv/app/.cascade-ops/backend.log",
            "lines": 20,
            "since": 10,
            "redact": ["/srv/app/.cascade-ops/jwt-secret"],
        },
    ) in transport.calls


def _raw_of(d):
    """The agent reply a constructed diagnosis came from."""
    return {
        "sockets": [
            {"inode": s.inode, "address": s.address, "port": s.port, "family": s.family, "backlog": s.backlog}
            for s in d.sockets
        ],
        "holders": [{"pid": h.pid, "inodes": sorted(h.inodes)} for h in d.holders],
        "unreadable_pids": 0,
        "protected": [],
        "processes": [process(p.pid, p.ppid, list(p.cmdline)) for p in d.processes.values()],
        "probe": None,
    }


def test_an_interrupt_before_the_first_step_touches_nothing(monkeypatch):
    import signal

    from cascade_ops.config.hostvars import Host
    from cascade_ops.engine import interrupts
    from cascade_ops.engine.runner import run_host

    monkeypatch.setattr(interrupts, "_requested", signal.SIGINT)
    transport = RecordingTransport({})
    result = run_host(Host("unit", (), host_vars()), transport, [])
    assert result.signal == signal.SIGINT and result.exit_code == 130 and result.status == "interrupted"
    assert set(transport.commands()) <= READ_ONLY and "lock" not in transport.commands()  # no lock, no step


def test_forks_have_a_ceiling_from_the_descriptor_limit():
    from cascade_ops.api import _run_options
    from cascade_ops.engine.scheduler import FORKS_CEILING, max_forks

    assert 1 <= max_forks() <= FORKS_CEILING and _run_options({"forks": "7"})["forks"] == 7
    with pytest.raises(ConfigError, match=r"--forks 100000: at most \d+ here"):
        _run_options({"forks": 100000})


# --------------------------------------------------------------------------- keeping the socket


def _handover(d, **extra):
    from cascade_ops.steps import ownership
    from cascade_ops.steps.takeover import plan_handover

    v = host_vars(**extra)
    targets = tuple(h.process for h in d.in_the_way)
    way = ownership.route(d, targets, v, healthy=False)
    return plan_handover(d, way, v, {"ok": True})


def test_the_socket_is_kept_for_a_detached_backend_and_why_not_is_said_otherwise():
    from cascade_ops.steps.takeover import plan_handover

    hung = diagnosis([process(1, 0, "/sbin/init"), process(100, 1, UVICORN, state="T")], {100: [7]})
    kept, why = _handover(hung)
    assert kept is not None and kept.inode == 7 and kept.holder.pid == 100 and why == ""
    assert _handover(hung, keep_socket=False) == (None, "keep_socket is off")
    assert "has no $LISTEN_FD" in _handover(hung, start_command="/venv/bin/gunicorn -b 0.0.0.0:8000 main:app")[1]
    assert _handover(hung, start_command="/venv/bin/gunicorn -b fd://$LISTEN_FD main:app")[0] is not None
    from cascade_ops.steps import ownership

    way = ownership.route(hung, (hung.processes[100],), host_vars(), healthy=False)
    assert plan_handover(hung, way, host_vars(), {"ok": False, "why": "pidfd_getfd: no ptrace rights"}) == (
        None,
        "pidfd_getfd: no ptrace rights",
    )
    unit = {"kind": "systemd", "unit": "web.service", "main_pid": 100}
    owned = diagnosis(
        [process(1, 0, "/sbin/init"), process(100, 1, UVICORN, state="T")], {100: [7]}, owners={100: unit}
    )
    kept, why = _handover(owned)
    assert kept is None and "its accept queue is not kept" in why
    two = diagnosis([process(1, 0, "/sbin/init"), process(100, 1, UVICORN, state="T")], {100: [7, 8]})
    assert _handover(two) == (None, "2 listening sockets in the way: a replacement takes one")


def test_the_replacement_takes_the_kept_descriptor_in_place_of_its_own_bind():
    from cascade_ops.steps.takeover import on_kept_socket

    argv = [
        "/venv/bin/python",
        "-m",
        "uvicorn",
        "main:app",
        "--app-dir",
        "/srv/app",
        "--host",
        "127.0.0.1",
        "--port",
        "8000",
        "--timeout-graceful-shutdown",
        "4",
    ]
    assert on_kept_socket(argv, 5, default=True) == [
        "/venv/bin/python",
        "-m",
        "uvicorn",
        "main:app",
        "--app-dir",
        "/srv/app",
        "--timeout-graceful-shutdown",
        "4",
        "--fd",
        "5",
    ]
    assert on_kept_socket(["gunicorn", "-b", "fd://$LISTEN_FD", "app"], 9, default=False) == [
        "gunicorn",
        "-b",
        "fd://9",
        "app",
    ]


def test_terminate_plans_to_keep_the_socket_and_check_mode_copies_nothing():
    run, transport = run_on(HUNG, check=True, answers={"take_over_check": {"ok": True}})
    result = Terminate().execute(run, {})
    assert result.status == "changed" and result.message.startswith("would keep port 8000's listening socket")
    assert set(transport.commands()) <= READ_ONLY and "take_over" not in transport.commands()
