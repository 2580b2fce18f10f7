"""The agent package as it travels to a remote host: its files, named by their hash, so an upgrade
never runs a stale copy and a host that has this version already needs no upload."""

import functools
import hashlib
import os
from dataclasses import dataclass
from typing import Dict

from cascade_ops import agent

REMOTE_DIR = ".cache/cascade-ops"  # relative: under the SSH user's home


@dataclass(frozen=True)
class AgentBundle:
    name: str  # agent_<hash>: the package name on the host
    files: Dict[str, bytes]  # file name -> content

    @property
    def remote_path(self) -> str:
        return "%s/%s" % (REMOTE_DIR, self.name)

    def boot(self, command: str) -> str:
        """Python source that imports the shipped package (so the host caches its bytecode) and runs
        ``command`` (``serve`` or one command name)."""
        return "import sys; sys.path.insert(0, %r); from %s.server import main; sys.exit(main(['agent', %r]))" % (
            REMOTE_DIR,
            self.name,
            command,
        )


@functools.cache
def agent_bundle() -> AgentBundle:
    package = os.path.dirname(os.path.abspath(agent.__file__))
    files = {}
    digest = hashlib.sha256()
    for name in sorted(os.listdir(package)):
        if name.endswith(".py"):
            with open(os.path.join(package, name), "rb") as f:
                files[name] = f.read()
            digest.update(name.encode() + b"\0" + files[name] + b"\0")
    return AgentBundle("agent_%s" % digest.hexdigest()[:16], files)
