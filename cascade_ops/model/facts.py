"""Typed facts about a host, built from what the agent reports.

Adding a fact: report it in the agent (``agent.procfs.process_info`` or ``agent.hostfacts``) under
the name of a new typed field here; ``from_agent`` and ``to_json`` follow the fields.
"""

import ipaddress
import os
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Dict, FrozenSet, Iterable, List, Optional, Tuple

from cascade_ops import agent
from cascade_ops.agent.procfs import GONE_STATES, STOPPED_STATES
from cascade_ops.config.hostvars import HostVars
from cascade_ops.model.owners import DETACHED, Owner, hint_vars
from cascade_ops.model.paths import StatePaths
from cascade_ops.transport import Transport

_STATE_NAMES = {
    "R": "running",
    "S": "sleeping",
    "D": "disk-sleep",
    "T": "stopped",
    "t": "stopped (traced)",
    "Z": "zombie",
    "X": "dead",
    "I": "idle",
}


@dataclass(frozen=True)
class ProcessFacts:
    pid: int
    ppid: int
    pgid: int
    sid: int
    user: str
    state_code: str  # the agent's "state": one letter of /proc/PID/stat
    comm: str
    start_ticks: int
    age_s: float
    cpu_s: float
    threads: int
    rss: int
    cmdline: Tuple[str, ...]
    exe: Optional[str]  # what /proc/PID/exe points to; None when this user may not read it

    @property
    def state(self) -> str:
        return _STATE_NAMES.get(self.state_code, self.state_code)

    @property
    def stopped(self) -> bool:
        return self.state_code in STOPPED_STATES

    @property
    def zombie(self) -> bool:
        return self.state_code in GONE_STATES

    @property
    def command(self) -> str:
        return " ".join(self.cmdline)

    @classmethod
    def from_agent(cls, raw: Dict[str, Any]) -> "ProcessFacts":
        values = {f.name: raw[_AGENT_NAMES.get(f.name, f.name)] for f in fields(cls)}
        values["cmdline"] = tuple(values["cmdline"])
        return cls(**values)

    def to_json(self) -> Dict[str, Any]:
        doc = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("state_code", "cmdline")}
        doc.update(state=self.state, command=self.command)
        return doc


_AGENT_NAMES = {"state_code": "state"}


@dataclass(frozen=True)
class ListenSocket:
    inode: int
    address: str
    port: int
    family: int
    backlog: int  # connections waiting to be accepted
    backlog_max: int = 0  # what listen() allows (0: unknown)
    in_the_way: bool = True  # it keeps the backend from binding bind_host (see ``address_conflict``)

    @property
    def endpoint(self) -> str:
        return "[%s]:%d" % (self.address, self.port) if self.family == 6 else "%s:%d" % (self.address, self.port)


def address_conflict(address: str, bind_address: str) -> Optional[bool]:
    """Whether a listener on ``address`` keeps a server from binding ``bind_address`` on the same
    port: the same address, or a wildcard of the same family. None when it depends on a socket
    option we cannot read (IPV6_V6ONLY: a dual-stack [::] listener blocks IPv4 too)."""
    listener, wanted = ipaddress.ip_address(address), ipaddress.ip_address(bind_address)
    if listener.version == wanted.version:
        return listener == wanted or listener.is_unspecified or wanted.is_unspecified
    v6, v4 = (listener, wanted) if listener.version == 6 else (wanted, listener)
    assert isinstance(v6, ipaddress.IPv6Address)
    if v6.ipv4_mapped is not None:
        return v6.ipv4_mapped == v4 or v6.ipv4_mapped.is_unspecified or v4.is_unspecified
    return None if v6.is_unspecified else False


@dataclass(frozen=True)
class PortHolder:
    """A process holding one or more of the port's LISTEN sockets open."""

    process: ProcessFacts
    sockets: Tuple[ListenSocket, ...]
    owner: Owner = DETACHED

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def inodes(self) -> FrozenSet[int]:
        return frozenset(s.inode for s in self.sockets)

    @property
    def backlog(self) -> int:
        return sum(s.backlog for s in self.sockets)

    @property
    def in_the_way(self) -> bool:
        return any(s.in_the_way for s in self.sockets)

    def to_json(self) -> Dict[str, Any]:
        return dict(
            self.process.to_json(),
            listen=[s.endpoint for s in self.sockets],
            backlog=self.backlog,
            backlog_max=max((s.backlog_max for s in self.sockets), default=0),
            in_the_way=self.in_the_way,
            owner=self.owner.to_json(),
        )


@dataclass(frozen=True)
class ProbeResult:
    url: str
    ok: bool
    elapsed_s: float
    error: Optional[str] = None  # refused, timeout, bad_status, bad_response, error
    status: Optional[int] = None
    detail: str = ""
    body: str = ""
    accept_s: Optional[float] = None  # how long the server took to accept the probe, when it was watched

    @classmethod
    def from_agent(cls, raw: Dict[str, Any]) -> "ProbeResult":
        return cls(
            raw["url"],
            raw["ok"],
            raw["elapsed_s"],
            raw.get("error"),
            raw.get("status"),
            raw.get("detail", ""),
            raw.get("body", ""),
            raw.get("accept_s"),
        )

    def describe(self) -> str:
        if self.ok:
            return "HTTP %s in %.0f ms" % (self.status, self.elapsed_s * 1000)
        if self.error == "bad_status":
            return "HTTP %s from %s" % (self.status, self.url)
        return "%s from %s: %s" % (self.error, self.url, self.detail or self.error)


@dataclass(frozen=True)
class RecordedStart:
    """What ``state_dir/backend.pid`` claims (the backend an earlier run started) and the facts that
    prove it or not: the start record written beside it, and the live process's working directory."""

    pid: int
    record: Optional[Dict[str, Any]]  # pid, start_ticks, argv, cwd, cwd_real, port, user (None: no record)
    live_cwd: Optional[str]

    @classmethod
    def from_agent(cls, raw: Optional[Dict[str, Any]]) -> "Optional[RecordedStart]":
        return cls(raw["pid"], raw.get("record"), raw.get("cwd")) if raw else None


@dataclass(frozen=True)
class Diagnosis:
    """What a host looks like now: who holds the port, and whether it answers."""

    port: int
    sockets: Tuple[ListenSocket, ...]
    holders: Tuple[PortHolder, ...]
    processes: Dict[int, ProcessFacts]
    protected: FrozenSet[int]  # the runner and its ancestors on that host
    unreadable_pids: int
    probe: Optional[ProbeResult]
    orphan_sockets: Tuple[ListenSocket, ...] = field(default=())  # listening, holder not visible
    recorded: Optional[RecordedStart] = None  # state_dir/backend.pid: the backend an earlier run started
    run_user: str = ""  # the user this run acts as on the host

    @classmethod
    def from_agent(cls, raw: Dict[str, Any], port: int) -> "Diagnosis":
        sockets = tuple(
            ListenSocket(s["inode"], s["address"], s["port"], s["family"], s["backlog"], s.get("backlog_max", 0))
            for s in raw["sockets"]
        )
        if raw.get("bind_address"):
            sockets = _mark_in_the_way(sockets, raw["bind_address"], raw.get("bindable", False))
        by_inode = {s.inode: s for s in sockets}
        processes = {p["pid"]: ProcessFacts.from_agent(p) for p in raw["processes"]}
        owners = raw.get("owners", {})
        holders = tuple(
            PortHolder(
                processes[h["pid"]],
                tuple(by_inode[i] for i in h["inodes"]),
                Owner.from_agent(owners[str(h["pid"])]) if str(h["pid"]) in owners else DETACHED,
            )
            for h in raw["holders"]
            if h["pid"] in processes
        )
        held = {i for h in holders for i in h.inodes}
        probe = ProbeResult.from_agent(raw["probe"]) if raw.get("probe") else None
        return cls(
            port,
            sockets,
            holders,
            processes,
            frozenset(raw["protected"]),
            raw["unreadable_pids"],
            probe,
            tuple(s for s in sockets if s.inode not in held),
            RecordedStart.from_agent(raw.get("recorded")),
            raw.get("run_user", ""),
        )

    @property
    def in_the_way(self) -> Tuple[PortHolder, ...]:
        """The holders whose listeners keep the backend from binding: the only ones to judge."""
        return tuple(h for h in self.holders if h.in_the_way)

    @property
    def socket_unit(self) -> Optional[PortHolder]:
        """systemd itself (PID 1) holding the port's listener for a socket unit: it keeps the queue
        while the service restarts. Never signalled, never a stranger."""
        return next((h for h in self.in_the_way if h.pid == 1 and h.process.comm == "systemd"), None)

    @property
    def bystanders(self) -> Tuple[PortHolder, ...]:
        """Holders of the port on another address: listed, never signalled."""
        return tuple(h for h in self.holders if not h.in_the_way)

    @property
    def blocking_sockets(self) -> Tuple[ListenSocket, ...]:
        return tuple(s for s in self.sockets if s.in_the_way)

    @property
    def hung_holders(self) -> List[PortHolder]:
        return [h for h in self.in_the_way if h.process.stopped or h.process.zombie]

    @property
    def healthy(self) -> bool:
        return bool(self.probe and self.probe.ok and not self.hung_holders)

    @property
    def slow(self) -> bool:
        """It answers nothing within probe_timeout but still accepts connections: its event loop
        runs, a handler is slow. Not hung: a replacement would be as slow (see ``restart_slow``)."""
        return bool(self.probe and self.probe.error == "slow" and not self.hung_holders and not self.forwarded)

    @property
    def forwarded(self) -> bool:
        """A forwarder (docker-proxy) holds the port: it accepts every connection itself, so
        acceptance says nothing of the backend behind it."""
        return any(h.owner.via for h in self.in_the_way)

    def left_alone(self, restart_slow: bool) -> bool:
        """Nothing here for a recovery to mend: healthy, or slow and not to be restarted for it."""
        return self.healthy or (self.slow and not restart_slow)

    @property
    def backlog(self) -> int:
        return sum(s.backlog for s in self.sockets)

    def to_json(self) -> Dict[str, Any]:
        return {
            "verdict": self.verdict(),
            "healthy": self.healthy,
            "port": self.port,
            "backlog": self.backlog,
            "probe": asdict(self.probe) if self.probe else None,
            "holders": [
                dict(h.to_json(), **({"gunicorn_master": self.master_of(h)} if self.master_of(h) else {}))
                for h in self.holders
            ],
            "orphan_sockets": [s.endpoint for s in self.orphan_sockets],
            "unreadable_pids": self.unreadable_pids,
        }

    def verdict(self) -> str:
        """One line a person can act on."""
        if self.healthy and self.probe:
            return "healthy: %s" % self.probe.describe()
        if not self.blocking_sockets:
            others = " (only on %s)" % ", ".join(s.endpoint for s in self.sockets) if self.sockets else ""
            return "unhealthy: nothing listens on port %d%s" % (self.port, others)
        if self.slow and self.probe:
            return "slow, not hung: %s" % self.probe.detail
        if self.hung_holders:
            names = ", ".join("pid %d is %s" % (h.pid, h.process.state) for h in self.hung_holders)
            return "unhealthy: %s (known hung, probe skipped)" % names
        backlog = " (accept backlog %d)" % self.backlog if self.backlog else ""
        if self.probe and self.probe.error == "slow":  # through a forwarder: no answer is all that is known
            return "unhealthy: no answer from %s within the probe timeout (through %s)%s" % (
                self.probe.url,
                ", ".join(h.process.comm for h in self.in_the_way if h.owner.via),
                backlog,
            )
        return "unhealthy: %s%s" % (self.probe.describe() if self.probe else "not probed", backlog)

    def master_of(self, holder: PortHolder) -> Optional[int]:
        """The gunicorn master whose worker ``holder`` is (None for anything else)."""
        master = gunicorn_master(h.process for h in self.holders)
        return master.pid if master is not None and holder.process.ppid == master.pid else None

    def ancestors(self, pid: int) -> List[int]:
        chain = []
        proc = self.processes.get(pid)
        while proc is not None and proc.ppid not in chain and proc.ppid in self.processes:
            chain.append(proc.ppid)
            proc = self.processes.get(proc.ppid)
        return chain


def looks_gunicorn(proc: ProcessFacts) -> bool:
    return proc.comm == "gunicorn" or any(os.path.basename(a) == "gunicorn" for a in proc.cmdline[:3])


def gunicorn_master(targets: Iterable[ProcessFacts]) -> Optional[ProcessFacts]:
    """The gunicorn master among ``targets``: its workers (its children) are among them too."""
    targets = list(targets)
    by_pid = {p.pid: p for p in targets}
    for proc in targets:
        parent = by_pid.get(proc.ppid)
        master = looks_gunicorn(proc) and not (parent and looks_gunicorn(parent))
        if master and any(p.ppid == proc.pid for p in targets):
            return proc
    return None


def _mark_in_the_way(sockets: Tuple[ListenSocket, ...], bind_address: str, bindable: bool) -> Tuple[ListenSocket, ...]:
    """Each listener marked by whether it blocks ``bind_address``. A dual-stack-or-not [::] listener
    counts as in the way only when the port cannot be bound and nothing else explains it."""
    verdicts = [address_conflict(s.address, bind_address) for s in sockets]
    unknown_blocks = not bindable and True not in verdicts
    return tuple(replace(s, in_the_way=bool(v) or (v is None and unknown_blocks)) for s, v in zip(sockets, verdicts))


def owner_hints(v: HostVars) -> Dict[str, Any]:
    """The host's manager settings the agent needs to find and name an owner."""
    return {key: v.get(key) for key in hint_vars()}


def read_diagnosis(transport: Transport, v: HostVars, probe: bool = True) -> Diagnosis:
    """A host's diagnosis in one agent call (one round trip when remote)."""
    raw = transport.call(
        agent.hostfacts.host_facts,
        port=v.port,
        bind_host=v.bind_host,
        health_path=v.health_path,
        probe_timeout=v.probe_timeout,
        probe=probe,
        owner_hints=owner_hints(v),
        pidfile=StatePaths.of(v).backend_pid,
        accept_timeout=v.accept_timeout,
    )
    return Diagnosis.from_agent(raw, v.port)
