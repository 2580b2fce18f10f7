"""The run history as a page people look at: every run leaves a line, `invoke report --html` draws
the last runs, and a real headless Chromium shows a failed host's long red bar in the timeline."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from cascade_ops import api
from support import INVOKE, PLAYBOOK, REPO

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
NEVER_LISTENS = "%s -c 'import time; time.sleep(120)'" % sys.executable


def two_hosts(make_site, tmp_path):
    good = make_site("good", auth_module=None)
    stuck = make_site("stuck", auth_module=None, start_command=NEVER_LISTENS, start_timeout="2s")
    inventory = tmp_path / "both.yaml"
    lines = ["all:", "  hosts:"]
    for name, site in (("web1", good), ("web2", stuck)):
        lines.append("    %s:" % name)
        lines += ["      %s: %s" % (k, json.dumps(v)) for k, v in site.vars.items() if v is not None]
    inventory.write_text("\n".join(lines) + "\n")
    return inventory, good, stuck


def test_every_run_leaves_one_history_line_with_no_secret(make_site, tmp_path):
    inventory, good, stuck = two_hosts(make_site, tmp_path)
    first = api.recover(str(inventory), playbook=str(PLAYBOOK))
    again = api.recover(str(inventory), playbook=str(PLAYBOOK), limit="web1")  # healthy: nothing changes
    assert first.exit_code == 2 and again.exit_code == 0
    runs = [json.loads(line) for line in (good.state_dir / "history.jsonl").read_text().splitlines()]
    assert [r["status"] for r in runs] == ["changed", "ok"] and runs[0]["run_id"] != runs[1]["run_id"]
    [failed] = [json.loads(line) for line in (stuck.state_dir / "history.jsonl").read_text().splitlines()]
    assert failed["run_id"] == runs[0]["run_id"] and failed["status"] == "failed"
    assert [s["name"] for s in failed["steps"]][-1] == "start" and "not healthy within 2s" in failed["steps"][-1][
        "message"
    ]
    secret = (good.state_dir / "jwt-secret").read_text().strip()
    assert secret not in (good.state_dir / "history.jsonl").read_text()
    api.recover(str(inventory), playbook=str(PLAYBOOK), check=True)  # a dry run leaves nothing
    assert len((good.state_dir / "history.jsonl").read_text().splitlines()) == 2


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium (.ci/run installs it)")
def test_the_html_report_draws_a_failed_host_at_a_glance(make_site, tmp_path):
    from PIL import Image

    inventory, _, _ = two_hosts(make_site, tmp_path)
    assert api.recover(str(inventory), playbook=str(PLAYBOOK)).exit_code == 2
    page = tmp_path / "runs.html"
    done = subprocess.run(
        INVOKE + ["report", "--inventory", str(inventory), "--html", "--out", str(page)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    text = page.read_text()
    assert "http://" not in text and "https://" not in text and "<script" not in text  # self-contained

    browser = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--user-data-dir=%s" % (tmp_path / "profile"),
        "--window-size=1100,900",
    ]
    shot = tmp_path / "runs.png"
    env = dict(os.environ, HOME=str(tmp_path))
    drawn = subprocess.run(
        browser + ["--screenshot=%s" % shot, page.as_uri()], capture_output=True, text=True, timeout=120, env=env
    )
    assert shot.exists(), drawn.stderr[-2000:]
    image = Image.open(shot).convert("RGB")
    width, height = image.size
    pixels = image.load()

    def longest_run(colour):
        best = 0
        for y in range(height):
            run = 0
            for x in range(width):
                if all(abs(a - b) <= 12 for a, b in zip(pixels[x, y], colour)):
                    run += 1
                    best = max(best, run)
                else:
                    run = 0
        return best

    # web2 waited out its 2 s start: its failed bar is the widest thing on the page, and red;
    # a status badge is a few dozen pixels at most
    assert longest_run((0xD6, 0x27, 0x28)) > 150
    assert longest_run((0x2C, 0xA0, 0x2C)) >= 2  # web1's ok steps are drawn too

    dom = subprocess.run(
        browser + ["--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120, env=env
    ).stdout
    assert "web1" in dom and "web2" in dom and dom.count("<rect") >= 8
    assert 'id="d-' in dom and "incident report" in dom  # each bar leads to the host's details and report
