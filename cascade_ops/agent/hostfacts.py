"""Everything a diagnosis needs, gathered in one command (one round trip when remote)."""

import os
from typing import Any, Dict

from .probe import http_probe, probe_address
from .procfs import GONE_STATES, STOPPED_STATES, ancestry, listen_sockets, process_table, socket_holders
from .registry import command


@command
def host_facts(port: int, bind_host: str, health_path: str, probe_timeout: float, probe: bool = True) -> Dict[str, Any]:
    """Sockets on the port, their holders, the process table, and the health probe.

    The HTTP probe is skipped when nothing listens (refused is certain) and when a holder is
    stopped or a zombie: it is known hung, and waiting out the probe deadline only delays recovery.
    """
    sockets = listen_sockets(port)
    holders, unreadable = socket_holders([s["inode"] for s in sockets])
    procs = process_table()
    by_pid = {p["pid"]: p for p in procs}
    hung = [pid for pid in holders if by_pid.get(pid, {}).get("state") in STOPPED_STATES + GONE_STATES]
    probe_result = None
    if probe and sockets and not hung:
        probe_result = http_probe(probe_address(bind_host), port, health_path, probe_timeout)
    return {
        "sockets": sockets,
        "holders": [{"pid": pid, "inodes": inodes} for pid, inodes in sorted(holders.items())],
        "unreadable_pids": len(unreadable),
        "processes": procs,
        "protected": ancestry(os.getpid(), by_pid),
        "probe": probe_result,
    }
