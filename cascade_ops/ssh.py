"""The SSH transport: one Fabric connection per host for the whole run, host keys verified.

The host needs Python 3 and nothing else: the stdlib-only agent is uploaded once (named by its
sha256, so an upgrade never runs a stale copy) and started once per run as a small server on the
open connection; each command is one JSON line to its stdin (never on a command line) and one
JSON line back. One login, one interpreter start-up per host per run.
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
import threading
import time
from typing import Optional

import paramiko
from fabric import Connection

from . import agent
from .errors import HostCommandError, HostUnreachable
from .transport import decode_reply, hold_lock

with open(agent.__file__, "rb") as _f:
    AGENT_SOURCE = _f.read()
AGENT_DIR = ".cache/cascade-ops"  # relative: under the SSH user's home
AGENT_MODULE = "agent_%s" % hashlib.sha256(AGENT_SOURCE).hexdigest()[:16]
AGENT_PATH = "%s/%s.py" % (AGENT_DIR, AGENT_MODULE)
# Imported rather than run as a script, so the host caches its bytecode between runs.
AGENT_BOOT = "import sys; sys.path.insert(0, %r); import %s as agent; sys.exit(agent.main(['agent'] + sys.argv[1:]))" % (
    AGENT_DIR, AGENT_MODULE)
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
        self._channel = None  # the agent server's session
        self._pending = b""

    # -- running the agent

    def _upload_agent(self) -> None:
        sftp = self.connection.sftp()
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

    def _command(self, command: str) -> str:
        argv = [self.vars["python"], "-I", "-c", AGENT_BOOT, command]
        line = " ".join(shlex.quote(a) for a in argv)
        return "sudo -n -- " + line if self.vars["become"] else line

    def _server(self):
        """The host's agent process, started on first use and kept for the whole run.

        The agent is uploaded only when the host does not have this version yet (exit 127 from the
        shell test): a host seen before costs no SFTP round trip.
        """
        if self._channel is None or self._channel.closed:
            for attempt in range(2):
                channel = self.connection.client.get_transport().open_session(timeout=COMMAND_SLACK_S)
                channel.exec_command("test -f %s || exit 127; exec %s" % (shlex.quote(AGENT_PATH),
                                                                        self._command("serve")))
                self._channel, self._pending = channel, b""
                if attempt or not self._agent_missing(channel):
                    break
                self._upload_agent()
        return self._channel

    def _agent_missing(self, channel) -> bool:
        """Ask the fresh server for a no-op reply; a 127 exit means the agent is not there yet."""
        try:
            channel.sendall(b'{"command": "path_kind", "kwargs": {"path": "."}}\n')
            self._read_line(channel, time.monotonic() + COMMAND_SLACK_S)
        except (socket.timeout, paramiko.SSHException, OSError):
            pass  # the shell may already have exited: its status says why
        return channel.exit_status_ready() and channel.recv_exit_status() == 127

    def _read_line(self, channel, deadline: float) -> bytes:
        errors = []
        while b"\n" not in self._pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise socket.timeout()
            select.select([channel], [], [], min(remaining, 1.0))
            if channel.recv_stderr_ready():
                errors.append(channel.recv_stderr(1 << 16))
            if channel.recv_ready():
                chunk = channel.recv(1 << 16)
                if not chunk:
                    break
                self._pending += chunk
            elif channel.exit_status_ready() and not channel.recv_stderr_ready():
                break
        line, _, self._pending = self._pending.partition(b"\n")
        if not line and errors:
            raise paramiko.SSHException(b"".join(errors).decode("utf-8", "replace").strip().splitlines()[-1])
        return line

    def agent(self, command: str, **kwargs):
        timeout = _budget(kwargs)
        try:
            channel = self._server()
            channel.sendall((json.dumps({"command": command, "kwargs": kwargs}) + "\n").encode())
            line = self._read_line(channel, time.monotonic() + timeout)
        except socket.timeout:
            self._drop_server()  # the agent may be stuck: the next command gets a fresh one
            raise HostCommandError(self.host, command, "no answer within %.0fs" % timeout)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            self._drop_server()
            raise HostCommandError(self.host, command, "SSH: %s" % (exc or type(exc).__name__))
        return decode_reply(self.host, command, line.decode("utf-8", "replace"))

    def _drop_server(self):
        if self._channel is not None:
            self._channel.close()
        self._channel = None

    def spawn(self, **kwargs) -> dict:
        # The agent server lives for this run only: a backend it starts in its own session is
        # re-parented to init when the server exits, with no intermediate process to pay for.
        return self.agent("spawn", **kwargs)

    def lock(self, path: str):
        return hold_lock(self, path)

    @contextlib.contextmanager
    def tunnel(self, host: str, port: int):
        """A loopback listener whose connections are carried to ``host:port`` as the host sees it.

        Our own rather than Fabric's forward_local, which binds inside its thread: a client that
        connects at once can find nothing listening yet.
        """
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        ssh = self.connection.client.get_transport()

        def carry(source, sink):
            try:
                while True:
                    data = source.recv(1 << 16)
                    if not data:
                        break
                    sink.sendall(data)
            except (OSError, EOFError, paramiko.SSHException):
                pass
            finally:
                source.close()
                sink.close()

        def serve():
            while True:
                try:
                    client, peer = listener.accept()
                except OSError:
                    return  # the listener was closed: the tunnel is over
                try:
                    channel = ssh.open_channel("direct-tcpip", (host, port), peer, timeout=COMMAND_SLACK_S)
                except (paramiko.SSHException, OSError, EOFError):
                    client.close()  # the host refused that connection: so does the tunnel
                    continue
                for source, sink in ((client, channel), (channel, client)):
                    threading.Thread(target=carry, args=(source, sink), daemon=True).start()

        threading.Thread(target=serve, daemon=True, name="tunnel-%s" % self.host).start()
        try:
            yield listener.getsockname()
        finally:
            try:
                listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close() alone may not
            except OSError:
                pass
            listener.close()

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
        self._drop_server()
        self.connection.close()
