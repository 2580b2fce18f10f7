"""The SSH transport: one Fabric connection per host for the whole run, host keys verified.

The host needs Python 3 and nothing else: the stdlib-only agent is uploaded once (named by its
sha256, so an upgrade never runs a stale copy) and each command is one exec on the open
connection, its JSON arguments on stdin (never on a command line), its JSON reply on stdout.
"""

import base64
import contextlib
import hashlib
import json
import os
import select
import shlex
import socket
import stat
import time
from typing import Optional

import paramiko
from fabric import Connection

from . import agent
from .errors import HostCommandError, HostUnreachable, LockHeld
from .transport import decode_reply

with open(agent.__file__, "rb") as _f:
    AGENT_SOURCE = _f.read()
AGENT_PATH = ".cache/cascade-ops/agent-%s.py" % hashlib.sha256(AGENT_SOURCE).hexdigest()[:16]
# Headroom on top of the durations a command is asked to wait for itself.
COMMAND_SLACK_S = 30.0


def fingerprint(key) -> str:
    """OpenSSH's SHA256 fingerprint of a host key."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


class RejectUnknownHostKey(paramiko.MissingHostKeyPolicy):
    """Refuse a host whose key is not in known_hosts, naming the key (Fabric would add it)."""

    def __init__(self, known_hosts: str):
        self.known_hosts = known_hosts

    def missing_host_key(self, client, hostname, key):
        raise paramiko.SSHException(
            "unknown host key %s %s for %s; not in %s (verify it, add it, or pass --accept-new-host-keys)"
            % (key.get_name(), fingerprint(key), hostname, self.known_hosts))


class AcceptNewHostKey(paramiko.MissingHostKeyPolicy):
    """OpenSSH's accept-new: record an unknown key; a changed key is still refused by paramiko."""

    def __init__(self, known_hosts: str):
        self.known_hosts = known_hosts

    def missing_host_key(self, client, hostname, key):
        client.get_host_keys().add(hostname, key.get_name(), key)
        os.makedirs(os.path.dirname(self.known_hosts) or ".", mode=0o700, exist_ok=True)
        with open(self.known_hosts, "a") as f:
            f.write("%s %s %s\n" % (hostname, key.get_name(), key.get_base64()))


def _budget(kwargs) -> float:
    return COMMAND_SLACK_S + sum(float(kwargs.get(k) or 0) for k in ("timeout", "grace", "probe_timeout"))


class SSHTransport:
    """A host reached over SSH (Fabric ``Connection``; a Connection is an Invoke ``Context``)."""

    def __init__(self, host_vars: dict, accept_new_host_keys: bool = False):
        v = self.vars = host_vars
        self.host = v["host"]
        timeout = v["connect_timeout"]
        connect_kwargs = {"banner_timeout": timeout, "auth_timeout": timeout}
        if v["key_file"]:
            connect_kwargs.update(key_filename=v["key_file"], look_for_keys=False, allow_agent=False)
        self.connection = Connection(v["address"] or v["host"], user=v["user"], port=v["ssh_port"],
                                     connect_timeout=max(1, int(round(timeout))), connect_kwargs=connect_kwargs)
        known_hosts = v["known_hosts"] or os.path.expanduser("~/.ssh/known_hosts")
        client = self.connection.client
        # Fabric auto-adds unknown keys and never loads known_hosts: both fixed before connecting.
        if os.path.exists(known_hosts):
            client.load_host_keys(known_hosts)
        client.set_missing_host_key_policy(
            AcceptNewHostKey(known_hosts) if accept_new_host_keys else RejectUnknownHostKey(known_hosts))
        try:
            self.connection.open()
        except paramiko.BadHostKeyException as exc:
            raise HostUnreachable(self.host, "host key CHANGED (%s %s, expected %s): refusing; possible "
                                  "man-in-the-middle" % (exc.key.get_name(), fingerprint(exc.key),
                                                         fingerprint(exc.expected_key)))
        except paramiko.ssh_exception.NoValidConnectionsError as exc:
            reasons = sorted({e.strerror or str(e) for e in exc.errors.values()})
            raise HostUnreachable(self.host, "cannot connect to %s:%d (%s)" % (
                v["address"] or v["host"], v["ssh_port"], "; ".join(reasons)))
        except paramiko.AuthenticationException as exc:
            raise HostUnreachable(self.host, "authentication failed: %s" % exc)
        except (socket.timeout, TimeoutError):
            raise HostUnreachable(self.host, "no SSH connection within %.0fs" % timeout)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise HostUnreachable(self.host, str(exc) or type(exc).__name__)
        self._agent_ready = False

    # -- running the agent

    def _ensure_agent(self) -> None:
        if self._agent_ready:
            return
        sftp = self.connection.sftp()
        try:
            sftp.stat(AGENT_PATH)
        except FileNotFoundError:
            parts = AGENT_PATH.split("/")[:-1]
            for depth in range(1, len(parts) + 1):
                try:
                    sftp.mkdir("/".join(parts[:depth]), 0o700)
                except OSError:
                    pass  # exists
            tmp = AGENT_PATH + ".tmp"
            with sftp.open(tmp, "wb") as f:
                f.write(AGENT_SOURCE)
            sftp.posix_rename(tmp, AGENT_PATH)
        self._agent_ready = True

    def _command(self, command: str) -> str:
        argv = [self.vars["python"], "-I", AGENT_PATH, command]
        line = " ".join(shlex.quote(a) for a in argv)
        return "sudo -n -- " + line if self.vars["become"] else line

    def _open(self, command: str, kwargs: dict, timeout: float):
        self._ensure_agent()
        channel = self.connection.client.get_transport().open_session(timeout=timeout)
        channel.settimeout(timeout)
        channel.exec_command(self._command(command))
        channel.sendall((json.dumps(kwargs) + "\n").encode())
        return channel

    def agent(self, command: str, **kwargs):
        timeout = _budget(kwargs)
        deadline = time.monotonic() + timeout
        try:
            channel = self._open(command, kwargs, timeout)
            channel.shutdown_write()
            out, err = [], []
            while not (channel.exit_status_ready() and not channel.recv_ready() and not channel.recv_stderr_ready()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    channel.close()
                    raise HostCommandError(self.host, command, "no answer within %.0fs" % timeout)
                select.select([channel], [], [], min(remaining, 1.0))
                if channel.recv_ready():
                    out.append(channel.recv(1 << 16))
                if channel.recv_stderr_ready():
                    err.append(channel.recv_stderr(1 << 16))
            channel.close()
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise HostCommandError(self.host, command, "SSH: %s" % (exc or type(exc).__name__))
        return decode_reply(self.host, command, b"".join(out).decode("utf-8", "replace"),
                            b"".join(err).decode("utf-8", "replace"))

    def spawn(self, **kwargs) -> dict:
        # The agent process is itself the short-lived intermediate: the backend outlives the channel.
        return self.agent("spawn", **kwargs)

    @contextlib.contextmanager
    def lock(self, path: str):
        channel = self._open("hold_lock", {"path": path}, COMMAND_SLACK_S)
        try:
            reply = channel.makefile("r").readline()
            if not decode_reply(self.host, "lock", reply)["locked"]:
                raise LockHeld(self.host, path)
            yield
        finally:
            channel.close()  # EOF on the agent's stdin releases the lock

    @contextlib.contextmanager
    def tunnel(self, host: str, port: int):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            local_port = probe.getsockname()[1]
        with self.connection.forward_local(local_port, remote_port=port, remote_host=host, local_host="127.0.0.1"):
            yield "127.0.0.1", local_port

    def stage(self, dest: str, data: bytes) -> Optional[str]:
        """SFTP the new content to a temporary file beside ``dest``; the agent validates and renames it.

        With ``become`` the SSH user may not write there: the content then goes inline, to sudo.
        """
        if self.vars["become"]:
            return None
        path = os.path.join(os.path.dirname(dest), ".%s.cascade-upload.%s" % (os.path.basename(dest),
                                                                           os.urandom(4).hex()))
        try:
            with self.connection.sftp().open(path, "wb") as f:
                f.write(data)
        except (OSError, paramiko.SSHException) as exc:
            raise HostCommandError(self.host, "upload", "%s: %s" % (path, exc))
        return path

    def put_tree(self, src: str, dest: str) -> None:
        sftp = self.connection.sftp()
        for root, dirs, files in os.walk(src):
            dirs[:] = [d for d in dirs if d not in ("__pycache__", ".cascade-ops")]
            target = os.path.join(dest, os.path.relpath(root, src)) if root != src else dest
            try:
                sftp.stat(target)
            except FileNotFoundError:
                sftp.mkdir(target, stat.S_IMODE(os.stat(root).st_mode))
            for name in files:
                sftp.put(os.path.join(root, name), os.path.join(target, name))

    def close(self) -> None:
        self.connection.close()
