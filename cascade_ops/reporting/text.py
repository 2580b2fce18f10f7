"""Text for people. JSON output is the results' own ``to_json``."""

import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Sequence, Tuple

from cascade_ops.model import owners
from cascade_ops.model.records import IncidentReport
from cascade_ops.model.results import TONES, HostStatus, RunResult, StepResult, Tone

if TYPE_CHECKING:  # types only: printing a step line must not load the verification's clients
    from cascade_ops.errors import CascadeError
    from cascade_ops.model.facts import Diagnosis, PortHolder
    from cascade_ops.steps.verify import Check


# Widest step name ("rollback:terminate") and status ("rolled_back", "unreachable", "interrupted").
STEP_WIDTH, STATUS_WIDTH = 18, 11


# ANSI colours of a status, for people at a terminal (ok green, changed yellow, failed red, unreachable magenta).
ANSI = {Tone.GOOD: "32", Tone.CHANGE: "33", Tone.BAD: "31", Tone.ELSEWHERE: "35", Tone.QUIET: "36"}


def use_colour(setting: str, stream_is_tty: bool, environ: Dict[str, str]) -> bool:
    """``always``/``never``, or under ``auto`` a terminal without ``NO_COLOR`` (no-color.org)."""
    if setting != "auto":
        return setting == "always"
    return stream_is_tty and not environ.get("NO_COLOR") and environ.get("TERM") != "dumb"


def status_word(status: str, width: int, colour: bool) -> str:
    """The status padded to ``width``; coloured, the padding stays outside the escape codes."""
    padded = "%-*s" % (width, status)
    if not colour or status not in TONES:
        return padded
    return "\033[%sm%s\033[0m%s" % (ANSI[TONES[status]], status, padded[len(status) :])


def step_line(host: str, result: "StepResult", host_width: int = 12, colour: bool = False) -> str:
    first, _, rest = result.message.partition("\n")
    line = "%-*s %-*s %s %6.3fs  %s" % (
        host_width,
        host,
        STEP_WIDTH,
        result.name,
        status_word(result.status, STATUS_WIDTH, colour),
        result.duration_s,
        first,
    )
    if rest:
        line += "\n" + rest
    if result.diff:
        line += "\n" + result.diff.rstrip("\n")
    return line


def recap(run: "RunResult", colour: bool = False) -> str:
    """Ansible's PLAY RECAP: a line per host, and for more than one host a line of totals."""
    lines = ["RECAP"]
    width = max([12] + [len(name) for name in run.hosts])
    totals: Dict[str, int] = {}
    for name, host in run.hosts.items():
        r = host.recap()
        totals[r["status"]] = totals.get(r["status"], 0) + 1
        line = "%-*s %s ok=%d changed=%d unreachable=%d failed=%d skipped=%d  (%.2fs)" % (
            width,
            name,
            status_word(r["status"], STATUS_WIDTH, colour),
            r["ok"],
            r["changed"],
            r["unreachable"],
            r["failed"],
            r["skipped"],
            r["duration_s"],
        )
        if host.incident_report:
            line += "  report: %s" % host.incident_report
        lines.append(line)
        if host.status is HostStatus.NOT_RUN and host.steps:  # why the rollout stopped before this host
            lines.append("%-*s %s" % (width, "", host.steps[-1].message))
        lines += ["%-*s warning: %s" % (width, name, warning) for warning in host.warnings]
        lines += ["%-*s note: %s" % (width, name, note) for note in host.notes]
    if len(run.hosts) > 1:
        lines.append(
            "%-*s %d hosts: %s"
            % (
                width,
                "TOTAL",
                len(run.hosts),
                ", ".join("%d %s" % (count, status) for status, count in sorted(totals.items())),
            )
        )
    return "\n".join(lines)


def _size(n: int) -> str:
    for unit in ("B", "K", "M", "G"):
        if n < 1024:
            return "%d%s" % (n, unit)
        n //= 1024
    return "%dT" % n


def _owner_label(d: "Diagnosis", holder: "PortHolder") -> str:
    master = d.master_of(holder)
    if master is None:
        return holder.owner.label
    return "gunicorn:%d" % master if not holder.owner.managed else "%s>gunicorn" % holder.owner.label


def diagnosis_table(host: str, d: "Diagnosis") -> str:
    lines = ["%s port %d: %s" % (host, d.port, d.verdict())]
    if d.holders:
        lines.append(
            "  %7s %7s %-10s %-17s %8s %6s %-22s %7s  %-24s %s"
            % ("PID", "PPID", "USER", "STATE", "AGE", "RSS", "LISTEN", "BACKLOG", "OWNER", "COMMAND")
        )
        for h in d.holders:
            p = h.process
            lines.append(
                "  %7d %7d %-10s %-17s %7.0fs %6s %-22s %7d  %-24s %s"
                % (
                    p.pid,
                    p.ppid,
                    p.user[:10],
                    p.state,
                    p.age_s,
                    _size(p.rss),
                    ",".join(s.endpoint for s in h.sockets),
                    h.backlog,
                    _owner_label(d, h)[:24],
                    p.command[:120],
                )
            )
        lines += [
            "  pid %d: %s cannot be asked from here: %s" % (h.pid, h.owner.describe(), h.owner.why)
            for h in d.holders
            if h.owner.managed and not h.owner.reachable
        ]
    for s in d.orphan_sockets:
        lines.append("  %s is listening, but its holder is not visible to this user" % s.endpoint)
    if d.unreadable_pids:
        lines.append("  (%d processes could not be inspected: run as root to see every holder)" % d.unreadable_pids)
    return "\n".join(lines)


def checks_text(host: str, checks: "List[Check]") -> str:
    return "\n".join("%-12s %s" % (host, c.describe()) for c in checks)


def _evidence_lines(evidence: Dict[str, Any]) -> List[str]:
    lines = []
    for proc in evidence.get("processes", []):
        if proc.get("gone"):
            lines.append("    pid %d: already gone" % proc["pid"])
            continue
        sockets = proc.get("sockets", {})
        lines.append(
            "    pid %d %s (%s), %.0fs old, cpu %.1fs, %d threads, rss %s, wchan %s, "
            "%d established / %d close_wait: %s"
            % (
                proc["pid"],
                proc["state"],
                proc.get("status_state", ""),
                proc["age_s"],
                proc["cpu_s"],
                proc["threads"],
                _size(proc["rss"]),
                proc.get("wchan", "?"),
                sockets.get("established", 0),
                sockets.get("close_wait", 0),
                " ".join(proc["cmdline"])[:100],
            )
        )
        stacks = proc.get("python_stacks")
        if stacks:
            frames = [line.strip() for line in stacks.splitlines() if line.startswith("    ")][:4]
            lines.append("      top of stack: " + " <- ".join(frames))
    lines += ["    note: " + note for note in evidence.get("notes", [])]
    if evidence.get("log_tail"):
        lines.append("    backend log (last %d lines):" % min(5, len(evidence["log_tail"])))
        lines += ["      | " + line for line in evidence["log_tail"][-5:]]
    return lines


def unreadable_text(unreadable: List[str]) -> str:
    return "".join("\n  skipped %s" % why for why in unreadable)


def incident_text(path: str, report: IncidentReport, unreadable: Sequence[str] = ()) -> str:
    """An incident report in words: diagnosis, evidence, actions, verification, rollback."""
    lines = ["%s: %s at %s (%.2fs)  [%s]" % (report.host, report.outcome, report.started_at, report.duration_s, path)]
    lines += ["  skipped a newer file, %s" % why for why in unreadable]
    d = report.diagnosis
    if d:
        lines.append("  diagnosis: " + d["verdict"])
    if report.hang:
        lines.append("  hang: %s" % report.hang["summary"])
    if report.planned_restart:
        lines.append("  planned restart: %s" % report.planned_restart)
    kept = report.socket
    if kept:
        lines.append(
            "  socket: %s"
            % (
                "kept across the restart (%d connections were waiting; nothing accepted for "
                "%.2fs, none refused)" % (kept.get("waiting", 0), kept.get("unaccepted_s", 0))
                if kept.get("kept")
                else "not kept: %s" % (kept.get("why") or "-")
            )
        )
    if d:
        for h in d["holders"]:
            owner = h.get("owner", {})
            run_by = (
                "run by %s %s" % (owners.what(owner["kind"]), owner["name"])
                if owner.get("kind", "none") != "none"
                else "detached"
            )
            lines.append(
                "    holder pid %d %s, %s, backlog %d, %s"
                % (h["pid"], h["state"], run_by, h["backlog"], h["command"][:100])
            )
    if report.evidence:
        lines.append("  evidence (captured in %.2fs, before any signal):" % report.evidence["elapsed_s"])
        lines += _evidence_lines(report.evidence)
    lines.append("  actions:")
    for step in report.actions:
        first, *rest = (step["message"] or "").splitlines() or [""]
        lines.append(
            "    %-*s %-*s %6.3fs  %s"
            % (STEP_WIDTH, step["name"], STATUS_WIDTH, step["status"], step["duration_s"], first)
        )
        if step["status"] == "failed":  # the cause (a log tail, a traceback) is the point of a report
            lines += ["      " + line for line in rest]
    if report.verification:
        lines.append(
            "  verification: "
            + "; ".join(
                "%s %s" % (c["name"], "ok" if c["ok"] else "FAILED (%s)" % c["detail"]) for c in report.verification
            )
        )
    if report.rollback:
        r = report.rollback
        lines.append("  rollback: %s; %s" % ("verified" if r["ok"] else "FAILED", "; ".join(r["files"])))
    return "\n".join(lines)


def host_error(host: str, error: "CascadeError") -> str:
    """A host that could not answer, in one line (the error names the host already)."""
    text = str(error)
    return text if text.startswith(host + ":") else "%s: %s" % (host, text)


class Waits:
    """For a person at a terminal: which host has been waiting for what, every few seconds, while
    a step takes long (a slow start, a grace period, a host that never sends its SSH banner)."""

    AFTER_S = 3.0  # a wait this long is worth a line, and another line each time again

    def __init__(self, write: Callable[[str], None], host_width: int = 12):
        self.write, self.width = write, host_width
        self.current: Dict[str, Tuple[str, float]] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._tick, daemon=True, name="waits")

    def __enter__(self) -> "Waits":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(1.0)

    def begin(self, host: str, what: str) -> None:
        with self.lock:
            self.current[host] = (what, time.monotonic())

    def end(self, host: str) -> None:
        with self.lock:
            self.current.pop(host, None)

    def _tick(self) -> None:
        said: Dict[str, float] = {}
        while not self.stop.wait(0.5):
            now = time.monotonic()
            with self.lock:
                late = [
                    (h, what, now - since)
                    for h, (what, since) in self.current.items()
                    if now - since >= self.AFTER_S and now - said.get(h, 0.0) >= self.AFTER_S
                ]
            for host, what, waited in late:
                said[host] = now
                self.write(
                    "%-*s %-*s %-*s %5.0fs  ..." % (self.width, host, STEP_WIDTH, what, STATUS_WIDTH, "waiting", waited)
                )
