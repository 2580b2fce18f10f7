"""Host key policies: Fabric's default auto-adds unknown keys and never reads known_hosts; ours
refuse an unknown key (naming it) or, when asked, record it as OpenSSH's accept-new does."""

import base64
import hashlib
import os
import threading
from typing import Any, Dict, List, Optional, Tuple

import paramiko


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's SHA256 fingerprint of a host key."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


class RejectUnknownHostKey(paramiko.MissingHostKeyPolicy):
    def __init__(self, known_hosts: str):
        self.known_hosts = known_hosts

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        raise paramiko.SSHException(
            "unknown host key %s %s for %s; not in %s (verify it, add it, or pass --accept-new-host-keys)"
            % (key.get_name(), fingerprint(key), hostname, self.known_hosts)
        )


class AcceptNewHostKey(paramiko.MissingHostKeyPolicy):
    """Record an unknown key; a changed key is still refused by paramiko (BadHostKeyException)."""

    def __init__(self, known_hosts: str):
        self.known_hosts = known_hosts
        self.recorded: List[str] = []  # what was added, in words

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        client.get_host_keys().add(hostname, key.get_name(), key)
        self.recorded.append(
            "recorded a new host key %s %s for %s in %s"
            % (key.get_name(), fingerprint(key), hostname, self.known_hosts)
        )
        os.makedirs(os.path.dirname(self.known_hosts) or ".", mode=0o700, exist_ok=True)
        with open(self.known_hosts, "a") as f:
            f.write("%s %s %s\n" % (hostname, key.get_name(), key.get_base64()))


_parsed: Dict[Tuple[str, int, int], List[Any]] = {}
_parsing = threading.Lock()


def _entries(known_hosts: str) -> List[Any]:
    """known_hosts parsed once per content for the whole run: decoding every key is most of a
    connection's controller CPU when a fleet's hosts all share one file (as they usually do)."""
    info = os.stat(known_hosts)
    key = (known_hosts, info.st_mtime_ns, info.st_size)
    with _parsing:
        if key not in _parsed:
            keys = paramiko.HostKeys()
            keys.load(known_hosts)
            _parsed.clear()  # an older content of the file (a key was just recorded) is not needed again
            _parsed[key] = keys._entries  # type: ignore[attr-defined]  # each client gets its own list
        return _parsed[key]


def apply_policy(client: paramiko.SSHClient, known_hosts: str, accept_new: bool) -> paramiko.MissingHostKeyPolicy:
    """Load known_hosts and set our policy: both before the first connection."""
    if os.path.exists(known_hosts):
        client.get_host_keys()._entries = list(_entries(known_hosts))  # type: ignore[attr-defined]
    policy = AcceptNewHostKey(known_hosts) if accept_new else RejectUnknownHostKey(known_hosts)
    client.set_missing_host_key_policy(policy)
    return policy


def host_key_settings(ssh_config: Dict[str, Any], known_hosts: Optional[str], accept_new: bool) -> Tuple[str, bool]:
    """Where host keys are checked and whether a new one is recorded: the inventory's
    ``known_hosts`` (else ssh_config's UserKnownHostsFile, else ~/.ssh/known_hosts), and
    --accept-new-host-keys or StrictHostKeyChecking accept-new. StrictHostKeyChecking no is not
    honoured: keys are always verified (``hostkeys`` says so when one is unknown)."""
    configured = ssh_config.get("userknownhostsfile")
    if isinstance(configured, list):
        configured = configured[0] if configured else None
    path = known_hosts or os.path.expanduser(str(configured).split()[0] if configured else "~/.ssh/known_hosts")
    return path, accept_new or ssh_config.get("stricthostkeychecking") == "accept-new"
