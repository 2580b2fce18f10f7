"""Ctrl-C, SIGTERM or SIGHUP to a running recovery: it stops at the next safe point, says where and
what state it leaves, records it, releases the lock and exits 130 / 143 / 129; a second Ctrl-C ends
it at once."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from support import slow_start_app, wait_for


def _launch(site):
    (site.app_dir / "main.py").write_text(slow_start_app(5))
    site.vars.update(auth_module=None)
    site.write_inventory()
    # Its own process group, signalled whole, as a terminal does with Ctrl-C.
    return subprocess.Popen(
        site.cli_argv("recover"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        stdin=subprocess.DEVNULL,
    )


def _wait_for_line(proc, needle, lines):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if needle in line:
            return
    raise AssertionError("no %r in %s" % (needle, lines))


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_an_interrupt_stops_at_the_next_safe_point_and_says_what_it_leaves(site, reaper, sig, code):
    proc = _launch(site)
    reaper.track(proc.pid)
    lines = []
    _wait_for_line(proc, "terminate", lines)
    wait_for((site.state_dir / "backend.pid").exists, message="the start step under way (5 s)")
    os.killpg(proc.pid, sig)
    out, err = proc.communicate(timeout=60)
    text = "".join(lines) + out
    assert proc.returncode == code, text + err
    interrupted = next(line for line in text.splitlines() if " interrupted " in line)
    assert "after step start" in interrupted and "was started by this run and not verified" in interrupted
    assert "verify" not in text.split("interrupted")[1].split("RECAP")[0]  # no step ran after it
    report = json.loads(Path(text.split("report: ")[1].split()[0]).read_text())
    assert report["outcome"] == "interrupted"
    history = [json.loads(line) for line in (site.state_dir / "history.jsonl").read_text().splitlines()]
    assert history[-1]["exit_code"] == code and "Traceback" not in err
    # The lock was released: the next run is not refused, and finds the backend it left running.
    again = site.cli("recover")
    assert again.returncode == 0, again.stdout + again.stderr
    assert site.health()["ok"]


def test_a_second_ctrl_c_ends_the_run_at_once(site, reaper):
    proc = _launch(site)
    reaper.track(proc.pid)
    lines = []
    _wait_for_line(proc, "terminate", lines)
    wait_for((site.state_dir / "backend.pid").exists, message="the start step under way (5 s)")
    os.killpg(proc.pid, signal.SIGINT)
    acknowledged = []
    wait_for(
        lambda: acknowledged.append(proc.stderr.readline()) or "next safe point" in acknowledged[-1],
        message="the first Ctrl-C acknowledged",
    )
    assert proc.poll() is None, "the run ended before the second Ctrl-C: %s" % acknowledged
    os.killpg(proc.pid, signal.SIGINT)
    started = time.monotonic()
    proc.wait(timeout=10)
    assert proc.returncode == 130, (proc.returncode, acknowledged, proc.stderr.read())
    assert time.monotonic() - started < 1.5
