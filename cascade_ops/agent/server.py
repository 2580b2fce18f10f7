"""The agent as a process: JSON lines in, JSON lines out (one per command), until EOF."""

import json
import os
import sys
from typing import Any, Dict, List

from .registry import call  # the package was imported first: every command is registered


def _reply(reply: Dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()


def serve() -> int:
    """Answer requests, one JSON line in ({"command", "kwargs"}), one JSON line out.

    One agent process per host for a whole run: over SSH every new command would otherwise pay a
    session, a login shell and an interpreter start-up. The first line out says it is ready (after
    sudo, when it asked for a password: the controller answers sudo's prompt until then).
    """
    _reply({"ready": os.getpid()})
    for line in sys.stdin:
        if line.strip():
            request = json.loads(line)
            _reply(call(request["command"], request.get("kwargs", {})))
    return 0


def main(argv: List[str]) -> int:
    """``serve``, or ``COMMAND`` with JSON keyword arguments on stdin's first line (argv[0] is ignored)."""
    if argv[1] == "serve":
        return serve()
    reply = call(argv[1], json.loads(sys.stdin.readline() or "{}"))
    _reply(reply)
    return 1 if "error" in reply else 0
