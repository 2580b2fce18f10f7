"""One self-contained HTML page of the run history (``invoke report --html``): the last runs per
host, and for each recent run a timeline with one bar per step per host, coloured by status, so a
slow or failed host in a rollout shows at a glance; each bar leads to that host's details and its
incident report. No script, no network, no external asset: it opens from a mail attachment."""

import html
import json
import time
from typing import Dict, List, Optional, Tuple

from cascade_ops.model.records import IncidentReport, RunRecord
from cascade_ops.model.results import TONES, Tone

HEX = {
    Tone.GOOD: "#2ca02c",
    Tone.CHANGE: "#e6a700",
    Tone.BAD: "#d62728",
    Tone.ELSEWHERE: "#9c27b0",
    Tone.QUIET: "#9e9e9e",
}
LABEL_W, PLOT_W, ROW_H = 160, 760, 22
RUNS_SHOWN = 5


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


def _colour(status: str) -> str:
    return HEX[TONES[status]] if status in TONES else "#607d8b"


def _badge(status: str) -> str:
    return '<span class="badge" style="background:%s">%s</span>' % (_colour(status), html.escape(status))


def _anchor(run_id: str, host: str) -> str:
    return "d-%s-%s" % (
        "".join(c if c.isalnum() else "_" for c in run_id),
        "".join(c if c.isalnum() else "_" for c in host),
    )


def _timeline(run_id: str, records: List[RunRecord]) -> str:
    start = min(r.started_at for r in records)
    span = max(r.started_at - start + sum(s.duration_s for s in r.steps) for r in records) or 1.0
    scale = PLOT_W / span
    rows = []
    for index, rec in enumerate(sorted(records, key=lambda r: r.host)):
        y = 10 + index * ROW_H
        x = LABEL_W + (rec.started_at - start) * scale
        bars = ['<text x="4" y="%d" class="host">%s</text>' % (y + 14, html.escape(rec.host))]
        for step in rec.steps:
            width = max(2.0, step.duration_s * scale)
            bars.append(
                '<rect x="%.1f" y="%d" width="%.1f" height="16" fill="%s"><title>%s %s: %s, %.3fs'
                "</title></rect>"
                % (
                    x,
                    y,
                    width,
                    _colour(step.status),
                    html.escape(rec.host),
                    html.escape(step.name),
                    html.escape(step.status),
                    step.duration_s,
                )
            )
            x += step.duration_s * scale
        rows.append('<a href="#%s">%s</a>' % (_anchor(run_id, rec.host), "".join(bars)))
    height = 20 + len(records) * ROW_H
    axis = (
        '<text x="%d" y="%d" class="axis">0s</text><text x="%d" y="%d" class="axis" text-anchor="end">%.2fs'
        "</text>" % (LABEL_W, height - 2, LABEL_W + PLOT_W, height - 2, span)
    )
    return '<svg width="%d" height="%d" role="img" aria-label="timeline of run %s">%s%s</svg>' % (
        LABEL_W + PLOT_W + 10,
        height + 4,
        html.escape(run_id),
        "".join(rows),
        axis,
    )


def _details(run_id: str, rec: RunRecord, incident: Optional[IncidentReport]) -> str:
    steps = "".join(
        '<tr><td>%s</td><td>%s</td><td class="num">%.3fs</td><td>%s</td></tr>'
        % (html.escape(s.name), _badge(s.status), s.duration_s, html.escape(s.message or ""))
        for s in rec.steps
    )
    report = ""
    if incident is not None:
        report = "<details><summary>incident report %s</summary><pre>%s</pre></details>" % (
            html.escape(rec.incident_report or ""),
            html.escape(json.dumps(incident.to_json(), indent=2)),
        )
    return '<section id="%s" class="detail"><h3>%s %s %s</h3><table>%s</table>%s</section>' % (
        _anchor(run_id, rec.host),
        html.escape(rec.host),
        _badge(rec.status),
        html.escape(_when(rec.started_at)),
        steps,
        report,
    )


def render(
    history: Dict[str, List[RunRecord]],
    incidents: Dict[str, Optional[IncidentReport]],
    errors: Dict[str, str],
    title: str,
) -> str:
    """The page: ``history`` host -> runs (oldest first), ``incidents`` path -> report document,
    ``errors`` host -> why its history could not be read."""
    table = []
    for host, runs in sorted(history.items()):
        for rec in reversed(runs[-10:]):
            table.append(
                '<tr><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td class="num">%.2fs</td>'
                '<td><a href="#%s">details</a></td></tr>'
                % (
                    html.escape(host),
                    html.escape(_when(rec.started_at)),
                    html.escape(rec.playbook),
                    _badge(rec.status),
                    rec.duration_s,
                    _anchor(rec.run_id, host),
                )
            )
    table += [
        '<tr><td>%s</td><td colspan="5">%s</td></tr>' % (html.escape(h), html.escape(e))
        for h, e in sorted(errors.items())
    ]
    by_run: Dict[str, List[RunRecord]] = {}
    for runs in history.values():
        for rec in runs:
            by_run.setdefault(rec.run_id, []).append(rec)
    recent: List[Tuple[str, List[RunRecord]]] = sorted(
        by_run.items(), key=lambda item: max(r.started_at for r in item[1]), reverse=True
    )[:RUNS_SHOWN]
    runs_html = []
    for run_id, records in recent:
        failed = sum(1 for r in records if r.status not in ("ok", "changed"))
        runs_html.append(
            "<h2>run %s: %d hosts, %d not ok (%s)</h2>%s%s"
            % (
                html.escape(run_id),
                len(records),
                failed,
                html.escape(_when(min(r.started_at for r in records))),
                _timeline(run_id, records),
                "".join(
                    _details(run_id, r, incidents.get(r.incident_report or ""))
                    for r in sorted(records, key=lambda r: r.host)
                ),
            )
        )
    legend = " ".join(_badge(s) for s in ("ok", "changed", "failed", "unreachable", "skipped"))
    return PAGE % {
        "title": html.escape(title),
        "generated": html.escape(_when(time.time())),
        "legend": legend,
        "table": "".join(table) or '<tr><td colspan="6">no runs recorded yet</td></tr>',
        "runs": "".join(runs_html),
    }


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>%(title)s</title>
<style>
body { font: 14px/1.4 sans-serif; margin: 16px; color: #222; background: #fff; }
table { border-collapse: collapse; margin: 8px 0; }
td, th { border-bottom: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
.badge { color: #fff; border-radius: 3px; padding: 0 6px; font-size: 12px; }
svg text.host { font: 12px sans-serif; fill: #222; }
svg text.axis { font: 11px sans-serif; fill: #666; }
svg a:hover rect { stroke: #000; stroke-width: 1; }
.detail { margin: 12px 0 12px 16px; }
.detail td:last-child { white-space: pre-wrap; font-family: monospace; font-size: 12px; }
pre { background: #f6f6f6; padding: 8px; overflow: auto; max-height: 400px; }
</style></head>
<body>
<h1>%(title)s</h1>
<p>generated %(generated)s &middot; %(legend)s</p>
<table><tr><th>host</th><th>started</th><th>playbook</th><th>status</th><th>took</th><th></th></tr>%(table)s</table>
%(runs)s
</body></html>
"""
