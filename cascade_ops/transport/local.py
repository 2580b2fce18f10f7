"""The machine cascade-ops runs on: the agent is called in-process (no subprocess, no
serialisation: the healthy path stays fast)."""

import shutil
from typing import Any, Dict

from cascade_ops import agent
from cascade_ops.errors import HostCommandError
from cascade_ops.transport.base import Transport, decode_reply


class LocalTransport(Transport):
    name = "local"
    shares_filesystem = True

    def _agent(self, command: str, kwargs: Dict[str, Any]) -> Any:
        # The same reply the agent server sends over SSH, so a failure means the same here and there.
        return decode_reply(self.host, command, agent.call(command, kwargs))

    def put_tree(self, src: str, dest: str) -> None:
        try:
            shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", ".cascade-ops"), dirs_exist_ok=True)
        except OSError as exc:
            raise HostCommandError(self.host, "copy", "%s -> %s: %s" % (src, dest, exc)) from exc
