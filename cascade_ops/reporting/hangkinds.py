"""What kind of hang a recovery saw, in words, from the facts gathered before and during the kill:
the process state, where the kernel says it sleeps (wchan), whether it burned CPU while ignoring
SIGTERM, the accept backlog, and (with py-spy) the top of its main thread's stack."""

from typing import Any, Dict, List, Optional

SLEEP_WCHANS = ("nanosleep",)  # time.sleep and friends
LOCK_WCHANS = ("futex",)  # a lock, a condition, a join
SPINNING_CPU = 0.5  # share of one CPU used while it should have been exiting


def top_frame(stacks: Optional[str]) -> Optional[str]:
    """The innermost frame of the main thread in a ``py-spy dump``."""
    if not stacks:
        return None
    lines = stacks.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("Thread") and "MainThread" in line:
            frame = next((f.strip() for f in lines[index + 1 :] if f.startswith("    ")), None)
            return frame
    return None


def _process_kind(proc: Dict[str, Any], cpu_busy: Optional[float]) -> Dict[str, Any]:
    state, wchan = proc.get("state", "?"), proc.get("wchan", "")
    signs = ["state %s" % (proc.get("status_state") or state)]
    if wchan and wchan != "0":
        signs.append("wchan %s" % wchan)
    if cpu_busy is not None:
        signs.append(
            "CPU %s (%.0f%% of a CPU after SIGTERM)" % ("moving" if cpu_busy >= 0.05 else "still", cpu_busy * 100)
        )
    frame = top_frame(proc.get("python_stacks"))
    if frame:
        signs.append("main thread at %s" % frame)
    if state in ("T", "t"):
        kind, words = "stopped", "stopped (SIGSTOP or a debugger): it cannot run at all"
    elif state == "Z":
        kind, words = "zombie", "a zombie: it exited and was never reaped"
    elif (cpu_busy is not None and cpu_busy >= SPINNING_CPU) or state == "R":
        kind, words = "spinning", "a handler spins on the CPU and never yields to the event loop"
    elif any(w in wchan for w in LOCK_WCHANS):
        kind, words = "lock", "the main thread waits on a lock (futex) that is never released: a deadlock"
    elif any(w in wchan for w in SLEEP_WCHANS):
        kind, words = "blocked_loop", "the event loop is blocked in a blocking sleep (a sync call in an async handler)"
    else:
        kind, words = "blocked_loop", "the event loop is blocked in a system call and never ran its signal handler"
    return {"pid": proc["pid"], "kind": kind, "words": words, "signs": signs}


def classify(
    diagnosis: Optional[Dict[str, Any]], evidence: Optional[Dict[str, Any]], terminated: List[Dict[str, Any]]
) -> Optional[Dict[str, Any]]:
    """The hang, or None when the run signalled nothing (nothing was hung, or it was not ours).

    The process looked at is the innermost holder (a worker does the serving; its reloader or
    master only supervises); every signalled process gets its own reading in ``processes``.
    """
    if not evidence or not evidence.get("processes"):
        return None
    busy = {o["pid"]: o.get("cpu_busy") for o in terminated}
    readings = [_process_kind(p, busy.get(p["pid"])) for p in evidence["processes"] if not p.get("gone")]
    if not readings:
        return None
    holders = [h["pid"] for h in (diagnosis or {}).get("holders", []) if h.get("in_the_way", True)]
    by_pid = {p["pid"]: p for p in evidence["processes"] if not p.get("gone")}
    depth = {pid: _depth(pid, by_pid) for pid in by_pid}
    candidates = [r for r in readings if r["pid"] in holders] or readings
    main = max(candidates, key=lambda r: depth[r["pid"]])
    if any(r["kind"] == "stopped" for r in candidates):
        main = next(r for r in candidates if r["kind"] == "stopped")
    signs = list(main["signs"])
    backlog = [
        h
        for h in (diagnosis or {}).get("holders", [])
        if h.get("backlog_max") and h.get("backlog", 0) >= h["backlog_max"]
    ]
    if backlog:
        signs.append(
            "accept backlog full (%d waiting, listen() allows %d)" % (backlog[0]["backlog"], backlog[0]["backlog_max"])
        )
    summary = "pid %d: %s (%s)" % (main["pid"], main["words"], "; ".join(signs))
    return {
        "kind": main["kind"],
        "pid": main["pid"],
        "summary": summary,
        "processes": readings,
        "backlog_full": bool(backlog),
    }


def _depth(pid: int, by_pid: Dict[int, Dict[str, Any]]) -> int:
    depth, seen = 0, set()
    while pid in by_pid and pid not in seen:
        seen.add(pid)
        pid = by_pid[pid]["ppid"]
        depth += 1
    return depth
