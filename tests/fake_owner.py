"""An owner kind cascade-ops does not ship, as a maintainer would add one: this module (a DRIVER)
plus one entry in ``cascade_ops.agent.owners.KINDS``. Its manager is tests/supervisors/fake_manager.py."""

import json
import os
import signal
import time
from typing import Dict, List, Optional

from cascade_ops.agent.owners import Hints, OwnerDriver, Seen
from cascade_ops.agent.registry import AgentError, Json

MARK = "fake_manager.py"


def _is_manager(proc: Json) -> bool:
    return len(proc["cmdline"]) > 3 and os.path.basename(proc["cmdline"][1]) == MARK


def _state(owner: Json) -> Json:
    with open(owner["state_file"]) as f:
        return dict(json.load(f))


def _owner(proc: Json) -> Json:
    owner = {"kind": "fake", "name": proc["cmdline"][3], "manager": proc["pid"], "state_file": proc["cmdline"][2]}
    said = _state(owner)
    return dict(owner, state=said["state"], main_pid=said["main_pid"], restarts=said["restarts"])


class FakeDriver(OwnerDriver):
    def observe(self, chain: List[Json], index: int, seen: Seen) -> Optional[Json]:
        return _owner(chain[index]) if _is_manager(chain[index]) else None

    def configured(self, hints: Hints, by_pid: Dict[int, Json]) -> Json:
        named = [p for p in by_pid.values() if _is_manager(p) and p["cmdline"][3] == hints.get("fake_program")]
        if len(named) != 1:
            return {
                "kind": "fake",
                "name": hints.get("fake_program"),
                "reachable": False,
                "why": "%d fake managers run program %r" % (len(named), hints.get("fake_program")),
            }
        return _owner(named[0])

    def _ask(self, owner: Json, how: int, wanted: bool) -> None:
        os.kill(owner["manager"], how)
        deadline = time.monotonic() + 5.0
        while _state(owner)["wanted"] != wanted:  # it has taken the request in: it will not respawn
            if time.monotonic() > deadline:
                raise AgentError("fake manager pid %d did not take the request in" % owner["manager"])
            time.sleep(0.02)

    def stop(self, owner: Json, grace: float, hung: bool) -> Optional[Json]:
        self._ask(owner, signal.SIGUSR1, False)
        return None  # the caller makes sure the proven holders go

    def start(self, owner: Json, launch: Json) -> Json:
        self._ask(owner, signal.SIGUSR2, True)
        return {"transient": False}

    def status(self, owner: Json) -> Json:
        return _state(owner)


DRIVER = FakeDriver()
