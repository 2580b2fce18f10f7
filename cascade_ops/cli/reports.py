"""The commands that read and change nothing: what the hosts recorded (``report``) and the
inventory as cascade-ops reads it (``inventory``)."""

import json
import os
import sys
from typing import List, Optional

from invoke import Context, Exit

from cascade_ops.cli.common import HELP, _each_json, _each_text, _finish, _guard, _inventory, task


@task(
    iterable=["var"],
    help=dict(
        {k: HELP[k] for k in ("inventory", "limit", "var")},
        json="print the whole report document",
        list="list the stored reports",
        html="write the run history as one HTML page (with --out)",
        out="where --html writes (default cascade-report.html)",
        incident="show this stored report (its file name or path, from --list)",
    ),
)
def report(
    c: Context,
    inventory: Optional[str] = None,
    limit: Optional[str] = None,
    var: Optional[List[str]] = None,
    json_: bool = False,
    list_: bool = False,
    html: bool = False,
    out: Optional[str] = None,
    incident: Optional[str] = None,
) -> None:
    """Show each host's last recovery: diagnosis, evidence, actions, verification, rollback.

    With --html: one self-contained page of the last runs of every host, with a timeline per run."""
    inventory = _inventory(inventory)
    from cascade_ops.api import records
    from cascade_ops.reporting import text as output

    if html:
        path = out or "cascade-report.html"
        written = _guard(lambda: records.html_report(path, inventory, limit, var or ()))
        print(_each_text(written, lambda host, count: "%s: %d runs" % (host, count)))
        print("wrote %s" % os.path.abspath(path))
        _finish(written)
        return
    if list_:
        stored = _guard(lambda: records.incidents(inventory, limit, var or ()))
        print(
            _each_text(
                stored,
                lambda host, paths: "\n".join(["%s: %d stored" % (host, len(paths))] + ["  " + path for path in paths]),
            )
        )
        _finish(stored)
        return
    found = _guard(lambda: records.last_incident(inventory, limit, var or (), name=incident))
    if json_:
        print(_each_json(found, lambda item: item[1].to_json() if item and item[1] else None))
    else:
        print(
            _each_text(
                found,
                lambda host, item: (
                    "%s: no incident report yet" % host
                    if item is None
                    else output.incident_text(item[0], item[1], item[2])
                    if item[1]
                    else "%s: no readable incident report%s" % (host, output.unreadable_text(item[2]))
                ),
            )
        )
    _finish(found)


@task(
    iterable=["var"],
    optional=["graph"],
    help={
        "inventory": HELP["inventory"],
        "var": HELP["var"],
        "host": "one host's variables, as JSON",
        "list": "every group and each host's variables, as JSON (the default)",
        "graph": "the group tree (of GROUP, default all)",
    },
)
def show_inventory(
    c: Context,
    inventory: Optional[str] = None,
    var: Optional[List[str]] = None,
    list_: bool = False,
    graph: Optional[str] = None,
    host: Optional[str] = None,
) -> None:
    """Show the inventory as cascade-ops reads it, shaped like `ansible-inventory` (--list, --graph, --host).

    Reads YAML, INI, inventory scripts and their JSON, with group_vars/ and host_vars/ beside the file;
    Ansible's connection variables appear under cascade-ops's names. Changes nothing."""
    inventory = _inventory(inventory)
    from cascade_ops import api

    loaded = _guard(lambda: api.read_inventory(inventory, var or ()))
    if graph is not None:
        print(_guard(lambda: loaded.graph(graph if isinstance(graph, str) else "all")))
    elif host is not None:
        if host not in loaded.hosts:
            print("cascade-ops: %s: no host %r" % (inventory, host), file=sys.stderr)
            raise Exit(code=4)
        print(json.dumps(loaded.to_ansible_json()["_meta"]["hostvars"][host], indent=2, sort_keys=True))
    else:
        print(json.dumps(loaded.to_ansible_json(), indent=2))
