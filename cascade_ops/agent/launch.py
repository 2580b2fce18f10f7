"""Starting the backend detached from whoever asked: own session, stdin /dev/null, output to a log."""

import json
import os
import subprocess
import sys
from typing import Dict, List, Optional

from .files import atomic_write, read_secret
from .registry import AgentError, command

# The package's directory and name, for a fresh interpreter to import it (locally it is
# cascade_ops/agent, on a remote host agent_<hash>); either way it needs only the standard library.
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
BOOT = "import sys; sys.path.insert(0, %r); from %s.server import main; sys.exit(main(sys.argv))" % (
    os.path.dirname(PACKAGE_DIR), os.path.basename(PACKAGE_DIR))


@command
def spawn(argv: List[str], cwd: str, log: str, pidfile: str, env: Optional[Dict[str, str]] = None,
          secret_env: Optional[Dict[str, str]] = None) -> Dict[str, int]:
    """Start ``argv`` in its own session, stdin /dev/null, output appended to ``log``.

    Secrets are read from files into the child's environment only: never on a command line, where
    any user could read them. Called directly by a short-lived agent (SSH), or through
    ``spawn_detached`` by a long-lived one, so the backend is re-parented to init at once.
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
    atomic_write(pidfile, b"%d\n" % proc.pid, 0o644)
    return {"pid": proc.pid}


@command
def spawn_detached(**kwargs: object) -> Dict[str, int]:
    """``spawn`` in a short-lived intermediate process: the backend is re-parented to init at once
    instead of becoming the zombie of a long-lived caller (a library user, a test, the agent server)."""
    try:
        # Its own session: a Ctrl-C to the runner's terminal must not kill a start half-way.
        done = subprocess.run([sys.executable, "-I", "-c", BOOT, "spawn"], input=json.dumps(kwargs) + "\n",
                              capture_output=True, text=True, timeout=30, start_new_session=True)
    except subprocess.TimeoutExpired:
        raise AgentError("the launcher did not return within 30s") from None
    try:
        reply = json.loads(done.stdout)
    except ValueError:
        raise AgentError("the launcher failed: %s" % (done.stderr.strip().splitlines() or ["no output"])[-1]) from None
    if "error" in reply:
        raise AgentError(reply["error"])
    return reply["result"]
