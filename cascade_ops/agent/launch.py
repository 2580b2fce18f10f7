"""Starting the backend detached from whoever asked: own session, stdin /dev/null, output to a log."""

import os
import subprocess
import threading
from typing import Dict, List, Optional

from .files import atomic_write, read_secret
from .registry import command


@command
def spawn(argv: List[str], cwd: str, log: str, pidfile: str, env: Optional[Dict[str, str]] = None,
          secret_env: Optional[Dict[str, str]] = None) -> Dict[str, int]:
    """Start ``argv`` in its own session, stdin /dev/null, output appended to ``log``.

    Its own session: a Ctrl-C or a hang-up to the runner's terminal never reaches it, and it
    outlives the runner (re-parented to init when the runner exits). While the runner lives, a
    thread reaps it if it exits, so a long-lived caller (a library user, a test, the agent server)
    never keeps a zombie. Secrets are read from files into the child's environment only: never on a
    command line, where any user could read them.
    """
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
    threading.Thread(target=proc.wait, daemon=True, name="reap-%d" % proc.pid).start()
    atomic_write(pidfile, b"%d\n" % proc.pid, 0o644)
    return {"pid": proc.pid}
