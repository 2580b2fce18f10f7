"""Evidence before the kill, rollback of a bad release, the incident report, deeper verification."""

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from cascade_ops.agent import evidence
from cascade_ops.steps import FAILED
from support import PLAYBOOK, free_port, python_script, wait_for


def report_of(run, host="web"):
    path = run.hosts[host].incident_report
    assert path and os.path.exists(path), "no incident report written"
    return json.loads(open(path).read())


def test_hung_backend_report_has_state_backlog_log_and_evidence(site):
    site.recover()
    pid = site.backend_pid()
    os.kill(pid, signal.SIGSTOP)
    waiting = [socket.create_connection(("127.0.0.1", site.port)) for _ in range(3)]
    try:
        run = site.recover()
    finally:
        for conn in waiting:
            conn.close()
    assert run.exit_code == 0
    doc = report_of(run)
    holder = doc["diagnosis"]["holders"][0]
    assert holder["pid"] == pid and holder["state"] == "stopped" and holder["backlog"] == 3
    assert "stopped" in doc["diagnosis"]["verdict"]
    captured = next(p for p in doc["evidence"]["processes"] if p["pid"] == pid)
    assert captured["state"] == "T" and captured["wchan"] and "stopped" in captured["status_state"]
    assert captured["threads"] >= 1 and captured["rss"] > 0 and "cpu_s" in captured
    assert any("Uvicorn running" in line or "GET /health" in line for line in doc["evidence"]["log_tail"])
    assert [a["name"] for a in doc["actions"]][-3:] == ["terminate", "start", "verify"]
    assert {c["name"] for c in doc["verification"]} == {"health", "jwt"} and all(c["ok"] for c in doc["verification"])

    text = site.cli("report")
    assert text.returncode == 0 and "stopped" in text.stdout and "evidence" in text.stdout
    listed = site.cli("report", "--list").stdout
    assert run.hosts["web"].incident_report in listed
    whole = json.loads(site.cli("report", "--json").stdout)["hosts"]["web"]
    assert whole["evidence"]["processes"][0]["pid"] == pid


BLOCKING_APP = python_script("""
    import time
    from fastapi import FastAPI

    app = FastAPI()


    @app.get("/health")
    async def health():
        return {"status": "ok"}


    @app.get("/slow-report")
    async def build_slow_report():
        time.sleep(600)  # a blocking call inside async code: the whole event loop stops
""")


@pytest.mark.skipif(
    shutil.which("py-spy") is None and not os.path.exists(os.path.join(os.path.dirname(sys.executable), "py-spy")),
    reason="py-spy (the evidence extra) not installed",
)
def test_python_stack_names_the_function_blocking_the_event_loop(make_site):
    site = make_site(auth_module=None, probe_timeout=0.5)
    (site.app_dir / "main.py").write_text(BLOCKING_APP)
    site.recover()
    victim = socket.create_connection(("127.0.0.1", site.port))
    victim.sendall(b"GET /slow-report HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        wait_for(lambda: site.health().get("error") == "timeout", message="event loop blocked")
        run = site.recover()
    finally:
        victim.close()
    assert run.exit_code == 0, run.to_json()
    doc = report_of(run)
    assert "timeout" in doc["diagnosis"]["verdict"] and doc["diagnosis"]["probe"]["error"] == "timeout"
    stacks = "".join(p.get("python_stacks") or "" for p in doc["evidence"]["processes"])
    assert "build_slow_report" in stacks


def test_evidence_of_a_process_exiting_mid_capture_does_not_crash(reaper):
    short = reaper.popen([sys.executable, "-c", "import time; time.sleep(0.3)"])
    long = reaper.popen([sys.executable, "-c", "import time; time.sleep(600)"])
    reaped = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    gone_pid = int(reaped.stdout)  # exited and reaped before the capture starts
    deadline = time.monotonic() + 3
    results = []
    while time.monotonic() < deadline and short.poll() is None:
        results.append(evidence.evidence([short.pid, long.pid, gone_pid], timeout=1.0, py_spy=None))
    short.wait(timeout=5)
    results.append(evidence.evidence([short.pid, long.pid, gone_pid], timeout=1.0, py_spy=None))
    assert len(results) > 1
    assert results[-1]["processes"][0] == {"pid": short.pid, "gone": True}
    assert results[-1]["processes"][1]["pid"] == long.pid and results[-1]["processes"][1]["state"] == "S"
    assert all(r["processes"][2] == {"pid": gone_pid, "gone": True} for r in results)


STACK_DUMPER = """#!/bin/sh
# Stands in for py-spy: prints a stack after DELAY seconds.
sleep "$DELAY"
echo 'Thread 1 (idle)'
echo '    sleep (<string>:1)'
"""


@pytest.mark.parametrize("delay,timeout,stacks", [("30", 1.0, 0), ("0", 10.0, 3)])
def test_evidence_capture_is_bounded_by_evidence_timeout(reaper, tmp_path, monkeypatch, delay, timeout, stacks):
    dumper = tmp_path / "stack-dumper"
    dumper.write_text(STACK_DUMPER)
    dumper.chmod(0o755)
    monkeypatch.setenv("DELAY", delay)
    procs = [reaper.popen([sys.executable, "-c", "import time; time.sleep(600)"]) for _ in range(3)]
    started = time.monotonic()
    result = evidence.evidence([p.pid for p in procs], timeout=timeout, py_spy=str(dumper))
    elapsed = time.monotonic() - started
    assert sum(1 for p in result["processes"] if p.get("python_stacks")) == stacks
    if stacks:
        assert "sleep (<string>:1)" in result["processes"][0]["python_stacks"] and not result["notes"]
    else:  # the first dump is cut at the deadline, the others are not even started
        assert elapsed < timeout + 1.0
        assert "did not finish within" in result["notes"][0]
        assert sum("evidence_timeout (1.0s) spent" in note for note in result["notes"]) == 2


BROKEN_VERIFY = """
@router.post("/verify")
def verify(authorization: str = Header(default="")):
    raise RuntimeError("release 2 broke verification")
"""


def _break_release(site):
    text = site.auth_module.read_text()
    cut = text.index('@router.post("/verify")')
    site.auth_module.write_text(text[:cut] + BROKEN_VERIFY.lstrip())


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_bad_release_is_rolled_back_byte_for_byte(site):
    site.recover()
    deployed = site.app_dir / "api" / "auth.py"
    good = deployed.read_bytes()
    _break_release(site)

    result = site.cli("recover", "--json")

    assert result.returncode == 2, result.stdout + result.stderr
    host = json.loads(result.stdout)["hosts"]["web"]
    assert host["recap"]["status"] == "rolled_back"
    names = {s["name"]: s for s in host["steps"]}
    assert names["verify"]["status"] == "failed" and "500" in names["verify"]["message"]
    assert names["rollback"]["status"] == "changed" and names["rollback:verify"]["status"] == "ok"
    assert deployed.read_bytes() == good
    assert site.health()["ok"]
    doc = json.loads(Path(host["incident_report"]).read_text())
    assert doc["outcome"] == "rolled_back" and doc["rollback"]["ok"]
    assert all(c["ok"] for c in doc["rollback"]["verification"])


def test_step_lines_stay_aligned_with_long_step_names_and_statuses(site):
    site.recover()
    _break_release(site)
    result = site.cli("recover")
    steps, recap = result.stdout.split("RECAP")
    rows = [line for line in steps.splitlines() if line.startswith("web ")]
    assert any("rollback:terminate" in row for row in rows) and "rolled_back" in recap
    # The duration column ("0.123s") starts at the same place on every step line.
    assert len({re.search(r"\d\.\d{3}s  ", row).start() for row in rows}) == 1, rows


def test_rollback_that_also_fails_reports_both(site):
    _break_release(site)  # the very first release is bad: there is nothing good to go back to
    run = site.recover()
    host = run.hosts["web"]
    steps = {s.name: s for s in host.steps}
    assert run.exit_code == 2 and host.status == FAILED
    assert steps["verify"].status == FAILED and "500" in steps["verify"].message
    assert steps["rollback"].status == "changed" and "removed" in steps["rollback"].message
    assert steps["rollback:verify"].status == FAILED and "404" in steps["rollback:verify"].message
    doc = report_of(run)
    assert doc["rollback"]["ok"] is False and doc["outcome"] == "failed"
    assert not (site.app_dir / "api" / "auth.py").exists()
    assert "auth_router" not in (site.app_dir / "main.py").read_text()


def test_rollback_can_be_switched_off(site, tmp_path):
    site.recover()
    _break_release(site)
    book = tmp_path / "no-rollback.yaml"
    book.write_text(PLAYBOOK.read_text() + "rollback: false\n")
    run = site.recover(playbook=str(book))
    assert run.exit_code == 2 and "rollback" not in {s.name for s in run.hosts["web"].steps}
    assert sha(site.app_dir / "api" / "auth.py") == sha(site.auth_module)


def test_no_secret_in_any_report_log_or_output(make_site, redis_url):
    site = make_site(redis_url=redis_url[0])
    outputs = [site.cli("recover", "--json", "--diff")]
    os.kill(site.backend_pid(), signal.SIGSTOP)
    outputs += [
        site.cli("recover", "--diff"),
        site.cli("report"),
        site.cli("report", "--json"),
        site.cli("verify"),
        site.cli("diagnose"),
        site.cli("watch"),
    ]
    _break_release(site)
    outputs.append(site.cli("recover", "--diff"))
    secret = (site.state_dir / "jwt-secret").read_text().strip()
    assert len(secret) >= 32
    for result in outputs:
        assert secret not in result.stdout + result.stderr
    produced = [p for p in site.root.rglob("*") if p.is_file() and p.name != "jwt-secret"]
    assert any(p.parent.name == "incidents" for p in produced)
    for path in produced:
        assert secret.encode() not in path.read_bytes(), path


class CitizenDirectory:
    """A stub of the remote citizen directory: a real HTTP server on loopback."""

    def __init__(self, reaper, root):
        script = root / "directory.py"
        script.write_text(
            python_script("""
            import json, sys
            from http.server import BaseHTTPRequestHandler, HTTPServer
            CITIZENS = {"doge": {"class_name": "Nobili"}}
            class Handler(BaseHTTPRequestHandler):
                def do_GET(self):
                    name = self.path.rsplit("/", 1)[-1]
                    body = json.dumps(CITIZENS.get(name)).encode()
                    self.send_response(200 if name in CITIZENS else 404)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                def log_message(self, *a):
                    pass
            server = HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
            open(sys.argv[2], "w").write("ready")
            server.serve_forever()
        """)
        )
        self.port = free_port()
        ready = root / "directory-ready"
        self.proc = reaper.popen([sys.executable, str(script), str(self.port), str(ready)])
        wait_for(ready.exists, message="citizen directory")
        self.url = "http://127.0.0.1:%d" % self.port


def test_auth_flow_with_remote_citizen_directory_and_its_outage(make_site, reaper, tmp_path):
    directory = CitizenDirectory(reaper, tmp_path)
    site = make_site(citizen_api=directory.url)
    assert site.recover().exit_code == 0
    base = "http://127.0.0.1:%d/auth" % site.port
    creds = {"username": "doge", "password": "serenissima-1"}
    code = json.loads(site.cli("auth.invite", "doge", "--json").stdout)["hosts"]["web"]["code"]
    with httpx.Client(timeout=5) as client:
        first = client.post(base + "/register", json=dict(creds, code=code))
        assert first.status_code == 200 and first.json()["created"] is True
        again = client.post(base + "/register", json=dict(creds, code=code))
        assert again.status_code == 403 and "already used" in again.text
        other = json.loads(site.cli("auth.invite", "doge", "--json").stdout)["hosts"]["web"]["code"]
        assert client.post(base + "/register", json=dict(creds, code=other)).status_code == 409
        unknown = json.loads(site.cli("auth.invite", "nobody", "--json").stdout)["hosts"]["web"]["code"]
        assert (
            client.post(
                base + "/register", json={"username": "nobody", "password": "x" * 10, "code": unknown}
            ).status_code
            == 404
        )
        token = client.post(base + "/token", json=creds)
        assert token.status_code == 200 and token.json()["subscription_tier"] == "premium"
        bearer = {"Authorization": "Bearer " + token.json()["access_token"]}
        assert client.post(base + "/verify", headers=bearer).json()["sub"] == "doge"
        me = client.get(base + "/me", headers=bearer).json()
        assert me["sub"] == "doge" and me["citizen"] == {"class_name": "Nobili"}
        assert client.post(base + "/token", json=dict(creds, password="wrong-pass")).status_code == 401

        directory.proc.kill()
        directory.proc.wait(timeout=5)
        started = time.monotonic()
        down = client.post(base + "/token", json=creds)
        assert down.status_code == 503 and "directory unavailable" in down.text
        assert time.monotonic() - started < 3


def test_websocket_handshake_is_verified(make_site):
    site = make_site(ws_path="/ws")
    run = site.recover()
    assert run.exit_code == 0
    assert "websocket ok" in run.hosts["web"].steps[-1].message
    site.vars["ws_path"] = "/no-such-socket"
    site.write_inventory()
    result = site.cli("verify")
    assert result.returncode == 2 and "websocket FAILED" in result.stdout
