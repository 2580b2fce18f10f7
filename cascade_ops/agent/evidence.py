"""What a process looked like before it was signalled: facts, sockets, kernel view, Python stacks."""

import os
import shutil
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

from .files import tail
from .procfs import boot_time, process_info, socket_inodes, tcp_table
from .registry import command

_TCP_NAMES = {"01": "established", "08": "close_wait", "0A": "listen"}


def _tcp_states() -> Dict[int, str]:
    """inode -> TCP state code for every TCP socket on the host (01 ESTABLISHED, 08 CLOSE_WAIT...)."""
    return {int(fields[9]): fields[3] for _, fields in tcp_table()}


def _socket_counts(pid: int, states: Dict[int, str]) -> Dict[str, int]:
    counts = {name: 0 for name in _TCP_NAMES.values()}
    try:
        for inode in socket_inodes(pid):
            name = _TCP_NAMES.get(states.get(inode, ""))
            if name:
                counts[name] += 1
    except PermissionError:
        pass
    return counts


def _kernel_view(pid: int) -> Dict[str, str]:
    view = {}
    try:
        with open("/proc/%d/wchan" % pid) as f:
            view["wchan"] = f.read().strip() or "0"
        with open("/proc/%d/status" % pid) as f:
            view["status_state"] = next((line.split(":", 1)[1].strip() for line in f if line.startswith("State:")), "")
    except OSError:
        pass
    return view


def find_py_spy() -> Optional[str]:
    beside = os.path.join(os.path.dirname(sys.executable), "py-spy")  # an unactivated venv's bin
    return shutil.which("py-spy") or (beside if os.access(beside, os.X_OK) else None)


def _py_spy_dump(py_spy: str, pid: int, timeout: float) -> Tuple[Optional[str], Optional[str]]:
    # --nonblocking reads memory without pausing the process: a stopped process stays stopped.
    try:
        done = subprocess.run(
            [py_spy, "dump", "--nonblocking", "--pid", str(pid)],
            capture_output=True,
            text=True,
            timeout=timeout,
            start_new_session=True,
        )
    except subprocess.TimeoutExpired:
        return None, "py-spy dump of pid %d did not finish within %.1fs" % (pid, timeout)
    if done.returncode != 0:
        return None, "py-spy dump of pid %d failed: %s" % (pid, (done.stderr or done.stdout).strip()[:300])
    return done.stdout[:20000], None


@command
def evidence(
    pids: List[int],
    timeout: float,
    log_path: Optional[str] = None,
    log_lines: int = 50,
    py_spy: Optional[str] = "auto",
    redact: Optional[List[str]] = None,
) -> Dict[str, Any]:
    """Bounded by ``timeout`` overall: whatever would exceed it is skipped with a note, so capturing
    can never hold up the recovery. A process that exits meanwhile is recorded as gone.
    ``py_spy``: its path, "auto" to look for it, or None for no stacks."""
    started = time.monotonic()
    deadline = started + timeout
    states = _tcp_states()
    boot, now = boot_time(), time.time()
    processes: List[Dict[str, Any]] = []
    notes: List[str] = []
    for pid in pids:
        info = process_info(pid, boot, now)
        if info is None:
            processes.append({"pid": pid, "gone": True})
            continue
        info.update(_kernel_view(pid))
        info["sockets"] = _socket_counts(pid, states)
        processes.append(info)
    if py_spy == "auto":
        py_spy = find_py_spy()
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
    return {
        "processes": processes,
        "log_tail": tail(log_path, log_lines, redact=redact) if log_path else [],
        "notes": notes,
        "elapsed_s": round(time.monotonic() - started, 3),
    }
