"""What the hosts remember, read back: the watchdog's last ticks, the incident reports, and the
run history drawn as one HTML page. Nothing here changes a host."""

import json
import os
from typing import Any, Dict, Iterable, List, Optional, Tuple

from cascade_ops import agent
from cascade_ops.api import DEFAULT_INVENTORY, PerHost, _hosts, on_hosts, select_hosts
from cascade_ops.config.hostvars import Host
from cascade_ops.errors import HostCommandError
from cascade_ops.model.paths import StatePaths
from cascade_ops.transport import Transport


def last_ticks(
    inventory: str = DEFAULT_INVENTORY,
    limit: Optional[str] = None,
    vars: Iterable[str] = (),
    hosts: Optional[List[Host]] = None,
) -> PerHost[Optional[str]]:
    """The last line of each selected host's watch log (None before the first tick)."""

    def last(host: Host, transport: Transport) -> Optional[str]:
        lines = transport.call(agent.files.tail, path=StatePaths.of(host.vars).watch_log, lines=1)
        return lines[-1] if lines else None

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
) -> "PerHost[Optional[Tuple[str, Dict[str, Any], List[str]]]]":
    """Each host's newest readable incident report as (path, document, the newer files that did not
    read as one), or None when it has none at all. ``name``: that stored report instead (its path or
    file name, as ``report --list`` shows them)."""
    from cascade_ops.reporting import incident as report

    def find(host: Host, transport: Transport) -> Optional[Tuple[str, Dict[str, Any], List[str]]]:
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

    def read(host: Host, transport: Transport) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
        runs = sorted(
            history.read(transport, host.vars, last) + unreached.get(host.name, []),
            key=lambda r: r.get("started_at", 0),
        )[-last:]
        found = {}
        for path in {r["incident_report"] for r in runs if r.get("incident_report")}:
            text = transport.call(agent.files.read_text, path=path)
            try:
                found[path] = json.loads(text) if text else None
            except ValueError:  # a torn or foreign file: the page links to nothing rather than fail
                found[path] = None
        return runs, found

    answers = on_hosts(hosts, read)
    incidents: Dict[str, Any] = {}
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
