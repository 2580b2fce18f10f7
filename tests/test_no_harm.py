"""Never make it worse: bad input changes nothing, only the backend's own tree is signalled, and
no output carries the JWT secret. Each case on real processes, against a healthy backend and a
hung one (SIGSTOP)."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from support import INVOKE, PLAYBOOK, gone, python_script, wait_for

# A secret that JSON escapes (quotes, backslashes): a scrub of the serialised text would miss it.
SECRET = 'q"uo\\te' + "s3cr3t" * 8 + '\\"end'


RECORDS = ("incidents", "backend.log", "history.jsonl")  # what a run writes about itself, by design


def files_of(site, skip=RECORDS):
    """Every file of the app and its state that a run could change, with its content's hash."""
    skip = set(skip)
    return {
        str(p.relative_to(site.app_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(site.app_dir.rglob("*"))
        if p.is_file() and not skip & set(p.parts) and "__pycache__" not in p.parts and p.suffix != ".lock"
    }


def ready(site, hung):
    assert site.recover().exit_code == 0
    pid = site.backend_pid()
    if hung:
        os.kill(pid, signal.SIGSTOP)
        wait_for(lambda: psutil.Process(pid).status() == psutil.STATUS_STOPPED, message="stopped backend")
    return pid, psutil.Process(pid).create_time(), files_of(site)


def assert_untouched(site, pid, created, files, hung, skip=RECORDS):
    proc = psutil.Process(pid)
    assert abs(proc.create_time() - created) < 0.01
    assert files_of(site, skip) == files
    if hung:
        assert proc.status() == psutil.STATUS_STOPPED  # not even continued
    else:
        assert site.health()["ok"]


BAD_HOST_INPUT = [
    ("app_dir", "{root}/ap", 2, "does not exist"),
    ("bind_host", "127.0.0.l", 2, "bind_host"),
    ("jwt_secret_file", "{root}", 2, "not a regular file"),
    ("python", "{root}/no/python3", 2, "not an executable"),
    ("start_command", "/no/such/uvicorn --port 1", 2, "not an executable"),
    ("keep_backups", "0", 4, "keep_backups: must be at least 1"),
    ("grace", "-1", 4, "grace"),
]


@pytest.mark.parametrize("hung", [False, True], ids=["healthy", "hung"])
@pytest.mark.parametrize("name,value,code,message", BAD_HOST_INPUT, ids=[c[0] for c in BAD_HOST_INPUT])
def test_bad_input_changes_nothing(site, bystander, hung, name, value, code, message):
    pid, created, files = ready(site, hung)
    if not hung:  # a changed release, so that a careless run would have something to do
        site.auth_module.write_text(site.auth_module.read_text() + "\n# release 2\n")
        files = files_of(site)
    done = site.cli("recover", "--var", "%s=%s" % (name, value.format(root=site.root)))
    assert done.returncode == code, done.stdout + done.stderr
    assert message in done.stdout + done.stderr
    assert_untouched(site, pid, created, files, hung)
    assert not (site.root / "ap").exists()
    assert bystander.untouched(), bystander.signals()


def test_a_rollback_undoes_only_what_the_run_did(site, bystander):
    """mount_router fails after deploy_file replaced the auth module on a healthy backend: the
    file is put back, and the backend, which this run never touched, keeps running."""
    pid, created, files = ready(site, hung=False)
    main = site.app_dir / "main.py"
    # Someone edited main.py by hand: the router is no longer mounted, and there is no
    # "app = FastAPI(...)" anchor to mount it after. The running backend still runs the old code.
    lines = [line for line in main.read_text().splitlines() if "auth_router" not in line]
    main.write_text(
        "\n".join(lines)
        .replace("from fastapi import FastAPI", "from fastapi import FastAPI as Api")
        .replace("FastAPI(", "Api(")
        + "\n"
    )
    site.auth_module.write_text(site.auth_module.read_text() + "\n# release 2\n")
    kept = (*RECORDS, "backups")  # the release's backup is kept, as after any deploy
    files = files_of(site, kept)
    run = site.recover()
    host = run.hosts["web"]
    assert host.status == "rolled_back" and run.exit_code == 2
    assert [s.name for s in host.steps][-1] == "rollback" and "not restarted by this run" in host.steps[-1].message
    assert_untouched(site, pid, created, files, hung=False, skip=kept)
    assert bystander.untouched(), bystander.signals()


@pytest.mark.parametrize("hung", [False, True], ids=["healthy", "hung"])
def test_malformed_inventories_and_options_exit_4_naming_file_and_line(site, bystander, tmp_path, hung):
    pid, created, files = ready(site, hung)
    text = site.inventory.read_text()
    cases = []
    for line_text, message in [
        ('      port: "%d "' % site.port, "port: expected a whole number"),
        ("      port: 0x4650", "port: expected a whole number"),
    ]:
        inv = tmp_path / ("inv%d.yaml" % len(cases))
        inv.write_text(
            "\n".join(line_text if line.strip().startswith("port:") else line for line in text.splitlines()) + "\n"
        )
        cases.append((["recover", "--inventory", str(inv)], "%s:%d: %s" % (inv, _line_of(inv, "port:"), message)))
    latin = tmp_path / "latin1.yaml"
    latin.write_bytes(text.encode() + "# caf\xe9\n".encode("latin-1"))
    cases.append((["recover", "--inventory", str(latin)], "%s: not UTF-8 text" % latin))
    empty_all = tmp_path / "empty-all.yaml"
    empty_all.write_text("all:\n")
    cases.append((["recover", "--inventory", str(empty_all)], "defines no hosts"))
    conflict = tmp_path / "groups.yaml"
    host_vars = "".join("          %s: %s\n" % (k, json.dumps(v)) for k, v in site.vars.items() if k != "grace")
    conflict.write_text(
        "all:\n  children:\n    a:\n      vars: {grace: 1}\n      hosts:\n        web:\n%s"
        "    b:\n      vars: {grace: 2}\n      hosts:\n        web: {}\n" % host_vars
    )
    cases.append((["recover", "--inventory", str(conflict)], "grace: host 'web' is in groups that give it different"))
    maybe = tmp_path / "maybe.yaml"
    maybe.write_text(PLAYBOOK.read_text().replace("  - verify\n", "  - verify:\n      always: maybe\n"))
    cases.append(
        (
            ["recover", "--inventory", str(site.inventory), "--playbook", str(maybe)],
            "%s:%d: verify.always: expected true or false" % (maybe, _line_of(maybe, "always:")),
        )
    )
    cases.append((["recover", "--inventory", str(site.inventory), "--limit", ","], "--limit ',': names no host"))
    for argv, message in cases:
        done = subprocess.run(INVOKE + argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert done.returncode == 4, (argv, done.stdout + done.stderr)
        assert message in done.stderr, (argv, done.stderr)
        assert "Traceback" not in done.stderr
    assert_untouched(site, pid, created, files, hung)
    assert bystander.untouched(), bystander.signals()


def _line_of(path, needle):
    return next(i for i, line in enumerate(Path(path).read_text().splitlines(), 1) if needle in line)


# --------------------------------------------------------------------------- only the backend's tree

BLOCKING_APP = python_script("""
    import os, time
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/health")
    async def health():
        if os.environ.get("HANG"):
            time.sleep(600)  # a sync call in an async handler: the event loop is blocked
        return {"status": "ok"}
""")


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (.ci/run installs it)")
def test_a_backend_inside_tmux_is_recovered_and_tmux_is_left_alone(site, reaper):
    (site.app_dir / "main.py").write_text(BLOCKING_APP)
    socket_path = str(site.root / "tmux.sock")
    tmux = ["tmux", "-f", "/dev/null", "-S", socket_path]
    command = "HANG=1 %s -m uvicorn main:app --app-dir %s --port %d" % (sys.executable, site.app_dir, site.port)
    subprocess.run(tmux + ["new-session", "-d", "-s", "b", command], check=True)
    try:
        subprocess.run(tmux + ["new-session", "-d", "-s", "other", "sleep 600"], check=True)
        subprocess.run(tmux + ["new-window", "-d", "-t", "b:", "sleep 601"], check=True)
        wait_for(site.holders, message="uvicorn inside tmux listening")
        backend = psutil.Process(site.holders()[0])
        server = next(p for p in backend.parents() if p.name().startswith("tmux"))
        assert "uvicorn" in " ".join(server.cmdline())  # what fooled the old matching
        own = {backend.pid} | {c.pid for c in backend.children(recursive=True)}
        bystanders = [server] + [p for p in server.children(recursive=True) if p.pid not in own]
        assert sum("sleep" in " ".join(p.cmdline()) for p in bystanders) == 2
        run = site.recover()
        assert run.exit_code == 0, run.to_json()
        assert gone(backend.pid)
        assert all(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in bystanders)
        assert site.health()["ok"] and site.holders() == [site.backend_pid()]
    finally:
        subprocess.run(tmux + ["kill-server"], capture_output=True)


SUPERVISOR = """#!/bin/sh
# A small supervisor script: the backend in the background, and something else beside it.
"{python}" -m uvicorn main:app --app-dir "{app_dir}" --port {port} &
sleep 600 &
wait
"""


def test_a_broad_process_match_signals_only_the_backend(site, reaper):
    script = site.root / "supervise.sh"
    script.write_text(SUPERVISOR.format(python=sys.executable, app_dir=site.app_dir, port=site.port))
    supervisor = reaper.popen(["sh", str(script)], start_new_session=True)
    wait_for(lambda: site.health()["ok"], message="backend under the supervisor script")
    backend = site.holders()[0]
    sleeper = next(p for p in psutil.Process(supervisor.pid).children() if p.name() == "sleep")
    os.kill(backend, signal.SIGSTOP)
    site.vars["process_match"] = ".*"
    site.write_inventory()
    run = site.recover()
    assert run.exit_code == 0, run.to_json()
    assert gone(backend)
    assert psutil.Process(supervisor.pid).status() != psutil.STATUS_ZOMBIE and sleeper.is_running()
    assert site.health()["ok"]


# --------------------------------------------------------------------------- secrets

LEAKY_APP = python_script("""
    import os, sys
    print("starting with CASCADE_JWT_SECRET=" + os.environ["CASCADE_JWT_SECRET"], flush=True)
    sys.exit("refusing to start")
""")


def test_no_output_carries_the_secret(site, webhook):
    secret_file = site.root / "jwt-secret"
    secret_file.write_text(SECRET)
    secret_file.chmod(0o600)
    site.vars.update(jwt_secret_file=str(secret_file), alert_webhook=webhook.url, auth_module=None)
    site.write_inventory()
    (site.app_dir / "main.py").write_text(LEAKY_APP)
    outputs = [
        site.cli("recover"),
        site.cli("recover", "--json"),
        site.cli("watch"),
        site.cli("watch", "--json"),
        site.cli("report"),
        site.cli("report", "--json"),
    ]
    assert outputs[0].returncode == 2 and "refusing to start" in outputs[0].stdout  # the log tail is shown...
    assert "[REDACTED]" in outputs[0].stdout  # ...scrubbed
    texts = [o.stdout + o.stderr for o in outputs] + [json.dumps(body) for body in webhook.received]
    texts += [
        p.read_text()
        for p in site.state_dir.rglob("*")
        if p.is_file() and p.name != "backend.log" and p.name != secret_file.name
    ]
    assert webhook.received and all(SECRET not in text and json.dumps(SECRET)[1:-1] not in text for text in texts)


ANSWERS_500 = python_script("""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    app = FastAPI()

    @app.get("/health")
    def health():
        return JSONResponse({"status": "broken"}, status_code=500)
""")


def test_a_start_that_answers_500_is_polled_with_a_backoff_not_flooded(site):
    (site.app_dir / "main.py").write_text(ANSWERS_500)
    site.vars.update(start_timeout="3s", auth_module=None)
    site.write_inventory()
    (site.state_dir).mkdir(parents=True, exist_ok=True)
    (site.state_dir / "backend.log").write_text("a line from an earlier run\n")
    run = site.recover()
    start = next(s for s in run.hosts["web"].steps if s.name == "start")
    assert start.status == "failed" and "not healthy within 3s" in start.message
    assert "earlier run" not in start.message  # this start's own lines only
    hits = (site.state_dir / "backend.log").read_text().count("GET /health")
    assert 3 <= hits <= 25, hits  # about one every 0.4 s once it answers; it was thousands
