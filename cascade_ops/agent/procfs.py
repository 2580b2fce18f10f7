"""Facts read from /proc: listening sockets, who holds them (by socket inode), processes."""

import os
import pwd
import socket
import struct
import time
from typing import Dict, Iterator, List, Optional, Tuple

from .registry import AgentError, Json, command

CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")
# States in /proc/PID/stat: T stopped (SIGSTOP), t stopped by a tracer, Z zombie, X dead.
STOPPED_STATES = ("T", "t")
GONE_STATES = ("Z", "X")


def _decode_addr(hexaddr: str, family: int) -> str:
    raw = bytes.fromhex(hexaddr)
    # /proc/net/tcp* prints each 32-bit word in host (little-endian) order.
    raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return socket.inet_ntop(socket.AF_INET if family == 4 else socket.AF_INET6, raw)


def tcp_table() -> Iterator[Tuple[int, List[str]]]:
    """(IP family, fields) of every row of /proc/net/tcp and tcp6."""
    for table, family in (("tcp", 4), ("tcp6", 6)):
        try:
            with open("/proc/net/" + table) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            yield family, line.split()


@command
def listen_sockets(port: int) -> List[Json]:
    """Every LISTEN socket on ``port``, both IP families, with its accept backlog (how many wait)
    and what listen() allows (0: unknown). From sock_diag (netlink) when the kernel answers: only
    listeners travel, where /proc/net/tcp lists every connection (thousands on a busy host, and
    slow for the kernel to print); else from /proc/net/tcp."""
    listeners = diag_listeners()
    if listeners is not None:
        return [sock for sock in listeners if sock["port"] == port]
    found: List[Json] = []
    for family, fields in tcp_table():
        if fields[3] != "0A":  # TCP_LISTEN
            continue
        addr_hex, port_hex = fields[1].split(":")
        if int(port_hex, 16) != port:
            continue
        # For a listener the kernel reports the current accept-queue length as rx_queue.
        rx_queue = fields[4].split(":")[1]
        found.append(
            {
                "inode": int(fields[9]),
                "address": _decode_addr(addr_hex, family),
                "port": port,
                "family": family,
                "backlog": int(rx_queue, 16),
                "backlog_max": 0,
            }
        )
    return found


_NETLINK_SOCK_DIAG, _SOCK_DIAG_BY_FAMILY, _NLM_DUMP_REQUEST, _NLMSG_DONE = 4, 20, 0x301, 3
_QUEUES = struct.Struct("=IIIII")  # expires, rqueue (waiting), wqueue (allowed), uid, inode


def diag_listeners() -> Optional[List[Json]]:
    """Every TCP listener on the host, from sock_diag; None when the kernel will not say."""
    found: List[Json] = []
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as nl:
            nl.settimeout(1.0)
            for family, inet, size in ((4, socket.AF_INET, 4), (6, socket.AF_INET6, 16)):
                # inet_diag_req_v2: family, protocol, ext, pad, states (LISTEN only), an empty sockid
                request = struct.pack("=BBBBI48x", inet, socket.IPPROTO_TCP, 0, 0, 1 << 10)
                nl.send(
                    struct.pack("=IHHII", 16 + len(request), _SOCK_DIAG_BY_FAMILY, _NLM_DUMP_REQUEST, 1, 0) + request
                )
                done = False
                while not done:
                    data = nl.recv(65536)
                    offset = 0
                    while offset + 16 <= len(data):
                        length, kind = struct.unpack_from("=IH", data, offset)
                        if kind == _NLMSG_DONE or length < 16:
                            done = True
                            break
                        if kind != _SOCK_DIAG_BY_FAMILY:  # an error message: the kernel will not tell us
                            return None
                        msg = offset + 16
                        sport = struct.unpack_from("!H", data, msg + 4)[0]  # the sockid is in network order
                        raw = data[msg + 8 : msg + 8 + size]
                        _, waiting, allowed, _, inode = _QUEUES.unpack_from(data, msg + 52)
                        found.append(
                            {
                                "inode": inode,
                                "address": socket.inet_ntop(inet, raw),
                                "port": sport,
                                "family": family,
                                "backlog": waiting,
                                "backlog_max": allowed,
                            }
                        )
                        offset += (length + 3) & ~3
    except OSError:
        return None
    return found


def socket_inodes(pid: int) -> Iterator[int]:
    """Inodes of the sockets a process holds open; PermissionError when its fds are hidden from us."""
    fd_dir = "/proc/%d/fd" % pid
    try:
        fds = os.listdir(fd_dir)
    except (FileNotFoundError, ProcessLookupError):
        return  # the process is gone
    for fd in fds:
        try:
            link = os.readlink(fd_dir + "/" + fd)
        except OSError:
            continue
        if link.startswith("socket:["):
            yield int(link[8:-1])


def socket_holders(inodes: List[int]) -> Tuple[Dict[int, List[int]], List[int]]:
    """Map each pid to the subset of ``inodes`` it holds open, by scanning every /proc/PID/fd.

    psutil.net_connections() keeps only the first pid per inode, which hides the second holder
    of an inherited socket; this scan sees them all. Returns (holders, unreadable_pids).
    """
    wanted = set(inodes)
    holders: Dict[int, List[int]] = {}
    unreadable: List[int] = []
    if not wanted:
        return holders, unreadable
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            held = wanted.intersection(socket_inodes(int(name)))
        except PermissionError:
            unreadable.append(int(name))
            continue
        if held:
            holders[int(name)] = sorted(held)
    return holders, unreadable


def boot_time() -> int:
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("btime "):
                return int(line.split()[1])
    raise AgentError("no btime in /proc/stat")


_users: Dict[int, str] = {}


def _user(uid: int) -> str:
    if uid not in _users:
        try:
            _users[uid] = pwd.getpwuid(uid).pw_name
        except KeyError:
            _users[uid] = str(uid)
    return _users[uid]


def read_stat(pid: int) -> Optional[Tuple[str, List[str]]]:
    """(comm, fields after comm) of /proc/PID/stat, or None when the process is gone."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            raw = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    close = raw.rindex(")")
    return raw[raw.index("(") + 1 : close], raw[close + 2 :].split()


def cpu_ticks(pid: int) -> Optional[int]:
    """User + system CPU time of a process, in clock ticks (None when it is gone)."""
    stat = read_stat(pid)
    return int(stat[1][11]) + int(stat[1][12]) if stat else None


def process_info(pid: int, boot: Optional[int] = None, now: Optional[float] = None) -> Optional[Json]:
    """One process's facts, or None when it is gone. Each key is a field of ``facts.ProcessFacts``."""
    stat = read_stat(pid)
    if stat is None:
        return None
    comm, fields = stat
    try:
        uid = os.stat("/proc/%d" % pid).st_uid
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            raw_cmd = f.read()
    except OSError:
        return None
    boot = boot_time() if boot is None else boot
    now = time.time() if now is None else now
    start_ticks = int(fields[19])
    cmdline = [a.decode("utf-8", "replace") for a in raw_cmd.rstrip(b"\0").split(b"\0")] if raw_cmd else []
    try:
        exe: Optional[str] = os.readlink("/proc/%d/exe" % pid)
    except OSError:  # another user's process, or a kernel thread
        exe = None
    return {
        "pid": pid,
        "ppid": int(fields[1]),
        "pgid": int(fields[2]),
        "sid": int(fields[3]),
        "state": fields[0],
        "comm": comm,
        "uid": uid,
        "user": _user(uid),
        "start_ticks": start_ticks,
        "age_s": round(max(0.0, now - (boot + start_ticks / CLK_TCK)), 2),
        "cpu_s": round((int(fields[11]) + int(fields[12])) / CLK_TCK, 2),
        "threads": int(fields[17]),
        "rss": int(fields[21]) * _PAGE,
        "cmdline": cmdline or ["[" + comm + "]"],
        "exe": exe,
    }


@command
def process_table() -> List[Json]:
    """Facts about every process on the host (the tree is needed to find reloaders and workers)."""
    boot, now = boot_time(), time.time()
    table = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            info = process_info(int(name), boot, now)
            if info is not None:
                table.append(info)
    return table


def ancestry(pid: int, by_pid: Dict[int, Json]) -> List[int]:
    """``pid`` and its ancestors, nearest first."""
    chain: List[int] = []
    while pid in by_pid and pid not in chain:
        chain.append(pid)
        pid = by_pid[pid]["ppid"]
    return chain


def cgroup_path(pid: int) -> Optional[str]:
    """The process's path in systemd's hierarchy (cgroup v1 ``name=systemd``, else the v2 one)."""
    try:
        with open("/proc/%d/cgroup" % pid) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    v2 = None
    for line in lines:
        ident, controllers, path = line.split(":", 2)
        if controllers == "name=systemd":
            return path
        if ident == "0" and controllers == "":
            v2 = path
    return v2
