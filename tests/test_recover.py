"""Local recovery end to end, on real uvicorn processes."""

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys

import psutil

from cascade_ops.steps import CHANGED, FAILED
from support import IGNORES_SIGTERM, REPO, gone, python_script, slow_start_app, wait_for


def statuses(run, host="web"):
    return {s.name: s.status for s in run.hosts[host].steps}


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_nothing_running_is_started_and_verified_then_rerun_changes_nothing(site):
    first = site.recover()
    assert first.exit_code == 0, first.to_json()
    assert statuses(first)["start"] == CHANGED
    assert "jwt ok" in next(s.message for s in first.hosts["web"].steps if s.name == "verify")
    pid = site.backend_pid()
    assert site.holders() == [pid]

    second = site.recover()
    assert second.exit_code == 0
    assert not any(s.changed or s.status == FAILED for s in second.hosts["web"].steps), second.to_json()
    assert site.holders() == [pid]


def test_stopped_backend_is_recovered_without_waiting_for_the_probe(site):
    site.recover()
    old = psutil.Process(site.backend_pid())
    old.send_signal(signal.SIGSTOP)

    run = site.recover()

    assert run.exit_code == 0, run.to_json()
    diagnose = next(s for s in run.hosts["web"].steps if s.name == "diagnose")
    assert "stopped" in diagnose.message and diagnose.duration_s < 0.5
    assert gone(old.pid, old.create_time())
    assert site.holders() == [site.backend_pid()] and site.backend_pid() != old.pid
    assert site.health()["ok"]


def test_hung_reload_tree_is_removed_whole(site):
    reloader = site.start_backend_by_hand("--reload")
    tree = [reloader.pid] + [c.pid for c in psutil.Process(reloader.pid).children(recursive=True)]
    assert len(tree) >= 2, "uvicorn --reload should run a reloader and a worker"
    create = {pid: psutil.Process(pid).create_time() for pid in tree}
    for pid in tree:
        os.kill(pid, signal.SIGSTOP)

    run = site.recover()

    assert run.exit_code == 0, run.to_json()
    assert all(gone(pid, create[pid]) for pid in tree), "reloader or worker survived"
    assert site.holders() == [site.backend_pid()]


LAUNCH_WITH_INHERITING_CHILD = python_script("""
    import os, socket, subprocess, sys
    port = int(sys.argv[1])
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    fd = sock.fileno()
    os.set_inheritable(fd, True)
    # A child that inherits the listening socket, as os.system or close_fds=False children do.
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", "inherited-holder"],
                     pass_fds=[fd], start_new_session=False)
    os.execv(sys.executable, [sys.executable, "-m", "uvicorn", "main:app", "--fd", str(fd)])
""")


def test_child_that_inherited_the_socket_goes_too(site, reaper):
    script = site.root / "launch.py"
    script.write_text(LAUNCH_WITH_INHERITING_CHILD)
    backend = reaper.popen(
        [sys.executable, str(script), str(site.port)],
        cwd=site.app_dir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    wait_for(lambda: site.health()["ok"], message="launched backend")
    holders = wait_for(lambda: len(site.holders()) == 2 and site.holders(), message="two holders")
    assert backend.pid in holders
    create = {pid: psutil.Process(pid).create_time() for pid in holders}
    os.kill(backend.pid, signal.SIGSTOP)

    run = site.recover()

    assert run.exit_code == 0, run.to_json()
    assert all(gone(pid, create[pid]) for pid in holders)
    assert site.holders() == [site.backend_pid()]


def test_incident_pair_python_and_foreign_holder_on_one_socket(site, reaper):
    """The incident: `ss` showed python uvicorn and node on the same LISTEN socket."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", site.port))
    sock.listen(128)
    fd = sock.fileno()
    uvicorn = reaper.popen(
        [sys.executable, "-m", "uvicorn", "main:app", "--fd", str(fd)],
        cwd=site.app_dir,
        pass_fds=[fd],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    node = reaper.popen(
        [sys.executable, "-c", "import time; time.sleep(600)", "node", "server.js"],
        pass_fds=[fd],
        start_new_session=True,
    )
    sock.close()
    wait_for(lambda: site.health()["ok"], message="uvicorn on the shared socket")
    assert sorted([uvicorn.pid, node.pid]) == site.holders()
    os.kill(uvicorn.pid, signal.SIGSTOP)

    run = site.recover()

    assert run.exit_code == 0, run.to_json()
    assert wait_for(lambda: uvicorn.poll() is not None and node.poll() is not None, message="both holders exit")
    assert site.holders() == [site.backend_pid()]


def test_hung_holder_ignoring_sigterm_is_killed_without_waiting_out_grace(site, reaper):
    script = site.root / "stubborn.py"
    script.write_text(IGNORES_SIGTERM)
    ready = site.root / "ready"
    # "uvicorn" in its command line: it claims to be the backend, so it is eligible.
    stubborn = reaper.popen([sys.executable, str(script), str(site.port), str(ready), "uvicorn-stub"])
    wait_for(ready.exists, message="stub listening")
    site.vars.update(grace=5, hung_grace=3)
    site.write_inventory()

    run = site.recover()

    steps = {s.name: s for s in run.hosts["web"].steps}
    assert run.exit_code == 0, run.to_json()
    # It failed the probe (known hung) and still listened 0.1 s after SIGTERM: it never will exit. Its
    # replacement runs on the kept socket first, so the start step says it.
    assert "killed (SIGKILL) still listening 0.1s after SIGTERM" in steps["start"].message
    assert steps["terminate"].duration_s < 2.0
    assert stubborn.wait(timeout=5) == -signal.SIGKILL
    assert site.health()["ok"]


UNRELATED = python_script("""
    import socket, sys, time
    sock = socket.socket()
    sock.bind(("127.0.0.1", int(sys.argv[1])))
    sock.listen(16)
    open(sys.argv[2], "w").write("ready")
    time.sleep(600)
""")


def test_unrelated_holder_is_named_and_left_alone(site, reaper):
    script = site.root / "other_service.py"
    script.write_text(UNRELATED)
    ready = site.root / "ready"
    other = reaper.popen([sys.executable, str(script), str(site.port), str(ready)])
    wait_for(ready.exists, message="other service listening")

    result = site.cli("recover")

    assert result.returncode == 2, result.stdout + result.stderr
    assert "pid %d" % other.pid in result.stdout and "does not match process_match" in result.stdout
    assert other.poll() is None
    assert psutil.Process(other.pid).status() != psutil.STATUS_STOPPED
    assert site.holders() == [other.pid]


def test_changed_auth_module_check_mode_then_exactly_one_restart(site):
    site.recover()
    pid = site.backend_pid()
    deployed = site.app_dir / "api" / "auth.py"
    before = sha(deployed)
    site.auth_module.write_text(site.auth_module.read_text() + "\n# release 2\n")

    check = site.cli("recover", "--check", "--diff")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "would replace" in check.stdout and "+# release 2" in check.stdout
    assert (
        "would keep port %d's listening socket" % site.port in check.stdout and "then stop pid %d" % pid in check.stdout
    )
    assert sha(deployed) == before and site.backend_pid() == pid and site.holders() == [pid]

    run = site.recover()
    assert statuses(run)["deploy_file"] == CHANGED and statuses(run)["start"] == CHANGED
    assert sha(deployed) == sha(site.auth_module)
    new_pid = site.backend_pid()
    assert new_pid != pid and gone(pid)

    again = site.recover()
    assert not any(s.changed for s in again.hosts["web"].steps)
    assert site.backend_pid() == new_pid


def test_auth_module_with_syntax_error_is_refused(site):
    site.recover()
    pid = site.backend_pid()
    deployed = site.app_dir / "api" / "auth.py"
    before = sha(deployed)
    site.auth_module.write_text("def broken(:\n")

    run = site.recover()

    assert run.exit_code == 2
    failed = run.hosts["web"].steps[-1]
    assert failed.name == "deploy_file" and failed.status == FAILED and "not valid Python" in failed.message
    assert sha(deployed) == before
    assert site.holders() == [pid]


def test_detached_backend_survives_sighup_to_the_runner_group(site):
    # The runner and this shell share a process group; `kill -HUP 0` hits all of it.
    command = "%s recover --inventory %s; kill -HUP 0; sleep 5" % (
        " ".join(map(str, [sys.executable, "-m", "invoke", "-r", REPO])),
        site.inventory,
    )
    shell = subprocess.Popen(
        ["bash", "-c", command], cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        assert shell.wait(timeout=90) == -signal.SIGHUP
    finally:
        if shell.poll() is None:
            shell.kill()
    pid = site.backend_pid()
    backend = psutil.Process(pid)
    assert os.getpgid(pid) != shell.pid and backend.status() != psutil.STATUS_ZOMBIE
    assert site.health()["ok"]


def test_json_output_is_one_document_matching_the_recap(site):
    result = site.cli("recover", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    host = doc["hosts"]["web"]
    assert [s["name"] for s in host["steps"]] == [
        "preflight",
        "seed_app",
        "diagnose",
        "jwt_secret",
        "deploy_file",
        "mount_router",
        "terminate",
        "start",
        "verify",
    ]
    for status in ("changed", "failed", "skipped"):
        assert host["recap"][status] == sum(1 for s in host["steps"] if s["status"] == status)
    # As Ansible's recap: ok counts the changed steps too.
    assert host["recap"]["ok"] == sum(1 for s in host["steps"] if s["status"] in ("ok", "changed"))
    assert host["recap"]["changed"] >= 1 and host["recap"]["status"] == "changed"
    assert all(set(s) >= {"name", "status", "changed", "message", "duration_s"} for s in host["steps"])


def test_backend_that_cannot_start_fails_with_its_log(site):
    (site.app_dir / "main.py").write_text("raise RuntimeError('boom at import')\n")
    run = site.recover()
    assert run.exit_code == 2
    # mount_router fails first: no FastAPI anchor. Fix the anchor but keep the crash.
    assert statuses(run)["mount_router"] == FAILED
    assert "FastAPI" in next(s.message for s in run.hosts["web"].steps if s.name == "mount_router")
    (site.app_dir / "main.py").write_text(
        "from fastapi import FastAPI\napp = FastAPI()\nraise RuntimeError('boom at import')\n"
    )
    run = site.recover()
    start = next(s for s in run.hosts["web"].steps if s.name == "start")
    assert start.status == FAILED
    assert "exited during start-up" in start.message and "boom at import" in start.message
    report = site.cli("report").stdout  # the cause is in the words, not only in the JSON
    assert "boom at import" in report
    # The previous main.py crashes too: the rollback is tried, fails, and both failures are reported.
    assert statuses(run)["rollback:start"] == FAILED and run.hosts["web"].status == FAILED


def test_a_backend_still_starting_from_an_earlier_run_is_not_doubled(site):
    """A start that never turned healthy leaves its backend (importing for ever, not listening).
    The next run stops it, by the pid it recorded, before starting one: never two copies."""
    (site.app_dir / "main.py").write_text(slow_start_app(600))
    site.vars.update(auth_module=None, start_timeout="2s")
    site.write_inventory()
    first = site.recover()
    assert first.exit_code == 2 and "not healthy within 2s" in first.hosts["web"].first_failure.message
    stuck = site.backend_pid()
    second = site.recover()
    terminate = next(s for s in second.hosts["web"].steps if s.name == "terminate")
    assert "pid %d" % stuck in terminate.message and terminate.status == "changed", terminate.message
    assert gone(stuck)
    copies = [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if str(site.app_dir) in " ".join(p.info["cmdline"] or ()) and p.status() != psutil.STATUS_ZOMBIE
    ]
    assert copies == [site.backend_pid()]
