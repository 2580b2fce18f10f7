"""Who owns a port holder (a systemd unit, a supervisord program, a docker container, or nobody),
and asking that owner, not the process, to stop or start the backend.

One driver per kind of owner: a module of this package whose ``DRIVER`` is an ``OwnerDriver``,
listed in ``KINDS`` with what the controller needs to know of it. Adding a kind (podman, say) is one
module plus one entry. A driver's module is imported only when a holder has such an owner or the
host's variables name one: the diagnosis of a detached backend, the hot path, loads no client.

An owner is reported as facts (``kind``, its name, what it says about itself, and ``reachable``
with ``why`` when it cannot be asked from here); what to do about it is decided by the controller.
"""

import importlib
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

from .procfs import ancestry, cgroup_path, process_table
from .registry import AgentError, Json, command
from .signals import terminate

Hints = Dict[str, Optional[str]]  # the host's variables that name or help find an owner


class OwnerKind(NamedTuple):
    module: str  # the module holding its DRIVER: ".name" inside this package, or any importable name
    what: str  # in sentences: "systemd unit"
    hint_vars: Tuple[str, ...]  # host variables: the first names the owner (manager: auto picks it); more help find it
    # Words in an ancestor's name or first arguments that show this kind's manager: its driver is
    # loaded, and asked, only for a holder with such an ancestor.
    marks: Tuple[str, ...] = ()
    by_cgroup: bool = False  # tells its processes by cgroup: asked when no ancestor is a manager


# In the order ``manager: auto`` reads their variables.
KINDS: Dict[str, OwnerKind] = {
    "systemd": OwnerKind(".systemd", "systemd unit", ("unit",), by_cgroup=True),
    "supervisor": OwnerKind(".supervisor", "supervisord program", ("program", "supervisor_conf"), ("supervisord",)),
    "docker": OwnerKind(".docker", "docker container", ("container",), ("docker-proxy", "containerd-shim")),
}


class Seen:
    """What ``observe`` may use: the holder, the process table, the port, the hints, and a memo (the
    holders of one backend share an owner: it is asked once)."""

    def __init__(self, pid: int, by_pid: Dict[int, Json], port: int, hints: Hints, memo: Dict[Tuple[Any, ...], Json]):
        self.pid, self.by_pid, self.port, self.hints, self.memo = pid, by_pid, port, hints, memo

    def once(self, key: Tuple[Any, ...], observe: Callable[..., Json], *args: Any) -> Json:
        if key not in self.memo:
            self.memo[key] = observe(*args)
        return self.memo[key]


class OwnerDriver:
    """One kind of owner. Every method but ``observe``/``observe_cgroup`` gets the owner's facts as
    this driver reported them; an AgentError says why the owner cannot do what was asked."""

    def observe(self, chain: List[Json], index: int, seen: Seen) -> Optional[Json]:
        """The owner, when ``chain[index]`` (the holder first, then its ancestors) is this kind's
        manager (a supervisord, a containerd shim, a docker-proxy); None otherwise."""
        return None

    def observe_cgroup(self, seen: Seen) -> Optional[Json]:
        """The owner by the holder's cgroup, asked when no ancestor is a manager (systemd)."""
        return None

    def configured(self, hints: Hints, by_pid: Dict[int, Json]) -> Json:
        """The owner the host's variables name, for when nothing holds the port to observe one."""
        raise AgentError("an owner of this kind cannot be found by name")

    def stop(self, owner: Json, grace: float, hung: bool) -> Optional[Json]:
        """Ask the owner to stop the backend (``hung``: it will not stop by itself). The outcomes when
        the owner saw the processes go itself; None when the caller is to make sure they go."""
        raise NotImplementedError

    def start(self, owner: Json, launch: Json) -> Json:
        """Ask the owner to start the backend (``launch``: argv, cwd, log, env_file, env, secret_env,
        listen, for an owner that runs a command it is given); {"transient": bool}."""
        raise NotImplementedError

    def status(self, owner: Json) -> Json:
        """The owner's own word on the backend now (state, main pid, restart count)."""
        raise NotImplementedError

    def log(self, owner: Json, lines: int) -> List[str]:
        """The last lines the owner logged for the backend (empty where it keeps none)."""
        return []


def driver(kind: str) -> OwnerDriver:
    """The driver of an owner kind, its module imported on first use."""
    if kind not in KINDS:
        raise AgentError("no owner kind %r to ask" % kind)
    found: OwnerDriver = importlib.import_module(KINDS[kind].module, __package__).DRIVER
    return found


def _marked(chain: List[Json]) -> List[OwnerDriver]:
    """The drivers of the kinds whose manager may be in ``chain`` (by their marks)."""
    words = " ".join(p["comm"] + " " + " ".join(p["cmdline"][:2]) for p in chain)
    return [driver(kind) for kind, meta in KINDS.items() if any(mark in words for mark in meta.marks)]


def owner_of(pid: int, by_pid: Dict[int, Json], port: int, hints: Hints, memo: Dict[Tuple[Any, ...], Json]) -> Json:
    """The owner of one holder: the nearest manager above it, else the owner of its cgroup."""
    chain = [by_pid[p] for p in ancestry(pid, by_pid)]
    seen = Seen(pid, by_pid, port, hints, memo)
    candidates = _marked(chain)
    for index in range(len(chain)):
        for candidate in candidates:
            found = candidate.observe(chain, index, seen)
            if found is not None:
                return found
    for kind in (kind for kind, meta in KINDS.items() if meta.by_cgroup):
        found = driver(kind).observe_cgroup(seen)
        if found is not None:
            return found
    return {"kind": "none", "cgroup": cgroup_path(pid)}


def holder_owners(pids: List[int], by_pid: Dict[int, Json], port: int, hints: Hints) -> Dict[str, Json]:
    """``owner_of`` for each holder (keys are pids as strings: the reply is JSON)."""
    memo: Dict[Tuple[Any, ...], Json] = {}
    return {str(pid): owner_of(pid, by_pid, port, hints, memo) for pid in pids if pid in by_pid}


@command
def configured_owner(manager: str, hints: Hints) -> Json:
    """The owner the host's variables name, for when nothing holds the port to observe one."""
    return driver(manager).configured(hints, {p["pid"]: p for p in process_table()})


@command
def owner_stop(
    owner: Json, targets: List[Dict[str, int]], listening: List[int], grace: float, hung_after: Optional[float]
) -> Json:
    """Ask ``owner`` to stop the backend, and make sure the proven ``targets`` go.

    The owner's own stop may wait out a long timeout on a hung process (systemd's TimeoutStopSec,
    supervisord's stopwaitsecs): a target still listening ``hung_after`` after the owner was asked,
    or alive after ``grace``, is killed by its pinned identity. A stop asked for is not a crash: the
    owner does not respawn it.
    """
    done = driver(owner["kind"]).stop(owner, grace, hung_after is not None)
    if done is not None:
        return done
    return terminate(targets=targets, grace=grace, listening=listening, hung_after=hung_after, owner_signalled=True)


@command
def owner_start(
    owner: Json,
    argv: Optional[List[str]] = None,
    cwd: str = "/",
    log: str = "",
    env_file: str = "",
    env: Optional[Dict[str, str]] = None,
    secret_env: Optional[Dict[str, str]] = None,
    listen: Optional[str] = None,
) -> Json:
    """Ask ``owner`` to start the backend (a systemd unit that does not exist yet is created as a
    transient unit running ``argv``)."""
    launch = {
        "argv": argv,
        "cwd": cwd,
        "log": log,
        "env_file": env_file,
        "env": env,
        "secret_env": secret_env,
        "listen": listen,
    }
    return driver(owner["kind"]).start(owner, launch)


@command
def owner_status(owner: Json) -> Json:
    """The owner's own word on the backend now (state, main pid, restart count)."""
    return driver(owner["kind"]).status(owner)


@command
def owner_log(owner: Json, lines: int) -> List[str]:
    """The last lines the owner logged for the backend (systemd's journal; empty where none)."""
    return driver(owner["kind"]).log(owner, lines)
