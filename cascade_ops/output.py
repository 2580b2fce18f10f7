"""Text for people. JSON output is the results' own ``to_json``."""

from typing import List

from .facts import Diagnosis
from .runner import RunResult
from .steps import StepResult
from .steps.verify import Check


def step_line(host: str, result: StepResult) -> str:
    first, _, rest = result.message.partition("\n")
    line = "%-12s %-13s %-8s %6.3fs  %s" % (host, result.name, result.status, result.duration_s, first)
    if rest:
        line += "\n" + rest
    if result.diff:
        line += "\n" + result.diff.rstrip("\n")
    return line


def recap(run: RunResult) -> str:
    lines = ["RECAP"]
    for name, host in run.hosts.items():
        r = host.recap()
        line = ("%-12s %-8s ok=%d changed=%d failed=%d skipped=%d  (%.2fs)"
                % (name, r["status"], r["ok"], r["changed"], r["failed"], r["skipped"], r["duration_s"]))
        if host.incident_report:
            line += "  report: %s" % host.incident_report
        lines.append(line)
    return "\n".join(lines)


def _size(n: int) -> str:
    for unit in ("B", "K", "M", "G"):
        if n < 1024:
            return "%d%s" % (n, unit)
        n //= 1024
    return "%dT" % n


def diagnosis_table(host: str, d: Diagnosis) -> str:
    lines = ["%s port %d: %s" % (host, d.port, d.verdict())]
    if d.holders:
        lines.append("  %7s %7s %-10s %-17s %8s %6s %-22s %7s  %s"
                     % ("PID", "PPID", "USER", "STATE", "AGE", "RSS", "LISTEN", "BACKLOG", "COMMAND"))
        for h in d.holders:
            p = h.process
            lines.append("  %7d %7d %-10s %-17s %7.0fs %6s %-22s %7d  %s"
                         % (p.pid, p.ppid, p.user[:10], p.state, p.age_s, _size(p.rss),
                            ",".join(s.endpoint for s in h.sockets), h.backlog, p.command[:120]))
    for s in d.orphan_sockets:
        lines.append("  %s is listening, but its holder is not visible to this user" % s.endpoint)
    if d.unreadable_pids:
        lines.append("  (%d processes could not be inspected: run as root to see every holder)" % d.unreadable_pids)
    return "\n".join(lines)


def checks_text(host: str, checks: List[Check]) -> str:
    return "\n".join("%-12s %s" % (host, c.describe()) for c in checks)
