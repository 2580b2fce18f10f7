"""Host-side facts and primitive operations, standard library only.

This module runs *on the host being recovered*: imported in-process for a local run, or sent as
source to the host's own ``python3`` for a remote one. So it imports nothing outside the standard
library and nothing from cascade_ops, and every public function takes and returns JSON values.

Nothing here decides *what* to do (that is the steps' job); it reads the host and carries out
one exact instruction, refusing when the host no longer looks like the facts the decision used.
"""

import base64
import hashlib
import json
import os
import pwd
import select
import signal
import socket
import sys
import time
from datetime import datetime, timezone

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")
# States in /proc/PID/stat: T stopped (SIGSTOP), t stopped by a tracer, Z zombie, X dead.
STOPPED_STATES = ("T", "t")
GONE_STATES = ("Z", "X")


class AgentError(Exception):
    """An instruction the agent refused or could not carry out; the message says why."""


# --------------------------------------------------------------------------- sockets


def _decode_addr(hexaddr, family):
    raw = bytes.fromhex(hexaddr)
    # /proc/net/tcp* prints each 32-bit word in host (little-endian) order.
    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return socket.inet_ntop(socket.AF_INET if family == 4 else socket.AF_INET6, raw)


def listen_sockets(port):
    """Every LISTEN socket on ``port``, both IP families, with its accept backlog."""
    found = []
    for table, family in (("tcp", 4), ("tcp6", 6)):
        try:
            with open("/proc/net/" + table) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] != "0A":  # TCP_LISTEN
                continue
            addr_hex, port_hex = fields[1].split(":")
            if int(port_hex, 16) != port:
                continue
            # For a listener the kernel reports the current accept-queue length as rx_queue.
            rx_queue = fields[4].split(":")[1]
            found.append({
                "inode": int(fields[9]),
                "address": _decode_addr(addr_hex, family),
                "port": port,
                "family": family,
                "backlog": int(rx_queue, 16),
                "uid": int(fields[7]),
            })
    return found


def _socket_inodes(pid):
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


def socket_holders(inodes):
    """Map each pid to the subset of ``inodes`` it holds open, by scanning every /proc/PID/fd.

    psutil.net_connections() keeps only the first pid per inode, which hides the second holder
    of an inherited socket; this scan sees them all. Returns (holders, unreadable_pids).
    """
    wanted = set(inodes)
    holders = {}
    unreadable = []
    if not wanted:
        return holders, unreadable
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            held = wanted.intersection(_socket_inodes(int(name)))
        except PermissionError:
            unreadable.append(int(name))
            continue
        if held:
            holders[int(name)] = sorted(held)
    return holders, unreadable


# --------------------------------------------------------------------------- processes


def _boot_time():
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("btime "):
                return int(line.split()[1])
    raise AgentError("no btime in /proc/stat")


_users = {}


def _user(uid):
    if uid not in _users:
        try:
            _users[uid] = pwd.getpwuid(uid).pw_name
        except KeyError:
            _users[uid] = str(uid)
    return _users[uid]


def _read_stat(pid):
    """(comm, fields after comm) of /proc/PID/stat, or None when the process is gone."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            raw = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    close = raw.rindex(")")
    return raw[raw.index("(") + 1:close], raw[close + 2:].split()


def process_info(pid, boot=None, now=None):
    """One process's facts, or None when it is gone."""
    stat = _read_stat(pid)
    if stat is None:
        return None
    comm, fields = stat
    try:
        uid = os.stat("/proc/%d" % pid).st_uid
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            raw_cmd = f.read()
    except OSError:
        return None
    boot = _boot_time() if boot is None else boot
    now = time.time() if now is None else now
    start_ticks = int(fields[19])
    cmdline = [a.decode("utf-8", "replace") for a in raw_cmd.rstrip(b"\0").split(b"\0")] if raw_cmd else []
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
        "age_s": round(max(0.0, now - (boot + start_ticks / _CLK_TCK)), 2),
        "cpu_s": round((int(fields[11]) + int(fields[12])) / _CLK_TCK, 2),
        "threads": int(fields[17]),
        "rss": int(fields[21]) * _PAGE,
        "cmdline": cmdline or ["[" + comm + "]"],
    }


def process_table():
    """Facts about every process on the host (the tree is needed to find reloaders and workers)."""
    boot, now = _boot_time(), time.time()
    table = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            info = process_info(int(name), boot, now)
            if info is not None:
                table.append(info)
    return table


def _ancestry(pid, by_pid):
    chain = []
    while pid in by_pid and pid not in chain:
        chain.append(pid)
        pid = by_pid[pid]["ppid"]
    return chain


# --------------------------------------------------------------------------- HTTP probe


def probe_address(bind_host):
    """Where to reach a server bound to ``bind_host`` from the same host."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(bind_host, bind_host)


def http_probe(host, port, path, timeout):
    """GET ``path`` with one deadline for connect, send and the whole response.

    A raw socket instead of http.client: it keeps the hot path free of imports, and a single
    deadline is exact (http.client's timeout is per operation, so a trickling server outlives it).
    A completed TCP handshake proves nothing: a hung server's kernel still accepts.
    """
    started = time.monotonic()
    deadline = started + timeout
    result = {"url": "http://%s:%d%s" % (host if ":" not in host else "[%s]" % host, port, path)}

    def finish(**fields):
        result.update(fields)
        result["elapsed_s"] = round(time.monotonic() - started, 4)
        return result

    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except ConnectionRefusedError:
        return finish(ok=False, error="refused", detail="connection refused")
    except socket.timeout:
        return finish(ok=False, error="timeout", detail="no TCP connection within %.2fs" % timeout)
    except OSError as exc:
        return finish(ok=False, error="error", detail=str(exc))
    chunks = []
    try:
        with sock:
            request = "GET %s HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n\r\n" % (path, host, port)
            sock.sendall(request.encode())
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise socket.timeout()
                sock.settimeout(remaining)
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                if sum(map(len, chunks)) > 1 << 20:
                    break
    except socket.timeout:
        return finish(ok=False, error="timeout",
                      detail="connected, but no complete HTTP response within %.2fs" % timeout)
    except OSError as exc:
        return finish(ok=False, error="error", detail=str(exc))
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return finish(ok=False, error="bad_response", detail=repr(raw[:200]))
    excerpt = body[:512].decode("utf-8", "replace")
    if status != 200:
        return finish(ok=False, error="bad_status", status=status, body=excerpt)
    return finish(ok=True, status=status, body=excerpt)


# --------------------------------------------------------------------------- one-call facts


def host_facts(port, bind_host, health_path, probe_timeout, probe=True):
    """Everything diagnosis needs in one call (one round trip when remote).

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
        "protected": _ancestry(os.getpid(), by_pid),
        "probe": probe_result,
        "collected_at": time.time(),
    }


# --------------------------------------------------------------------------- signals


class _Target:
    """One process to signal, pinned to its identity (pid *and* start time).

    With pidfd the kernel guarantees a signal reaches the process we opened; opening it and then
    confirming the start time closes the window psutil's check-then-kill leaves open.
    """

    def __init__(self, pid, start_ticks):
        self.pid = pid
        self.start_ticks = start_ticks
        self.fd = None
        if hasattr(os, "pidfd_open"):
            try:
                self.fd = os.pidfd_open(pid)
            except ProcessLookupError:
                self.fd = None
            except OSError:  # kernel without pidfd: fall back to the start-time check alone
                pass

    def same_process(self):
        stat = _read_stat(self.pid)
        return stat is not None and int(stat[1][19]) == self.start_ticks and stat[1][0] not in GONE_STATES

    def gone(self):
        if self.fd is not None and select.select([self.fd], [], [], 0)[0]:
            return True  # a pidfd turns readable when its process exits
        return not self.same_process()

    def send(self, sig):
        try:
            if self.fd is not None:
                signal.pidfd_send_signal(self.fd, sig)
            elif self.same_process():
                os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def close(self):
        if self.fd is not None:
            os.close(self.fd)


def _wait_gone(targets, deadline, poll_interval):
    while True:
        alive = [t for t in targets if not t.gone()]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(min(poll_interval, max(0.0, deadline - time.monotonic())))


def terminate(targets, grace, kill_timeout=5.0, poll_interval=0.01):
    """SIGTERM (then SIGCONT), wait ``grace`` seconds, SIGKILL survivors; zombies count as gone.

    SIGCONT follows SIGTERM because a stopped process keeps SIGTERM pending until it is continued
    (as systemd does). ``targets`` are {"pid", "start_ticks"} from a snapshot; a pid whose start
    time no longer matches is a different process and is never signalled.
    """
    handles = []
    outcomes = {}
    for spec in targets:
        target = _Target(spec["pid"], spec["start_ticks"])
        if not target.same_process():
            target.close()
            outcomes[target.pid] = "already gone"
            continue
        handles.append(target)
    try:
        started = time.monotonic()
        for target in handles:
            target.send(signal.SIGTERM)
            target.send(signal.SIGCONT)
        survivors = _wait_gone(handles, started + grace, poll_interval)
        for target in handles:
            if target not in survivors:
                outcomes[target.pid] = "exited on SIGTERM"
        for target in survivors:
            target.send(signal.SIGKILL)
        stubborn = _wait_gone(survivors, time.monotonic() + kill_timeout, poll_interval)
        for target in survivors:
            outcomes[target.pid] = "still running after SIGKILL" if target in stubborn else "killed (SIGKILL)"
    finally:
        for target in handles:
            target.close()
    return {"outcomes": [{"pid": pid, "outcome": o} for pid, o in sorted(outcomes.items())],
            "elapsed_s": round(time.monotonic() - started, 3) if handles else 0.0}


def suspend(pid, start_ticks):
    """SIGSTOP one process (the demo's way to make a backend hang)."""
    target = _Target(pid, start_ticks)
    try:
        if not target.same_process():
            raise AgentError("process %d is gone or was replaced" % pid)
        target.send(signal.SIGSTOP)
    finally:
        target.close()
    return {"pid": pid}


# --------------------------------------------------------------------------- evidence


def _tcp_states():
    """inode -> TCP state code for every TCP socket on the host (01 ESTABLISHED, 08 CLOSE_WAIT...)."""
    states = {}
    for table in ("tcp", "tcp6"):
        try:
            with open("/proc/net/" + table) as f:
                for line in f.read().splitlines()[1:]:
                    fields = line.split()
                    states[int(fields[9])] = fields[3]
        except OSError:
            continue
    return states


_TCP_NAMES = {"01": "established", "08": "close_wait", "0A": "listen"}


def _socket_counts(pid, states):
    counts = {name: 0 for name in _TCP_NAMES.values()}
    try:
        for inode in _socket_inodes(pid):
            name = _TCP_NAMES.get(states.get(inode))
            if name:
                counts[name] += 1
    except PermissionError:
        pass
    return counts


def _kernel_view(pid):
    view = {}
    try:
        with open("/proc/%d/wchan" % pid) as f:
            view["wchan"] = f.read().strip() or "0"
        with open("/proc/%d/status" % pid) as f:
            view["status_state"] = next((l.split(":", 1)[1].strip() for l in f if l.startswith("State:")), "")
    except OSError:
        pass
    return view


def _py_spy_dump(py_spy, pid, timeout):
    import subprocess
    # --nonblocking reads memory without pausing the process: a stopped process stays stopped.
    try:
        done = subprocess.run([py_spy, "dump", "--nonblocking", "--pid", str(pid)], capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, "py-spy dump of pid %d did not finish within %.1fs" % (pid, timeout)
    if done.returncode != 0:
        return None, "py-spy dump of pid %d failed: %s" % (pid, (done.stderr or done.stdout).strip()[:300])
    return done.stdout[:20000], None


def evidence(pids, timeout, log_path=None, log_lines=50):
    """What a process looked like before it was signalled: facts, sockets, kernel view, Python stacks.

    Bounded by ``timeout`` overall: whatever would exceed it is skipped with a note, so capturing
    can never hold up the recovery. A process that exits meanwhile is recorded as gone.
    """
    import shutil
    started = time.monotonic()
    deadline = started + timeout
    states = _tcp_states()
    boot, now = _boot_time(), time.time()
    processes, notes = [], []
    for pid in pids:
        info = process_info(pid, boot, now)
        if info is None:
            processes.append({"pid": pid, "gone": True})
            continue
        info.update(_kernel_view(pid))
        info["sockets"] = _socket_counts(pid, states)
        processes.append(info)
    beside = os.path.join(os.path.dirname(sys.executable), "py-spy")  # an unactivated venv's bin
    py_spy = shutil.which("py-spy") or (beside if os.access(beside, os.X_OK) else None)
    if py_spy is None:
        notes.append("py-spy is not installed: no Python stacks (pip install 'cascade-ops[evidence]')")
    for info in processes:
        if py_spy is None or info.get("gone") or "python" not in (info["comm"] + " " + info["cmdline"][0]):
            continue
        remaining = deadline - time.monotonic()
        if remaining < 0.05:
            notes.append("skipped py-spy for pid %d: evidence_timeout (%.1fs) spent" % (info["pid"], timeout))
            continue
        info["python_stacks"], note = _py_spy_dump(py_spy, info["pid"], remaining)
        if note:
            notes.append(note)
    return {"processes": processes, "log_tail": tail(log_path, log_lines) if log_path else [],
            "notes": notes, "elapsed_s": round(time.monotonic() - started, 3)}


# --------------------------------------------------------------------------- ports


def port_free(bind_host, port):
    """True when a fresh listener could bind now (SO_REUSEADDR, as uvicorn sets it)."""
    family = socket.AF_INET6 if ":" in bind_host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((bind_host, port))
        return True
    except OSError:
        return False
    finally:
        sock.close()


def wait_port_free(bind_host, port, timeout, poll_interval=0.01):
    deadline = time.monotonic() + timeout
    while not port_free(bind_host, port):
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll_interval)
    return True


# --------------------------------------------------------------------------- files


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


def file_state(path):
    try:
        with open(path, "rb") as f:
            data = f.read()
        mode = os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        return {"path": path, "exists": False}
    return {"path": path, "exists": True, "sha256": _sha256(data), "size": len(data), "mode": mode}


def path_kind(path):
    """"dir", "file", "other" or None when nothing is there."""
    if os.path.isdir(path):
        return "dir"
    if os.path.isfile(path):
        return "file"
    return "other" if os.path.lexists(path) else None


def list_dir(path):
    """Entry names of a directory, or None when it does not exist."""
    try:
        return sorted(os.listdir(path))
    except FileNotFoundError:
        return None


def read_text(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return None


def prune(directory, prefix, keep):
    """Delete all but the ``keep`` newest files named ``prefix...`` (names sort by timestamp)."""
    try:
        ours = sorted(n for n in os.listdir(directory) if n.startswith(prefix))
    except FileNotFoundError:
        return {"removed": []}
    doomed = ours[:-keep] if keep > 0 else ours
    for name in doomed:
        os.unlink(os.path.join(directory, name))
    return {"removed": doomed}


def _stamp():
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")


def install_file(dest, backup_dir, keep_backups=5, validate_python=False, mode=None, content_b64=None,
                 staged=None):
    """Atomically replace ``dest`` with new content, keeping a timestamped backup.

    The content comes inline (``content_b64``) or already uploaded to ``staged``, a temporary file
    beside ``dest`` (SFTP). It is validated before anything is replaced, fsynced, then renamed over
    ``dest`` (atomic on one filesystem).
    """
    directory = os.path.dirname(dest) or "."
    tmp = staged or os.path.join(directory, ".%s.cascade-tmp.%d" % (os.path.basename(dest), os.getpid()))
    try:
        if staged:
            with open(staged, "rb") as f:
                data = f.read()
        else:
            data = base64.b64decode(content_b64)
        before = file_state(dest)
        if before["exists"] and before["sha256"] == _sha256(data):
            return {"changed": False, "sha256": before["sha256"], "backup": None}
        if validate_python:
            try:
                compile(data, dest, "exec", dont_inherit=True)
            except SyntaxError as exc:
                raise AgentError("refusing %s: not valid Python (%s at line %s)" % (dest, exc.msg, exc.lineno))
        os.makedirs(directory, exist_ok=True)
        backup = None
        if before["exists"]:
            os.makedirs(backup_dir, mode=0o700, exist_ok=True)
            base = os.path.basename(dest)
            backup = os.path.join(backup_dir, "%s.%s" % (base, _stamp()))
            with open(dest, "rb") as src, open(backup, "wb") as out:
                out.write(src.read())
            os.chmod(backup, before["mode"])
            prune(backup_dir, base + ".", keep_backups)
        with open(tmp, "r+b" if staged else "wb") as out:
            if not staged:
                out.write(data)
                out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode if mode is not None else before.get("mode", 0o644))
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return {"changed": True, "sha256": _sha256(data), "backup": backup}


def write_file(path, content, mode=0o600):
    """Replace a small state file atomically (temp file + rename)."""
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    tmp = "%s.tmp.%d" % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(content)
    os.replace(tmp, path)
    return {"path": path}


def append_log(path, line, max_bytes, keep):
    """Append one line; first rotate (path -> path.1 -> ... -> path.KEEP) when it would exceed max_bytes."""
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    data = (line.rstrip("\n") + "\n").encode()
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        size = 0
    if size and size + len(data) > max_bytes:
        for index in range(keep - 1, 0, -1):
            if os.path.exists("%s.%d" % (path, index)):
                os.replace("%s.%d" % (path, index), "%s.%d" % (path, index + 1))
        os.replace(path, path + ".1")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    return {"rotated": bool(size and size + len(data) > max_bytes)}


def restore_file(backup, dest):
    """Put a backup's content back at ``dest`` atomically (the rollback of install_file)."""
    directory = os.path.dirname(dest) or "."
    tmp = os.path.join(directory, ".%s.cascade-restore.%d" % (os.path.basename(dest), os.getpid()))
    with open(backup, "rb") as src, open(tmp, "wb") as out:
        out.write(src.read())
        out.flush()
        os.fsync(out.fileno())
    os.chmod(tmp, os.stat(backup).st_mode & 0o7777)
    os.replace(tmp, dest)
    return {"sha256": file_state(dest)["sha256"]}


def remove_file(path):
    try:
        os.unlink(path)
        return {"removed": True}
    except FileNotFoundError:
        return {"removed": False}


def secret_state(path):
    """Whether the JWT secret file exists and is fit to use; never returns the secret."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return {"exists": False}
    problems = []
    if st.st_mode & 0o077:
        problems.append("mode %o lets other users read it (chmod 600 %s)" % (st.st_mode & 0o777, path))
    if st.st_size < 32:
        problems.append("it is shorter than 32 bytes")
    return {"exists": True, "problems": problems}


def create_secret(path):
    """Create a random secret file readable by its owner only; fail if it already exists."""
    import secrets
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(48))
    return {"created": True}


def read_secret(path):
    with open(path) as f:
        return f.read().strip()


def tail(path, lines=20):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 65536))
            data = f.read()
    except FileNotFoundError:
        return []
    return data.decode("utf-8", "replace").splitlines()[-lines:]


# --------------------------------------------------------------------------- detached start


def spawn(argv, cwd, log, pidfile, env=None, secret_env=None):
    """Start ``argv`` detached: own session, stdin /dev/null, output appended to ``log``.

    Run in a short-lived intermediate process (see ``start_detached``), so the backend is
    re-parented to init instead of becoming the runner's zombie. Secrets are read from files into
    the child's environment only: never on a command line, where any user could read them.
    """
    import subprocess
    child_env = dict(os.environ)
    child_env.update(env or {})
    for name, path in (secret_env or {}).items():
        if os.path.exists(path):  # a missing secret is the backend's to refuse, with its own message
            child_env[name] = read_secret(path)
    os.makedirs(os.path.dirname(log), exist_ok=True)
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        with open(os.devnull, "rb") as devnull:
            proc = subprocess.Popen(argv, cwd=cwd, stdin=devnull, stdout=out, stderr=out,
                                    env=child_env, start_new_session=True, close_fds=True)
    finally:
        os.close(out)
    tmp = pidfile + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % proc.pid)
    os.replace(tmp, pidfile)
    return {"pid": proc.pid}


def wait_healthy(pid, bind_host, port, path, timeout, probe_timeout, poll_interval=0.02):
    """Poll a just-started backend on the host itself until its health path answers 200.

    Gives up early when the process exits (no point waiting out the deadline for a crash).
    """
    started = time.monotonic()
    deadline = started + timeout
    host = probe_address(bind_host)
    last = None
    while True:
        stat = _read_stat(pid)
        if stat is None or stat[1][0] in GONE_STATES:
            return {"ok": False, "reason": "exited", "elapsed_s": round(time.monotonic() - started, 3),
                    "last_probe": last}
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return {"ok": False, "reason": "timeout", "elapsed_s": round(time.monotonic() - started, 3),
                    "last_probe": last}
        last = http_probe(host, port, path, min(probe_timeout, remaining))
        if last["ok"]:
            return {"ok": True, "elapsed_s": round(time.monotonic() - started, 3), "last_probe": last}
        if last["error"] == "refused":
            time.sleep(min(poll_interval, max(0.0, deadline - time.monotonic())))


COMMANDS = {f.__name__: f for f in (
    host_facts, listen_sockets, process_table, http_probe, wait_healthy, terminate, suspend, port_free,
    wait_port_free, file_state, path_kind, list_dir, read_text, install_file, write_file, append_log,
    remove_file, restore_file, secret_state, create_secret, read_secret, tail, spawn, evidence, prune)}


def _crontab(args, user, stdin=None):
    import subprocess
    argv = ["crontab"] + (["-u", user] if user else []) + args
    try:
        return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=10)
    except FileNotFoundError:
        raise AgentError("crontab is not installed (Debian: apt-get install cron)") from None


def crontab_lines(user=None):
    """The user's crontab, line by line ([] when there is none)."""
    done = _crontab(["-l"], user)
    if done.returncode != 0:
        if "no crontab" in done.stderr:
            return []
        raise AgentError("crontab -l failed: %s" % done.stderr.strip())
    return done.stdout.splitlines()


def crontab_entry(marker, entry=None, user=None):
    """Set (``entry``) or remove (None) the one line ending with ``marker``; every other line stays
    byte for byte. Returns the line found before and whether anything changed."""
    lines = crontab_lines(user)
    current = next((line for line in lines if line.endswith(marker)), None)
    if current == entry:
        return {"previous": current, "changed": False}
    kept = [line for line in lines if line != current] + ([entry] if entry else [])
    done = _crontab(["-"], user, "\n".join(kept) + "\n" if kept else "")
    if done.returncode != 0:
        raise AgentError("crontab - failed: %s" % done.stderr.strip())
    return {"previous": current, "changed": True}


_held_locks = {}


def lock(path):
    """Take an exclusive flock on ``path`` and keep it until ``unlock`` or until this process ends.

    A kernel lock held by the agent process: it lives exactly as long as the controller's
    session, so a crashed controller (or a dropped SSH connection) leaves no stale lock.
    """
    import fcntl
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return {"locked": False}
    if path in _held_locks:  # a second lock of one path in one process fails above; never reached twice
        os.close(fd)
        return {"locked": False}
    _held_locks[path] = fd
    return {"locked": True}


def unlock(path):
    fd = _held_locks.pop(path, None)
    if fd is not None:
        os.close(fd)
    return {"unlocked": fd is not None}


def spawn_detached(**kwargs):
    """``spawn`` in a short-lived intermediate process: the backend is re-parented to init at once
    instead of becoming the zombie of a long-lived caller (a library user, a test, the agent server)."""
    import subprocess
    try:
        done = subprocess.run([sys.executable, "-I", os.path.abspath(__file__), "spawn"],
                              input=json.dumps(kwargs) + "\n", capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        raise AgentError("the launcher did not return within 30s")
    try:
        reply = json.loads(done.stdout)
    except ValueError:
        raise AgentError("the launcher failed: %s" % (done.stderr.strip().splitlines() or ["no output"])[-1])
    if "error" in reply:
        raise AgentError(reply["error"])
    return reply["result"]


COMMANDS.update({f.__name__: f for f in (lock, unlock, spawn_detached, crontab_lines, crontab_entry)})


def _call(command, kwargs):
    try:
        return {"result": COMMANDS[command](**kwargs)}
    except AgentError as exc:
        return {"error": str(exc)}
    except Exception as exc:  # reported to the controller, which decides what it means
        return {"error": "%s: %s" % (type(exc).__name__, exc)}


def _reply(reply):
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()


def serve():
    """Answer requests, one JSON line in ({"command", "kwargs"}), one JSON line out, until EOF.

    One agent process per host for a whole run: over SSH every new command would otherwise pay a
    session, a login shell and an interpreter start-up.
    """
    for line in sys.stdin:
        if line.strip():
            request = json.loads(line)
            _reply(_call(request["command"], request.get("kwargs", {})))
    return 0


def main(argv):
    """``agent.py serve``, or ``agent.py COMMAND`` with JSON keyword arguments on stdin's first line."""
    if argv[1] == "serve":
        return serve()
    reply = _call(argv[1], json.loads(sys.stdin.readline() or "{}"))
    _reply(reply)
    return 1 if "error" in reply else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
