"""A local TCP port carried over an SSH connection to an address as the remote host sees it."""

import socket
import threading
from typing import Any, Optional, Tuple


class Tunnel:
    """``with Tunnel(ssh_transport, host, port, ...) as (local_host, local_port):``"""

    def __init__(self, ssh: Any, host: str, port: int, open_timeout: float, label: str):
        self.ssh, self.target, self.open_timeout, self.label = ssh, (host, port), open_timeout, label
        self.listener: Optional[socket.socket] = None

    def __enter__(self) -> Tuple[str, int]:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        threading.Thread(target=self._serve, daemon=True, name="tunnel-%s" % self.label).start()
        return self.listener.getsockname()

    def __exit__(self, *exc: object) -> None:
        assert self.listener is not None
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close() alone may not
        except OSError:
            pass
        self.listener.close()

    def _serve(self) -> None:
        import paramiko

        assert self.listener is not None
        while True:
            try:
                client, peer = self.listener.accept()
            except OSError:
                return  # the listener was closed: the tunnel is over
            try:
                channel = self.ssh.open_channel("direct-tcpip", self.target, peer, timeout=self.open_timeout)
            except (paramiko.SSHException, OSError, EOFError):
                client.close()  # the host refused that connection: so does the tunnel
                continue
            for source, sink in ((client, channel), (channel, client)):
                threading.Thread(target=_carry, args=(source, sink), daemon=True).start()


def _carry(source: Any, sink: Any) -> None:
    import paramiko

    try:
        while True:
            data = source.recv(1 << 16)
            if not data:
                break
            sink.sendall(data)
    except (OSError, EOFError, paramiko.SSHException):
        pass
    finally:
        for end in (source, sink):
            try:  # closing a channel whose SSH session is already gone raises too: nothing is left to say
                end.close()
            except (OSError, EOFError, paramiko.SSHException):
                pass
