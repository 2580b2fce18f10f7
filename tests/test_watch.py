"""The watchdog: recovers only when unhealthy, never overlaps, never storms."""

import fcntl
import json
import os
import signal
import subprocess
import sys
import time

import psutil

from cascade_ops.agent import procfs
from support import IGNORES_SIGTERM, REPO, free_port, python_script, wait_for


def test_healthy_tick_is_fast_and_changes_nothing(site):
    site.recover()
    pid = site.backend_pid()
    site.watch()  # the first tick creates the state file
    tick = site.watch()
    assert (tick.action, tick.exit_code) == ("none", 0)
    assert tick.duration_s < 0.25, tick.duration_s
    assert site.backend_pid() == pid
    record = json.loads((site.state_dir / "watch.log").read_text().splitlines()[-1])
    assert record["host"] == "web" and record["action"] == "none" and record["probe"]["status"] == 200
    assert record["duration_s"] == tick.duration_s


def test_stopped_backend_is_recovered_by_one_tick(site):
    site.recover()
    old = psutil.Process(site.backend_pid())
    old.send_signal(signal.SIGSTOP)
    tick = site.watch()
    assert (tick.action, tick.outcome, tick.exit_code) == ("recover", "recovered", 0)
    assert "stopped" in tick.verdict
    assert site.health()["ok"] and site.backend_pid() != old.pid


def test_fail_threshold_waits_for_consecutive_failures(make_site):
    site = make_site(fail_threshold=2)
    site.recover()
    pid = site.backend_pid()
    os.kill(pid, signal.SIGSTOP)
    first = site.watch()
    assert (first.action, first.exit_code) == ("wait", 0) and "1/2" in first.outcome
    assert psutil.Process(pid).status() == psutil.STATUS_STOPPED
    second = site.watch()
    assert second.action == "recover" and second.outcome == "recovered"
    third = site.watch()
    assert third.action == "none"


def test_two_ticks_at_the_same_moment_exactly_one_acts(site, reaper):
    script = site.root / "stubborn.py"
    script.write_text(IGNORES_SIGTERM)
    ready = site.root / "ready"
    reaper.popen([sys.executable, str(script), str(site.port), str(ready), "uvicorn-stub"])
    wait_for(ready.exists, message="stub listening")
    # Both probe (1 s) at once; whichever locks first holds the lock through the start of a new
    # backend (about a second), so the other finds it taken.
    ticks = [
        subprocess.Popen(
            site.cli_argv("watch", "--json"), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    for t in ticks:
        reaper.track(t.pid)
    outputs = [t.communicate(timeout=90) for t in ticks]
    results = sorted((t.returncode, json.loads(out)["hosts"]["web"]["action"]) for t, (out, _) in zip(ticks, outputs))
    assert results == [(0, "recover"), (5, "locked")], outputs
    assert site.health()["ok"]


def test_recover_refuses_while_another_run_holds_the_lock(site):
    site.recover()
    pid = site.backend_pid()
    os.kill(pid, signal.SIGSTOP)
    with open(site.state_dir / "run.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        result = site.cli("recover")
    assert result.returncode == 5 and "another cascade-ops run holds" in result.stdout
    assert psutil.Process(pid).status() == psutil.STATUS_STOPPED


DIES_AFTER_START = python_script("""
    import os, threading
    from fastapi import FastAPI

    threading.Timer(2.5, os._exit, (3,)).start()  # healthy at first, dead soon after
    app = FastAPI()


    @app.get("/health")
    def health():
        return {"status": "ok"}
""")


def test_restart_budget_stops_a_crash_loop_alerts_and_refills(make_site, webhook):
    site = make_site(auth_module=None, max_restarts=2, window="12s", alert_webhook=webhook.url)
    (site.app_dir / "main.py").write_text(DIES_AFTER_START)

    first_restart = time.time()
    for _ in range(2):
        tick = site.watch()
        assert (tick.action, tick.outcome) == ("recover", "recovered"), tick
        # no listener at all: a dying process's socket can outlive its holder by a moment
        wait_for(lambda: not procfs.listen_sockets(site.port), message="backend to die")
    exhausted = site.watch()
    assert (exhausted.action, exhausted.exit_code) == ("budget_exhausted", 6)
    assert "restart budget spent" in exhausted.outcome and not site.holders()
    assert [a["action"] for a in webhook.received][-1] == "none (restart budget spent)"
    assert webhook.received[-1]["host"] == "web" and "nothing listens" in webhook.received[-1]["problem"]
    again = site.watch()
    assert again.action == "budget_exhausted" and len(webhook.received) == 3, "one alert per exhaustion"

    # The budget refills when the oldest recovery, as the watchdog recorded it, leaves the window.
    oldest = min(json.loads((site.state_dir / "watch-state.json").read_text())["restarts"])
    assert oldest >= first_restart
    wait_for(lambda: time.time() - oldest > 12.05, timeout=20, interval=0.2, message="window to pass")
    refilled = site.watch()
    assert (refilled.action, refilled.outcome) == ("recover", "recovered")


def test_reset_forgets_the_budget(make_site):
    site = make_site(max_restarts=1, window="1h")
    assert site.watch().action == "recover"
    os.kill(site.backend_pid(), signal.SIGSTOP)
    assert site.watch().action == "budget_exhausted"
    tick = site.watch(reset=True)
    assert tick.action == "recover" and tick.outcome == "recovered"


def test_dead_webhook_never_slows_or_fails_recovery(make_site):
    from support import free_port

    site = make_site(alert_webhook="http://127.0.0.1:%d/hook" % free_port())
    tick = site.watch()
    assert (tick.action, tick.outcome, tick.exit_code) == ("recover", "recovered", 0)
    assert "failed after 3 attempts" in tick.alert_error and "/hook" not in tick.alert_error
    assert tick.duration_s < 10


def test_watch_log_rotation_keeps_the_bound(make_site):
    site = make_site(watch_log_max_bytes=700, watch_log_keep=2)
    site.recover()
    for _ in range(12):
        site.watch()
    logs = sorted(p.name for p in site.state_dir.glob("watch.log*"))
    assert logs == ["watch.log", "watch.log.1", "watch.log.2"]
    assert all((site.state_dir / name).stat().st_size <= 700 for name in logs)
    for name in logs:
        for line in (site.state_dir / name).read_text().splitlines():
            json.loads(line)


def test_pings_metrics_and_a_slack_alert_tell_the_outside(make_site, webhook, tmp_path):
    from prometheus_client.parser import text_string_to_metric_families

    base = webhook.url.rsplit("/", 1)[0]
    metrics = tmp_path / "textfile" / "cascade.prom"
    site = make_site(
        auth_module=None,
        alert_webhook=webhook.url,
        alert_format="slack",
        max_restarts=3,
        ping_url=base + "/ping/abc-123",
        metrics_file=str(metrics),
    )

    def families():
        return {f.name: f for f in text_string_to_metric_families(metrics.read_text())}

    def value(name, **labels):
        return next(
            s.value
            for f in families().values()
            for s in f.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )

    tick = site.watch()  # nothing runs yet: it recovers
    assert (tick.action, tick.outcome, tick.ping_error) == ("recover", "recovered", None)
    assert sorted(webhook.pinged) == ["/ping/abc-123", "/ping/abc-123/start"]
    [alert] = webhook.received
    assert set(alert) == {"text", "blocks"} and alert["text"].startswith("cascade-ops on web: recovered")
    assert [b["type"] for b in alert["blocks"]] == ["section", "section", "context"]
    assert all(b["text"]["type"] == "mrkdwn" for b in alert["blocks"][:2])
    assert families()["cascade_recoveries"].type == "counter"
    assert value("cascade_backend_healthy", host="web") == 1 and value("cascade_recoveries_total") == 1
    assert value("cascade_restart_budget_remaining") == 2 and value("cascade_last_recovery_timestamp_seconds") > 0
    assert value("cascade_step_duration_seconds", step="start") > 0 and value("cascade_tick_duration_seconds") > 0
    assert oct(metrics.stat().st_mode & 0o777) == "0o644"  # node_exporter reads it

    del webhook.pinged[:]
    healthy = site.watch()
    assert healthy.action == "none" and sorted(webhook.pinged) == ["/ping/abc-123", "/ping/abc-123/start"]
    assert value("cascade_recoveries_total") == 1 and len(webhook.received) == 1  # no alert when healthy

    # A monitor that cannot be reached is reported, never fatal, and never holds the tick up long.
    site.vars.update(ping_url="http://127.0.0.1:%d/ping/x" % free_port())
    site.write_inventory()
    started = time.monotonic()
    quiet = site.watch()
    assert quiet.exit_code == 0 and quiet.ping_error and "127.0.0.1" in quiet.ping_error
    assert time.monotonic() - started < 3.5


def test_a_failed_tick_pings_its_exit_code(webhook):
    from cascade_ops.watchdog.alerts import Pings

    base = webhook.url.rsplit("/", 1)[0]
    assert Pings(base + "/ping/k").finish(6) is None
    assert sorted(webhook.pinged) == ["/ping/k/6", "/ping/k/start"]
