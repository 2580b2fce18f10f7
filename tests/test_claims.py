"""Never make it worse, second round: act only on what this run can prove is its own backend.

A stale pid file, another user's process, a healthy backend met for the first time, a slow one,
failed deploys and a full disk: each on real processes, with a signal-recording bystander beside
the backend, against a healthy backend and a hung one."""

import json
import os
import signal
import subprocess
import sys

import psutil
import pytest
from test_no_harm import assert_untouched, ready

from support import free_port, python_script, wait_for


def _claim(site, pid, record=None):
    """Write the pid file (and a start record) an earlier run, or a copied state dir, left behind."""
    site.state_dir.mkdir(parents=True, exist_ok=True)
    (site.state_dir / "backend.pid").write_text("%d\n" % pid)
    start = site.state_dir / "backend.start.json"
    if record is not None:
        start.write_text(json.dumps(record))
    elif start.exists():
        start.unlink()  # a pid file from an older cascade-ops, or written by hand


def _forged_record(site, pid):
    """A start record as spawn writes it, for ``pid``, but with another start time than the process's."""
    proc = psutil.Process(pid)
    return {
        "pid": pid,
        "start_ticks": 1,
        "argv": proc.cmdline(),
        "cwd": str(site.app_dir),
        "cwd_real": os.path.realpath(site.app_dir),
        "port": site.port,
        "user": proc.username(),
    }


def _other_app(reaper, tmp_path):
    """Another app's healthy uvicorn, on another port, whose command line matches process_match."""
    app = tmp_path / "other"
    app.mkdir()
    (app / "main.py").write_text(
        "async def app(scope, receive, send):\n"
        "    await send({'type': 'http.response.start', 'status': 200, 'headers': []})\n"
        "    await send({'type': 'http.response.body', 'body': b'other'})\n"
    )
    port = free_port()
    reaper.ports.append(port)
    proc = reaper.popen(
        [sys.executable, "-m", "uvicorn", "main:app", "--port", str(port)],
        cwd=app,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    from cascade_ops.agent.probe import http_probe

    wait_for(lambda: http_probe("127.0.0.1", port, "/", 1.0)["ok"], message="the other app")
    return proc, port


@pytest.mark.parametrize("hung", [False, True], ids=["healthy", "hung"])
@pytest.mark.parametrize(
    "victim,forged",
    [("bystander", False), ("bystander", True), ("other_app", False), ("sleep", False)],
    ids=["uvicorn-argument", "forged-record", "other-app", "sleep-with-match-all"],
)
def test_a_stale_pid_file_names_but_never_signals_what_it_cannot_prove(
    site, bystander, reaper, tmp_path, hung, victim, forged
):
    pid, _, _ = ready(site, hung)
    if not hung:  # a new release: the run replaces the backend, and so judges the pid file's claim
        site.auth_module.write_text(site.auth_module.read_text() + "\n# release 2\n")
    if victim == "other_app":
        target, other_port = _other_app(reaper, tmp_path)
    elif victim == "sleep":
        target = reaper.popen(["sleep", "600"])
        site.vars["process_match"] = ".*"
        site.write_inventory()
    else:
        target = bystander.proc
    created_target = psutil.Process(target.pid).create_time()
    _claim(site, target.pid, _forged_record(site, target.pid) if forged else None)
    done = site.cli("recover")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "pid %d named by backend.pid" % target.pid in done.stdout
    assert ("another time than recorded" if forged else "has no start record") in done.stdout
    assert psutil.Process(target.pid).create_time() == created_target
    assert psutil.Process(target.pid).status() not in (psutil.STATUS_STOPPED, psutil.STATUS_ZOMBIE)
    assert bystander.untouched(), bystander.signals()
    if victim == "other_app":
        from cascade_ops.agent.probe import http_probe

        assert http_probe("127.0.0.1", other_port, "/", 1.0)["ok"]
    assert site.health()["ok"] and site.backend_pid() not in (target.pid, pid) and "Traceback" not in done.stderr


def test_the_backend_an_earlier_run_left_starting_is_still_stopped(site, reaper):
    """The proof holds for the real thing: a backend this host's earlier run started, stuck before it
    listens, goes before a new one starts (never two side by side)."""
    (site.app_dir / "main.py").write_text("import time\ntime.sleep(600)\n")
    site.vars.update(auth_module=None, start_timeout="2s")
    site.write_inventory()
    first = site.recover()
    assert first.exit_code == 2
    stuck = site.backend_pid()
    assert psutil.Process(stuck).is_running()
    (site.app_dir / "main.py").write_text(
        "from fastapi import FastAPI\napp = FastAPI()\n\n"
        "@app.get('/health')\ndef health():\n    return {'status': 'ok'}\n"
    )
    run = site.recover()
    assert run.exit_code == 0, run.to_json()
    wait_for(
        lambda: not psutil.pid_exists(stuck) or psutil.Process(stuck).status() == psutil.STATUS_ZOMBIE,
        message="the stuck start stopped",
    )
    assert site.health()["ok"] and site.backend_pid() != stuck


OTHER_USER = "nobody"
# Another user's server whose command line matches process_match (the system Python: that user may
# not reach this checkout's venv).
OTHER_USERS_SERVER = (
    "import socket, sys, time\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(16)\n"
    "time.sleep(600)\n"
)


@pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists("/usr/bin/python3"),
    reason="starting a process as another user needs root (and the system python3)",
)
def test_root_refuses_a_holder_run_by_another_user_and_names_both(site, bystander, reaper):
    site.vars.update(auth_module=None)
    site.write_inventory()
    holder = reaper.popen(
        [
            "runuser",
            "-u",
            OTHER_USER,
            "--",
            "/usr/bin/python3",
            "-c",
            OTHER_USERS_SERVER,
            str(site.port),
            "uvicorn",
            "main:app",
        ],
        cwd="/",
        stdout=subprocess.DEVNULL,
    )
    wait_for(site.holders, message="the other user's server")
    server = site.holders()[0]
    assert psutil.Process(server).username() == OTHER_USER
    os.kill(server, signal.SIGSTOP)
    wait_for(lambda: psutil.Process(server).status() == psutil.STATUS_STOPPED, message="stopped")
    done = site.cli("recover")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "runs as user nobody, not as the backend's user root" in done.stdout
    assert psutil.Process(server).status() == psutil.STATUS_STOPPED and holder.poll() is None
    assert bystander.untouched(), bystander.signals()
    os.kill(server, signal.SIGCONT)


def test_the_first_recover_of_a_healthy_backend_it_did_not_start_changes_nothing_it_runs(site, bystander):
    site.vars.update(auth_module=None)
    site.write_inventory()
    manual = site.start_backend_by_hand()
    created = psutil.Process(manual.pid).create_time()
    check = site.cli("recover", "--check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "left running" in check.stdout and "would stop" not in check.stdout
    assert "no auth module uses it, so a running backend is not restarted for it" in check.stdout
    done = site.cli("recover")
    assert done.returncode == 0, done.stdout + done.stderr
    assert psutil.Process(manual.pid).create_time() == created and site.holders() == [manual.pid]
    assert (site.state_dir / "jwt-secret").exists()
    assert bystander.untouched(), bystander.signals()


# --------------------------------------------------------------------------- slow is not hung

SLOW_APP = python_script("""
    import asyncio, os, time
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/health")
    async def health():
        if os.path.exists("slow"):
            await asyncio.sleep(1.5)  # slow, but the event loop runs: it accepts, answers late
        return {"status": "ok"}

    @app.get("/block")
    async def block():
        time.sleep(600)  # a sync call in an async handler: the event loop is blocked
""")


def test_a_slow_backend_is_reported_slow_and_left_running_while_a_blocked_one_is_recovered(site, bystander):
    (site.app_dir / "main.py").write_text(SLOW_APP)
    site.vars.update(auth_module=None, probe_timeout=1, fail_threshold=1)
    site.write_inventory()
    assert site.recover().exit_code == 0
    pid = site.backend_pid()
    (site.app_dir / "slow").write_text("")
    created = psutil.Process(pid).create_time()
    for argv, code in ((["recover"], 0), (["watch"], 0), (["diagnose"], 7)):  # 7: diagnose says "not healthy"
        done = site.cli(*argv)
        assert done.returncode == code, (argv, done.stdout + done.stderr)
        assert "slow, not hung" in done.stdout, (argv, done.stdout)
        assert psutil.Process(pid).create_time() == created
    import threading

    from cascade_ops.agent.probe import http_probe

    (site.app_dir / "slow").unlink()
    threading.Thread(target=http_probe, args=("127.0.0.1", site.port, "/block", 3.0), daemon=True).start()
    wait_for(lambda: site.health().get("error") == "timeout", message="the event loop blocked")
    run = site.recover()
    assert run.exit_code == 0, run.to_json()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert bystander.untouched(), bystander.signals()


# --------------------------------------------------------------------------- files as they were


def test_a_crlf_main_keeps_its_line_endings(site):
    main = site.app_dir / "main.py"
    crlf = main.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    main.write_bytes(crlf)
    check = site.cli("recover", "--check", "--diff")
    diff = check.stdout.split("--- %s" % main)[1]
    changed = [line for line in diff.splitlines()[1:] if line[:1] in "+-" and not line.startswith("+++")]
    assert len(changed) == 2 and all(line.startswith("+") for line in changed), check.stdout
    assert site.recover().exit_code == 0
    mounted = main.read_bytes()
    assert b"auth_router" in mounted and mounted.count(b"\n") == mounted.count(b"\r\n")
    assert len(mounted.splitlines()) == len(crlf.splitlines()) + 2
    site.recover()  # idempotent: nothing more
    assert main.read_bytes() == mounted


def test_a_main_with_a_bom_mounts_and_keeps_it(site):
    main = site.app_dir / "main.py"
    main.write_bytes(b"\xef\xbb\xbf" + main.read_bytes())
    run = site.recover()
    assert run.exit_code == 0, run.to_json()
    assert main.read_bytes().startswith(b"\xef\xbb\xbf") and b"app.include_router(auth_router)" in main.read_bytes()
    assert site.health()["ok"]


DEGRADED_APP = python_script("""
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/health")
    def health():
        return {"status": "degraded", "redis": "unavailable"}
""")


def test_degraded_is_healthy_to_every_command(site):
    """One definition: HTTP 200 on the health path is healthy; the body's status is reported."""
    (site.app_dir / "main.py").write_text(DEGRADED_APP)
    site.vars.update(auth_module=None)
    site.write_inventory()
    assert site.recover().exit_code == 0
    pid = site.backend_pid()
    for argv in (["diagnose"], ["recover"], ["watch"], ["verify"]):
        done = site.cli(*argv)
        assert done.returncode == 0, (argv, done.stdout + done.stderr)
    verify = site.cli("verify")
    assert "health ok (HTTP 200, status 'degraded'" in verify.stdout, verify.stdout
    assert site.backend_pid() == pid


# --------------------------------------------------------------------------- corrupt state


def test_a_garbage_watch_state_is_named_and_the_budget_counted_from_the_history(hang_app_site):
    site = hang_app_site
    site.vars.update(max_restarts=1, window="1h")
    site.write_inventory()
    assert site.recover().exit_code == 0
    os.kill(site.backend_pid(), signal.SIGSTOP)
    assert site.watch().outcome == "recovered"
    (site.state_dir / "watch-state.json").write_text("\0\0garbage{")
    os.kill(site.backend_pid(), signal.SIGSTOP)
    done = site.cli("watch")
    assert done.returncode != 0 and "restart budget spent" in done.stdout, done.stdout
    assert "watch-state.json was not valid watch state" in done.stdout and "1 recoveries" in done.stdout


def test_report_names_a_torn_newest_incident_and_shows_the_one_before(site):
    site.vars.update(auth_module=None)
    site.write_inventory()
    assert site.recover().exit_code == 0
    incidents = site.state_dir / "incidents"
    good = sorted(incidents.iterdir())[-1]
    torn = incidents / (good.name.replace("incident-", "incident-9"))
    torn.write_text('{"host": "web", "outc')
    done = site.cli("report")
    assert done.returncode == 0, done.stdout + done.stderr
    assert str(torn) in done.stdout and "not a JSON report" in done.stdout and str(good) in done.stdout


def test_a_log_tail_of_nul_bytes_is_stored_and_printed_as_text(site):
    (site.app_dir / "main.py").write_text("import sys\nsys.stdout.write('\\0\\0\\0\\x1b[31mboom\\n')\nsys.exit(3)\n")
    site.vars.update(auth_module=None, start_timeout="3s")
    site.write_inventory()
    done = site.cli("recover")
    assert done.returncode == 2 and "boom" in done.stdout
    texts = [done.stdout] + [p.read_text() for p in (site.state_dir / "incidents").iterdir()]
    assert all("\0" not in text and "\x1b" not in text for text in texts)


# --------------------------------------------------------------------------- hostile input


def _bounded(argv):
    """Run a command with 1 GiB of address space and 30 s at most: a bomb must be refused within."""
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    return subprocess.run(argv, capture_output=True, text=True, timeout=30, preexec_fn=limit, stdin=subprocess.DEVNULL)


def _bomb(levels=9):
    lines = ['    a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    names = "abcdefghijklmnop"
    for i in range(1, levels):
        lines.append("    %s: &%s [%s]" % (names[i], names[i], ", ".join("*" + names[i - 1] for _ in range(9))))
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("hung", [False, True], ids=["healthy", "hung"])
def test_hostile_yaml_is_refused_in_bounded_memory_and_time(site, bystander, tmp_path, hung):
    from support import INVOKE

    pid, created, files = ready(site, hung)
    base = site.inventory.read_text()
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(base.replace("all:\n", "all:\n  vars:\n" + _bomb(), 1))
    huge = tmp_path / "huge.yaml"
    with open(huge, "w") as f:
        f.write(base)
        f.write(("#" * 1023 + "\n") * (50 << 10))  # 50 MB of comments
    vars_bomb = tmp_path / "vars.yml"
    vars_bomb.write_text("process_match:\n" + _bomb().replace("    a:", "  - a:", 1))
    list_var = tmp_path / "list.yml"
    list_var.write_text("process_match: [uvicorn, gunicorn]\n")
    long_match = tmp_path / "match.yml"
    long_match.write_text("process_match: '%s'\n" % ("u" * (1 << 20)))
    cases = [
        (["recover", "--inventory", str(bomb)], "%s:1: more than 200000 YAML values" % bomb),
        (["recover", "--inventory", str(huge)], "%s: %d bytes: larger than the 2 MiB" % (huge, huge.stat().st_size)),
        (
            ["recover", "--inventory", str(site.inventory), "--var", "@%s" % vars_bomb],
            "%s:1: more than 200000 YAML values" % vars_bomb,
        ),
        (
            ["recover", "--inventory", str(site.inventory), "--var", "@%s" % list_var],
            "process_match: expected a string, got a list",
        ),
        (
            ["recover", "--inventory", str(site.inventory), "--var", "@%s" % long_match],
            "%s:1: process_match: 1048576 characters: longer than the 4096" % long_match,
        ),
        (["recover", "--inventory", str(tmp_path)], "%s: is a directory, not an inventory file" % tmp_path),
        (["recover", "--inventory", "/dev/null"], "/dev/null: is a device, a pipe or a socket"),
        (
            ["recover", "--inventory", str(site.inventory), "--var", "probe_timeout=nan"],
            "probe_timeout: expected a finite number",
        ),
    ]
    for argv, message in cases:
        done = _bounded(INVOKE + argv)
        assert done.returncode == 4, (argv, done.stdout + done.stderr)
        assert message in done.stderr, (argv, done.stderr)
        assert "Traceback" not in done.stderr and "LocatedList" not in done.stderr
    assert_untouched(site, pid, created, files, hung)
    assert bystander.untouched(), bystander.signals()


# --------------------------------------------------------------------------- a full disk


@pytest.fixture
def small_disk(tmp_path):
    """A real 1 MiB filesystem (tmpfs), unmounted at teardown."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here: %s" % done.stderr.decode().strip())
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def _fill(disk):
    with open(disk / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass


def test_failed_deploys_on_a_full_disk_keep_the_previous_release_backup(small_disk):
    from cascade_ops.agent.files import install_file

    dest, backups = small_disk / "auth.py", small_disk / "backups"
    releases = [b"# release %d\n" % n + b"x = 1\n" * 200 for n in range(1, 4)]
    dest.write_bytes(releases[0])
    install_file(
        str(dest),
        str(backups),
        keep_backups=1,
        validate_python=True,
        content_b64=__import__("base64").b64encode(releases[1]).decode(),
    )
    kept = {p.name: p.read_bytes() for p in backups.iterdir()}
    assert list(kept.values()) == [releases[0]]
    _fill(small_disk)
    for _ in range(6):
        with pytest.raises(OSError) as failed:
            install_file(
                str(dest),
                str(backups),
                keep_backups=1,
                validate_python=True,
                content_b64=__import__("base64").b64encode(releases[2]).decode(),
            )
        assert str(dest) in str(failed.value) or str(backups) in str(failed.value)
    assert dest.read_bytes() == releases[1]
    assert sorted(p.read_bytes() for p in backups.iterdir()) == [releases[0]]  # the previous release, once


def test_identical_backups_are_kept_once_and_the_last_other_version_survives_pruning(tmp_path):
    import base64

    from cascade_ops.agent.files import install_file

    dest, backups = tmp_path / "auth.py", tmp_path / "backups"
    a, b = b"a = 1\n", b"b = 2\n"
    dest.write_bytes(a)
    for content in (b, a, b, a, b):
        install_file(str(dest), str(backups), keep_backups=1, content_b64=base64.b64encode(content).decode())
    assert sorted(p.read_bytes() for p in backups.iterdir()) == [a]  # b is in place; a, once
    install_file(str(dest), str(backups), keep_backups=1, content_b64=base64.b64encode(a).decode())
    assert sorted(p.read_bytes() for p in backups.iterdir()) == [b]
    for content in (b, a, b, a):  # with room for many: still each version once
        install_file(str(dest), str(backups), keep_backups=5, content_b64=base64.b64encode(content).decode())
    assert sorted(p.read_bytes() for p in backups.iterdir()) == [a, b] and dest.read_bytes() == a


def test_a_start_that_cannot_record_its_pid_reports_what_runs(site, small_disk):
    site.vars.update(auth_module=None, state_dir=str(small_disk / "state"))
    site.write_inventory()
    assert site.recover().exit_code == 0
    state = small_disk / "state"
    old = int((state / "backend.pid").read_text())
    os.kill(old, signal.SIGSTOP)
    _fill(small_disk)
    run = site.recover()
    start = next(s for s in run.hosts["web"].steps if s.name == "start")
    assert start.status == "changed", run.to_json()
    assert "not recorded in %s" % (state / "backend.start.json") in start.message
    assert "No space left on device" in start.message
    assert not (state / "backend.pid").exists() or int((state / "backend.pid").read_text()) != old
    assert site.health()["ok"]
    new = site.holders()[0]
    site.reaper.track(new)
