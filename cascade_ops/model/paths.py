"""Every file cascade-ops keeps in a host's ``state_dir``, named in one place: what a run, the
watchdog and the reports read and write there must agree on the names."""

import os
from dataclasses import dataclass

from cascade_ops.config.hostvars import HostVars

_NAMES = {
    "lock": "run.lock",
    "backend_pid": "backend.pid",
    "backend_log": "backend.log",
    "backend_env": "backend.env",
    "backups": "backups",
    "incidents": "incidents",
    "history": "history.jsonl",
    "watch_state": "watch-state.json",
    "watch_log": "watch.log",
    "watch_inventory": "watch-inventory.yaml",
}


@dataclass(frozen=True)
class StatePaths:
    state_dir: str
    lock: str  # held by a run for its whole length: one run at a time on a host
    backend_pid: str  # the backend an earlier run started (pid, start time, user): a claim to check
    backend_log: str
    backend_env: str  # the environment file an owner starts the backend with (mode 0600)
    backups: str  # the files a release replaced, for its rollback
    incidents: str
    history: str
    watch_state: str  # the watchdog's streak and restart budget between ticks
    watch_log: str
    watch_inventory: str  # the host's own inventory, written by cron-install for a watchdog with no controller

    @classmethod
    def of(cls, host_vars: HostVars) -> "StatePaths":
        root = str(host_vars.state_dir)
        return cls(root, **{name: os.path.join(root, file) for name, file in _NAMES.items()})
