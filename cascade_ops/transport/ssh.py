"""The SSH transport: one Fabric connection per host for the whole run, host keys verified.

The host needs Python 3 and nothing else: the stdlib-only agent package is uploaded once (named by
its hash) and started once per run as a small server on the open connection; each command is one
JSON line to its stdin (never on a command line) and one JSON line back. One login, one interpreter
start-up per host per run. This module, and with it Fabric and paramiko, is imported only when a
host is reached over SSH (``config.connections``), so a local run never pays for them.
"""

import contextlib
import json
import os
import select
import shlex
import socket
import stat
import time
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

import paramiko
from fabric import Connection

from cascade_ops.errors import HostCommandError, HostUnreachable
from cascade_ops.transport import become
from cascade_ops.transport.base import DEFAULT_CONNECT, ConnectOptions, Transport, decode_reply
from cascade_ops.transport.bundle import agent_bundle
from cascade_ops.transport.hostkeys import apply_policy, fingerprint, host_key_settings

# Headroom on top of the durations a command is asked to wait for itself.
COMMAND_SLACK_S = 30.0
# Shell exit statuses: the agent is not on this host yet; no interpreter for it.
AGENT_MISSING, NO_PYTHON = 127, 126
# Where ``agent_python: auto`` looks, in order (as Ansible's interpreter discovery).
DISCOVERED_PYTHONS = ("python3", "/usr/bin/python3", "/usr/libexec/platform-python", "python")


def _quiet_library_logs() -> None:
    """paramiko logs its tracebacks (a silent peer, a refused key) to stderr when nothing else takes
    them: our output says what happened in one line. They go to $CASCADE_DEBUG_LOG when it is set."""
    import logging

    logger = logging.getLogger("paramiko")
    if logger.handlers:
        return
    path = os.environ.get("CASCADE_DEBUG_LOG")
    handler: logging.Handler = logging.FileHandler(path) if path else logging.NullHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if path else logging.WARNING)
    logger.propagate = False


def _budget(kwargs: Dict[str, Any]) -> float:
    return COMMAND_SLACK_S + sum(float(kwargs.get(k) or 0) for k in ("timeout", "grace", "probe_timeout"))


class SSHTransport(Transport):
    """A host reached over SSH (a Fabric ``Connection``, which is an Invoke ``Context``)."""

    name = "ssh"

    def __init__(self, host_vars: Mapping[str, Any], options: ConnectOptions = DEFAULT_CONNECT):
        super().__init__(host_vars, options)
        _quiet_library_logs()
        # sudo's password, if it wants one: it only ever travels on the agent session's stdin, as the
        # answer to sudo's own prompt (a marker of ours, so nothing else is ever answered with it).
        self._password = options.become_password or become.password_from_file(
            self.host, self.vars["become_password_file"]
        )
        self._prompt = "[cascade-ops sudo %s]" % os.urandom(4).hex()
        self._channel: Any = None  # the agent server's session
        self._no_sftp = False
        self._agent_pid: Optional[int] = None
        self._pending = b""
        v = self.vars
        timeout = v["connect_timeout"]
        connect_kwargs: Dict[str, Any] = {"banner_timeout": timeout, "auth_timeout": timeout}
        if v["key_file"]:
            connect_kwargs.update(key_filename=v["key_file"], look_for_keys=False, allow_agent=False)
        if options.ssh_password:  # -k: tried after the keys, as ssh does; it reaches paramiko only
            connect_kwargs["password"] = options.ssh_password
        # ~/.ssh/config applies as OpenSSH and Fabric apply it (HostName, Port, User, IdentityFile,
        # ProxyJump, UserKnownHostsFile, StrictHostKeyChecking); what the inventory says wins.
        self.connection = Connection(
            v["address"] or v["host"],
            user=v["user"],
            port=v["ssh_port"],
            connect_timeout=max(1, round(timeout)),
            connect_kwargs=connect_kwargs,
        )
        accept_new_host_keys = options.accept_new_host_keys
        known_hosts, accept_new = host_key_settings(self.connection.ssh_config, v["known_hosts"], accept_new_host_keys)
        self._policy = apply_policy(self.connection.client, known_hosts, accept_new)
        hop = self.connection.gateway
        while hop is not None and not isinstance(hop, str):  # each ProxyJump hop's key is verified too
            apply_policy(hop.client, *host_key_settings(hop.ssh_config, v["known_hosts"], accept_new_host_keys))
            hop = hop.gateway

    def connect(self) -> None:
        """Log in (nothing is sent before this), the host key verified by the policy set up above."""
        where, timeout = "%s:%d" % (self.connection.host, self.connection.port), self.vars["connect_timeout"]
        try:
            self.connection.open()
        except paramiko.BadHostKeyException as exc:
            raise HostUnreachable(
                self.host,
                "host key CHANGED (%s %s, expected %s): refusing; possible "
                "man-in-the-middle" % (exc.key.get_name(), fingerprint(exc.key), fingerprint(exc.expected_key)),
            ) from None
        except paramiko.ssh_exception.NoValidConnectionsError as exc:
            reasons = sorted({getattr(e, "strerror", None) or str(e) for e in exc.errors.values()})
            raise HostUnreachable(self.host, "cannot connect to %s (%s)" % (where, "; ".join(reasons))) from None
        except paramiko.AuthenticationException as exc:
            raise HostUnreachable(self.host, self._auth_failed(where, str(exc))) from None
        except (socket.timeout, TimeoutError):
            raise HostUnreachable(self.host, "no SSH connection within %.0fs" % timeout) from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            text = str(exc) or type(exc).__name__
            if text == "No authentication methods available":  # paramiko's words when there was nothing to try
                raise HostUnreachable(
                    self.host, self._auth_failed(where, "no key and no password to try (key_file, IdentityFile, or -k)")
                ) from None
            if "banner" in text or text == "No existing session":  # paramiko's words for a silent peer
                text = "no SSH banner within connect_timeout %gs: %s accepts TCP but does not speak SSH" % (
                    timeout,
                    where,
                )
            raise HostUnreachable(self.host, text) from None
        self.notes.extend(getattr(self._policy, "recorded", ()))

    def _auth_failed(self, where: str, why: str) -> str:
        """Who was refused, where, and with what: the user, the keys tried, a password or not."""
        keys = self.connection.connect_kwargs.get("key_filename") or "the SSH agent's and ~/.ssh's default keys"
        password = " and a password" if self.connection.connect_kwargs.get("password") else ""
        return "authentication failed for user %s at %s with key %s%s: %s" % (
            self.connection.user,
            where,
            ", ".join(keys) if isinstance(keys, list) else keys,
            password,
            why,
        )

    def _sudo(self) -> str:
        return become.sudo_prefix(self.vars["become"], self._prompt, bool(self._password))

    # -- running the agent

    def _sftp(self) -> Any:
        """The connection's SFTP client, or None when the host has no SFTP subsystem (then files go
        over the session itself: ``sessioncopy``)."""
        if self._no_sftp:
            return None
        try:
            return self.connection.sftp()
        except (paramiko.SSHException, EOFError, OSError):
            self._no_sftp = True
            self.notes.append("no SFTP subsystem on this host: files travel over the SSH session instead")
            return None

    def _copy_over_session(self, files: Dict[str, bytes], dest: str, atomic: bool, what: str) -> None:
        from cascade_ops.transport.sessioncopy import copy_over_session

        said = copy_over_session(self.connection.client, self._find_python(), files, dest, atomic, COMMAND_SLACK_S)
        if said:
            raise HostCommandError(
                self.host, what, "no SFTP on this host, and copying over the session failed: %s" % said
            )

    def _upload_agent(self) -> None:
        """Put the agent package in place: files into a fresh directory, renamed into place at once,
        so a concurrent run never imports a half-written package."""
        bundle = agent_bundle()
        sftp = self._sftp()
        if sftp is None:
            self._copy_over_session(dict(bundle.files), bundle.remote_path, True, "agent")
            return
        parts = bundle.remote_path.split("/")
        for depth in range(1, len(parts)):
            with contextlib.suppress(OSError):  # exists
                sftp.mkdir("/".join(parts[:depth]), 0o700)
        tmp = "%s.tmp.%s" % (bundle.remote_path, os.urandom(4).hex())
        sftp.mkdir(tmp, 0o700)
        for name, content in bundle.files.items():
            with sftp.open("%s/%s" % (tmp, name), "wb") as f:
                f.write(content)
        try:
            sftp.posix_rename(tmp, bundle.remote_path)
        except OSError:  # another run put the same version there first
            for name in bundle.files:
                sftp.remove("%s/%s" % (tmp, name))
            sftp.rmdir(tmp)

    def _find_python(self) -> str:
        """Shell that sets $P to the agent's interpreter; ``agent_python: auto`` looks for one as
        Ansible's interpreter discovery does."""
        interpreter = self.vars["agent_python"]
        if interpreter == "auto":
            find = " || ".join("command -v %s" % p for p in DISCOVERED_PYTHONS)
        else:
            find = "command -v %s" % shlex.quote(interpreter)
        return 'P=$(%s) || { echo "no Python 3 for the agent on this host (%s): set agent_python" >&2; exit %d; }; ' % (
            find,
            interpreter,
            NO_PYTHON,
        )

    def _command(self, command: str) -> str:
        """The shell line that runs the agent (through sudo with ``become``)."""
        run = " ".join(shlex.quote(a) for a in ["-I", "-c", agent_bundle().boot(command)])
        return '%secho $$; exec %s"$P" %s' % (self._find_python(), self._sudo(), run)

    def _server(self) -> Any:
        """The host's agent process, started on first use and kept for the whole run.

        The agent is uploaded only when the host does not have this version yet (exit 127 from the
        shell test): a host seen before costs no SFTP round trip.
        """
        if self._channel is None or self._channel.closed:
            for attempt in range(2):
                channel = self.connection.client.get_transport().open_session(timeout=COMMAND_SLACK_S)
                # The shell's pid first: after exec it is the agent's (or its sudo's), to stop it by
                # when this host is cut off. Its absence means the agent is not on the host yet.
                channel.exec_command(
                    "test -d %s || exit %d; %s"
                    % (shlex.quote(agent_bundle().remote_path), AGENT_MISSING, self._command("serve"))
                )
                self._channel, self._pending = channel, b""
                first = self._read_line(channel, time.monotonic() + COMMAND_SLACK_S)
                if first.strip().isdigit():
                    self._agent_pid = int(first)
                    self._await_ready(channel)
                    break
                status = channel.recv_exit_status()
                if status != AGENT_MISSING or attempt:
                    said = (
                        channel.recv_stderr(4096).decode("utf-8", "replace").strip()
                        if channel.recv_stderr_ready()
                        else ""
                    )
                    raise paramiko.SSHException(said or "the agent did not start (status %d)" % status)
                self._upload_agent()
        return self._channel

    def _await_ready(self, channel: Any) -> None:
        """Wait for the agent's ready line, answering sudo's prompt (ours, on stderr) once."""
        answered: List[bool] = []

        def answer(said: bytes) -> None:
            if self._password and said.count(self._prompt.encode()) > len(answered):
                if answered:  # asked again: "Sorry, try again."
                    self._drop_server()
                    raise HostCommandError(
                        self.host,
                        "become",
                        "sudo refused the become password for %s" % (self.vars["user"] or "the SSH user"),
                    )
                channel.sendall(self._password.encode() + b"\n")
                answered.append(True)

        line = self._read_line(channel, time.monotonic() + COMMAND_SLACK_S, answer)
        if not line.startswith(b'{"ready"'):
            raise paramiko.SSHException("the agent did not start: %s" % line[:200].decode("utf-8", "replace"))

    def _read_line(self, channel: Any, deadline: float, on_stderr: Optional[Callable[[bytes], None]] = None) -> bytes:
        """The next line the agent prints; ``on_stderr`` sees all stderr so far as it arrives."""
        errors = []
        while b"\n" not in self._pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise socket.timeout()
            select.select([channel], [], [], min(remaining, 1.0))
            if channel.recv_stderr_ready():
                errors.append(channel.recv_stderr(1 << 16))
                if on_stderr is not None:
                    on_stderr(b"".join(errors))
            if channel.recv_ready():
                chunk = channel.recv(1 << 16)
                if not chunk:
                    break
                self._pending += chunk
            elif (
                channel.exit_status_ready()
                and not channel.recv_stderr_ready()
                and (channel.eof_received or channel.closed)
            ):
                # Done only at the end of the stream: sshd may send the exit status before the last
                # of stderr (sudo's "a password is required"), and no data comes after an EOF.
                break
        line, _, self._pending = self._pending.partition(b"\n")
        if not line and errors:
            said = b"".join(errors).decode("utf-8", "replace").replace(self._prompt, "").strip().splitlines()
            raise paramiko.SSHException(said[-1] if said else "the agent closed its session")
        return line

    def _agent(self, command: str, kwargs: Dict[str, Any]) -> Any:
        timeout = _budget(kwargs)
        try:
            channel = self._server()
            channel.sendall((json.dumps({"command": command, "kwargs": kwargs}) + "\n").encode())
            line = self._read_line(channel, time.monotonic() + timeout)
        except socket.timeout:
            self._drop_server()  # the agent may be stuck: the next command gets a fresh one
            raise HostCommandError(self.host, command, "no answer within %.0fs" % timeout) from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            self._drop_server()
            raise HostCommandError(
                self.host, command, become.explain(self.vars, str(exc) or type(exc).__name__)
            ) from None
        return decode_reply(self.host, command, line)

    def _drop_server(self) -> None:
        if self._channel is not None:
            self._channel.close()
        self._channel = None

    @contextlib.contextmanager
    def tunnel(self, host: str, port: int) -> Iterator[Tuple[str, int]]:
        """A loopback listener whose connections are carried to ``host:port`` as the host sees it.

        Our own rather than Fabric's forward_local, which binds inside its thread: a client that
        connects at once can find nothing listening yet.
        """
        from cascade_ops.transport.tunnel import Tunnel

        with Tunnel(self.connection.client.get_transport(), host, port, COMMAND_SLACK_S, self.host) as address:
            yield address

    def stage(self, dest: str, data: bytes) -> Optional[str]:
        """SFTP the new content to a temporary file beside ``dest``; the agent validates and renames it.

        With ``become`` the SSH user may not write there: the content then goes inline, to sudo.
        """
        sftp = None if self.vars["become"] else self._sftp()
        if sftp is None:  # inline, in the agent command itself
            return None
        path = os.path.join(
            os.path.dirname(dest), ".%s.cascade-upload.%s" % (os.path.basename(dest), os.urandom(4).hex())
        )
        try:
            with sftp.open(path, "wb") as f:
                f.write(data)
        except (OSError, paramiko.SSHException) as exc:
            raise HostCommandError(self.host, "upload", "%s: %s" % (path, exc)) from None
        return path

    def put_tree(self, src: str, dest: str) -> None:
        sftp = self._sftp()
        if sftp is None:
            tree: Dict[str, bytes] = {}
            for root, dirs, names in os.walk(src):
                dirs[:] = [d for d in dirs if d not in ("__pycache__", ".cascade-ops")]
                for name in names:
                    with open(os.path.join(root, name), "rb") as f:
                        tree[os.path.relpath(os.path.join(root, name), src)] = f.read()
            self._copy_over_session(tree, dest, False, "copy")
            return
        try:
            for root, dirs, files in os.walk(src):
                dirs[:] = [d for d in dirs if d not in ("__pycache__", ".cascade-ops")]
                target = os.path.join(dest, os.path.relpath(root, src)) if root != src else dest
                try:
                    sftp.stat(target)
                except FileNotFoundError:
                    sftp.mkdir(target, stat.S_IMODE(os.stat(root).st_mode))
                for name in files:
                    sftp.put(os.path.join(root, name), os.path.join(target, name))
        except (OSError, paramiko.SSHException) as exc:
            raise HostCommandError(self.host, "copy", "%s -> %s: %s" % (src, dest, exc)) from None

    def cancel(self, why: str) -> None:
        """Cut off: stop the agent on the host too (it may be waiting out a start or a grace, holding
        the host's lock), then close the connection."""
        self.cancelled = why
        pid = self._agent_pid
        if pid and self._channel is not None and not self._channel.closed:
            try:
                stopper = self.connection.client.get_transport().open_session(timeout=5)
                stopper.settimeout(5)
                stopper.exec_command("%skill -TERM %d" % (self._sudo().replace(" -- ", " "), pid))
                if self._password and self.vars["become"]:
                    stopper.sendall(self._password.encode() + b"\n")  # sudo may ask; nobody else reads it
                stopper.recv_exit_status()
            except Exception:
                pass
        self.close()

    def close(self) -> None:
        self._drop_server()
        self.connection.close()
