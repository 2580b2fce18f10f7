"""Typed facts about who owns a port holder, built from what ``agent.owners`` reports. The kinds of
owner, and what each is called, come from the agent's one table (``agent.owners.KINDS``)."""

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

from cascade_ops.agent.owners import KINDS as OWNER_KINDS

# Read from the table at each call, not copied at import: a kind registered later is one at once.


def kinds() -> Tuple[str, ...]:
    """The owners cascade-ops can ask ("none", a detached process, is not one)."""
    return tuple(OWNER_KINDS)


def what(kind: str) -> str:
    """What an owner of ``kind`` is called in sentences; containerd's are seen, never asked."""
    meta = OWNER_KINDS.get(kind)
    return meta.what if meta else "containerd container" if kind == "containerd" else kind


def name_var(kind: str) -> Optional[str]:
    """The host variable that names an owner of ``kind`` (``unit`` for systemd), if it is a kind."""
    meta = OWNER_KINDS.get(kind)
    return meta.hint_vars[0] if meta else None


def hint_vars() -> Dict[str, None]:
    """Every host variable the agent needs to find and name an owner, in table order."""
    return {var: None for meta in OWNER_KINDS.values() for var in meta.hint_vars}


@dataclass(frozen=True)
class Owner:
    kind: str  # one of kinds(), "containerd" (seen, cannot be asked), or "none"
    name: str = ""  # the unit, the program, the container's name
    reachable: bool = True  # whether it can be asked from here
    why: str = ""  # why it cannot
    main_pid: int = 0  # the process it says it runs (0: none now)
    state: str = ""
    restarts: int = 0  # its own restart counter (systemd NRestarts, docker RestartCount)
    exec_start: str = ""  # what a systemd unit runs
    cgroup: str = ""
    via: str = ""  # the process that forwards the port to it (docker-proxy)
    raw: Dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)

    @classmethod
    def from_agent(cls, raw: Dict[str, Any]) -> "Owner":
        name = raw.get("unit") or raw.get("program") or raw.get("name") or str(raw.get("container") or "")[:12]
        return cls(
            raw["kind"],
            name,
            raw.get("reachable", True),
            raw.get("why", ""),
            raw.get("main_pid", 0),
            raw.get("state", ""),
            raw.get("restarts", 0),
            raw.get("exec_start", ""),
            raw.get("cgroup") or "",
            raw.get("via", ""),
            dict(raw),
        )

    @property
    def managed(self) -> bool:
        return self.kind != "none"

    @property
    def label(self) -> str:
        """Short, for a table column: ``systemd:web.service``, ``supervisor:web``, ``-``."""
        return "%s:%s" % (self.kind, self.name or "?") if self.managed else "-"

    def describe(self) -> str:
        if not self.managed:
            return "no owner (a detached process)"
        said = ", ".join(x for x in (self.state, "main pid %d" % self.main_pid if self.main_pid else "") if x)
        return "%s %s%s" % (what(self.kind), self.name or "?", " (%s)" % said if said else "")

    def to_json(self) -> Dict[str, Any]:
        doc = {"kind": self.kind, "name": self.name, "reachable": self.reachable}
        for key in ("why", "main_pid", "state", "restarts", "cgroup", "via"):
            if getattr(self, key):
                doc[key] = getattr(self, key)
        return doc


DETACHED = Owner("none")
