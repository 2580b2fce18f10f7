"""What the hosts remember, read back: the watchdog's last ticks, the incident reports, and the
run history drawn as one HTML page. Nothing here changes a host."""

import json
import os
from typing import TYPE_CHECKING, Dict, Iterable, List, Optional, Tuple

from cascade_ops import agent
from cascade_ops.api import DEFAULT_INVENTORY, PerHost, _hosts, on_hosts, select_hosts
from cascade_ops.config.hostvars import Host
from cascade_ops.errors import HostCommandError
from cascade_ops.model.paths import StatePaths
from cascade_ops.model.records import IncidentReport, RunRecord
from cascade_ops.transport import Transport

if TYPE_CHECKING:
    from cascade_ops.watchdog.tick import WatchRecord

TICK_LOOKBACK = 5  # watch log lines read back for the last one that parses


def last_ticks(
    inventory: str = DEFAULT_INVENTORY,
    limit: Optional[str] = None,
    vars: Iterable[str] = (),
    hosts: Optional[List[Host]] = None,
) -> "PerHost[Optional[WatchRecord]]":
    """Each selected host's last tick, as its watch log has it (None before the first tick)."""
    from cascade_ops.watchdog.tick import WatchRecord

    def last(host: Host, transport: Transport) -> Optional[WatchRecord]:
        lines = transport.call(agent.files.tail, path=StatePaths.of(host.vars).watch_log, lines=TICK_LOOKBACK)
        for text in reversed(lines or []):
            try:
                return WatchRecord.from_json(json.loads(text))
            except ValueError:  # a torn last line (the host went down mid-write): the one before it
                continue
        return None

    return on_hosts(_hosts(inventory, limit, vars, hosts), last)


def incidents(
    inventory: str = DEFAULT_INVENTORY, limit: Optional[str] = None, vars: Iterable[str] = ()
) -> PerHost[List[str]]:
    """Paths of each host's stored incident reports, oldest first."""
    from cascade_ops.reporting import incident as report

    return on_hosts(select_hosts(inventory, limit, vars), lambda host, t: report.stored(t, host.vars))


def last_incident(
    inventory: str = DEFAULT_INVENTORY,
    limit: Optional[str] = None,
    vars: Iterable[str] = (),
    name: Optional[str] = None,
) -> "PerHost[Optional[Tuple[str, Optional[IncidentReport], List[str]]]]":
    """Each host's newest readable incident report as (path, document, the newer files that did not
    read as one), or None when it has none at all. ``name``: that stored report instead (its path or
    file name, as ``report --list`` shows them)."""
    from cascade_ops.reporting import incident as report

    def find(host: Host, transport: Transport) -> Optional[Tuple[str, Optional[IncidentReport], List[str]]]:
        paths = report.stored(transport, host.vars)
        if name is None:
            return report.newest(transport, paths)
        chosen = [p for p in paths if name in (p, os.path.basename(p))]
        if not chosen:
            raise HostCommandError(
                host.name, "report", "no stored incident report %s (report --list shows them)" % name
            )
        return report.newest(transport, chosen)

    return on_hosts(select_hosts(inventory, limit, vars), find)


def html_report(
    out: str, inventory: str = DEFAULT_INVENTORY, limit: Optional[str] = None, vars: Iterable[str] = (), last: int = 20
) -> PerHost[int]:
    """Write one self-contained HTML page of each host's last ``last`` runs (see ``reporting.html``)
    to ``out``; each host's answer is how many runs it had. Changes nothing on the hosts."""
    from cascade_ops.reporting import history
    from cascade_ops.reporting import html as htmlreport

    hosts = select_hosts(inventory, limit, vars)
    unreached = history.read_controller(inventory, [h.name for h in hosts], last)

    def read(host: Host, transport: Transport) -> Tuple[List[RunRecord], Dict[str, Optional[IncidentReport]]]:
        runs = sorted(
            history.read(transport, host.vars, last) + unreached.get(host.name, []), key=lambda r: r.started_at
        )[-last:]
        found: Dict[str, Optional[IncidentReport]] = {}
        for path in {r.incident_report for r in runs if r.incident_report}:
            text = transport.call(agent.files.read_text, path=path)
            try:
                found[path] = IncidentReport.from_json(json.loads(text or ""))
            except ValueError:  # a torn or foreign file: the page links to nothing rather than fail
                found[path] = None
        return runs, found

    answers = on_hosts(hosts, read)
    incidents: Dict[str, Optional[IncidentReport]] = {}
    for _, found in answers.values():
        incidents.update(found)
    runs_of = {h: runs for h, (runs, _) in answers.items()}
    runs_of.update({h: recs for h, recs in unreached.items() if h not in runs_of})  # unreachable now, too
    page = htmlreport.render(
        runs_of, incidents, {h: str(e) for h, e in answers.failures.items()}, "cascade-ops runs: %s" % inventory
    )
    with open(out, "w", encoding="utf-8") as f:
        f.write(page)
    return PerHost(answers.order, {h: len(runs) for h, (runs, _) in answers.items()}, answers.failures)
