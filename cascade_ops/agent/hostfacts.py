"""Everything a diagnosis needs, gathered in one command (one round trip when remote)."""

import json
import os
import pwd
import socket
from typing import Any, Dict, List, Optional

from .launch import record_path
from .owners import Hints, holder_owners
from .probe import http_probe, port_free, probe_address
from .procfs import GONE_STATES, STOPPED_STATES, ancestry, listen_sockets, process_table, socket_holders
from .registry import command


def resolve_address(host: str) -> Optional[str]:
    """The numeric address a server bound to ``host`` listens on (None when it does not resolve)."""
    try:
        return str(socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0][4][0])
    except (socket.gaierror, UnicodeError):
        return None


def _blocks(sock: Dict[str, Any], bind_address: Optional[str]) -> bool:
    """A listener on the address the backend binds, or on a wildcard of its family."""
    return bind_address is None or sock["address"] in (bind_address, "0.0.0.0", "::")


def _relevant(holders: List[int], by_pid: Dict[int, Dict[str, Any]], extra: List[int]) -> List[Dict[str, Any]]:
    """The processes a decision can need: the holders (and ``extra``: a recorded backend, an owner's
    main process), with their ancestors and all their descendants, and this agent's own chain. Not
    the whole table: its size is the host's, and it travels once per diagnosis."""
    children: Dict[int, List[int]] = {}
    for proc in by_pid.values():
        children.setdefault(proc["ppid"], []).append(proc["pid"])
    keep = set(ancestry(os.getpid(), by_pid))
    todo = [pid for pid in list(holders) + extra if pid in by_pid]
    for pid in todo:
        keep.update(ancestry(pid, by_pid))
    while todo:
        pid = todo.pop()
        keep.add(pid)
        todo.extend(c for c in children.get(pid, ()) if c not in keep)
    return [by_pid[pid] for pid in sorted(keep)]


def _recorded(pidfile: Optional[str]) -> Optional[Dict[str, Any]]:
    """The pid an earlier run recorded, its start record, and the live process's working directory:
    the facts that prove (or not) that this pid is still the backend that run started."""
    try:
        with open(pidfile or "") as f:
            text = f.read(64).strip()
    except OSError:
        return None
    if not text.isdigit():
        return None
    pid = int(text)
    try:
        with open(record_path(pidfile or "")) as f:
            record: Optional[Dict[str, Any]] = json.loads(f.read(1 << 16))
    except (OSError, ValueError):
        record = None
    try:
        cwd: Optional[str] = os.readlink("/proc/%d/cwd" % pid)
    except OSError:
        cwd = None
    return {"pid": pid, "record": record if isinstance(record, dict) else None, "cwd": cwd}


@command
def host_facts(
    port: int,
    bind_host: str,
    health_path: str,
    probe_timeout: float,
    probe: bool = True,
    owner_hints: Optional[Hints] = None,
    pidfile: Optional[str] = None,
    accept_timeout: Optional[float] = None,
) -> Dict[str, Any]:
    """Sockets on the port, their holders and who owns each, the processes around them, and the
    health probe. ``pidfile``: the backend an earlier run started, reported too (it may be starting).

    The HTTP probe is skipped when nothing listens (refused is certain) and when a holder in the
    backend's way is stopped or a zombie: it is known hung, and waiting out the probe deadline
    only delays recovery.
    """
    sockets = listen_sockets(port)
    holders, unreadable = socket_holders([s["inode"] for s in sockets])
    procs = process_table()
    by_pid = {p["pid"]: p for p in procs}
    bind_address = resolve_address(bind_host)
    blocking = {s["inode"] for s in sockets if _blocks(s, bind_address)}
    hung: List[int] = [
        pid
        for pid, inodes in holders.items()
        if blocking.intersection(inodes) and by_pid.get(pid, {}).get("state") in STOPPED_STATES + GONE_STATES
    ]
    probe_result = None
    if probe and sockets and not hung:
        probe_result = http_probe(probe_address(bind_host), port, health_path, probe_timeout, accept_timeout)
    owners = holder_owners(sorted(holders), by_pid, port, owner_hints or {})
    mains = [o["main_pid"] for o in owners.values() if o.get("main_pid")]
    recorded = _recorded(pidfile)
    return {
        "sockets": sockets,
        "holders": [{"pid": pid, "inodes": inodes} for pid, inodes in sorted(holders.items())],
        "owners": owners,
        "unreadable_pids": len(unreadable),
        "processes": _relevant(sorted(holders), by_pid, ([recorded["pid"]] if recorded else []) + mains),
        "recorded": recorded,
        "run_user": pwd.getpwuid(os.geteuid()).pw_name,
        "protected": ancestry(os.getpid(), by_pid),
        "probe": probe_result,
        "bind_address": bind_address,
        # Only [::] on either side leaves "in the way?" open (IPV6_V6ONLY): a test bind settles it
        # then, and the usual healthy path skips it.
        "bindable": (
            port_free(bind_host, port) if bind_address == "::" or any(s["address"] == "::" for s in sockets) else True
        ),
    }
