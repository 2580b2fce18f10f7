"""Files on the host: state, atomic replacement with backups, small state files, logs, the secret."""

import base64
import hashlib
import os
import re
import secrets
import stat
from datetime import datetime, timezone
from typing import Any, List, Optional, Tuple

from .registry import AgentError, Json, command


def atomic_write(path: str, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` all at once: a temporary file beside it, fsynced, renamed over
    it (atomic on one filesystem), then the directory fsynced so the rename survives a crash.
    A failure (ENOSPC, EROFS...) names ``path``: a write error alone names no file."""
    try:
        _atomic_write(path, data, mode)
    except OSError as exc:
        if exc.filename is None:
            raise OSError(exc.errno, exc.strerror, path) from exc
        raise


def _atomic_write(path: str, data: bytes, mode: int) -> None:
    directory = os.path.dirname(path) or "."
    tmp = os.path.join(directory, ".%s.cascade-tmp.%d.%s" % (os.path.basename(path), os.getpid(), secrets.token_hex(3)))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")


@command
def file_state(path: str) -> Json:
    try:
        with open(path, "rb") as f:
            data = f.read()
        mode = os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        return {"path": path, "exists": False}
    return {"path": path, "exists": True, "sha256": _sha256(data), "size": len(data), "mode": mode}


@command
def path_kind(path: str) -> Optional[str]:
    """ "dir", "file", "other" or None when nothing is there."""
    if os.path.isdir(path):
        return "dir"
    if os.path.isfile(path):
        return "file"
    return "other" if os.path.lexists(path) else None


@command
def list_dir(path: str) -> Optional[List[str]]:
    """Entry names of a directory, or None when it does not exist."""
    try:
        return sorted(os.listdir(path))
    except FileNotFoundError:
        return None


@command
def read_text(path: str) -> Optional[str]:
    """A text file as it is: line endings kept (CRLF stays CRLF), a BOM kept as U+FEFF."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            return f.read()
    except FileNotFoundError:
        return None


REDACTED = "[REDACTED]"


def redact(value: Any, secret: Optional[str]) -> Any:
    """``value`` with ``secret`` replaced in every string it holds (the one place a secret is
    scrubbed, here and on the controller). Done on values, before serialising: in JSON text a
    secret holding a quote or a backslash no longer looks like itself."""
    if not secret:
        return value
    if isinstance(value, str):
        return value.replace(secret, REDACTED)
    if isinstance(value, dict):
        return {redact(k, secret): redact(v, secret) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v, secret) for v in value]
    return value


def redact_secrets(text: str, secret_files: Optional[List[str]]) -> str:
    """``text`` with the content of each secret file replaced: a backend that logs its own secret
    must not have it printed, alerted or stored by us."""
    for path in secret_files or ():
        try:
            text = redact(text, read_secret(path))
        except OSError:
            continue
    return text


@command
def file_size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        return 0


@command
def tail(path: str, lines: int = 20, since: int = 0, redact: Optional[List[str]] = None) -> List[str]:
    """The last ``lines`` lines of a log, only from byte ``since`` on (one start's own lines), with
    the secrets in the ``redact`` files scrubbed."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(since, f.tell() - 65536))
            data = f.read()
    except FileNotFoundError:
        return []
    return [printable(line) for line in redact_secrets(data.decode("utf-8", "replace"), redact).splitlines()[-lines:]]


_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f]+")


def printable(text: str) -> str:
    """``text`` with control characters (NUL bytes of a torn log, terminal escapes) shown as "?":
    what is stored, printed or alerted is text a terminal shows as it is."""
    return _CONTROL.sub(lambda m: "?" * len(m.group()), text)


@command
def prune(directory: str, prefix: str, keep: int, spare: Optional[str] = None) -> Json:
    """Delete all but the ``keep`` newest files named ``prefix...`` (names sort by timestamp), and
    never ``spare``."""
    try:
        ours = sorted(n for n in os.listdir(directory) if n.startswith(prefix))
    except FileNotFoundError:
        return {"removed": []}
    doomed = [n for n in (ours[:-keep] if keep > 0 else ours) if n != spare]
    for name in doomed:
        os.unlink(os.path.join(directory, name))
    return {"removed": doomed}


def _backup(dest: str, current: bytes, mode: int, backup_dir: str) -> Tuple[str, bool]:
    """A backup of ``dest``'s ``current`` content: an existing backup with the same content is
    reused (renamed to now, so it is the newest), else a new one is written. (path, written)."""
    os.makedirs(backup_dir, mode=0o700, exist_ok=True)
    base = os.path.basename(dest)
    fresh = os.path.join(backup_dir, "%s.%s" % (base, _stamp()))
    digest = _sha256(current)
    for name in sorted(os.listdir(backup_dir), reverse=True):
        if name.startswith(base + ".") and _file_sha256(os.path.join(backup_dir, name)) == digest:
            os.replace(os.path.join(backup_dir, name), fresh)
            return fresh, False
    atomic_write(fresh, current, mode)
    return fresh, True


def _file_sha256(path: str) -> Optional[str]:
    try:
        with open(path, "rb") as f:
            return _sha256(f.read())
    except OSError:
        return None


def _newest_other_version(backup_dir: str, base: str, digest: str) -> Optional[str]:
    """The newest backup whose content is not ``digest``: the one a rollback of the next release
    would need, which pruning keeps whatever ``keep_backups`` says."""
    for name in sorted(os.listdir(backup_dir), reverse=True):
        if name.startswith(base + ".") and _file_sha256(os.path.join(backup_dir, name)) != digest:
            return name
    return None


@command
def install_file(
    dest: str,
    backup_dir: str,
    keep_backups: int = 5,
    validate_python: bool = False,
    mode: Optional[int] = None,
    content_b64: Optional[str] = None,
    staged: Optional[str] = None,
) -> Json:
    """Atomically replace ``dest`` with new content, keeping a timestamped backup of the old one.

    The content comes inline (``content_b64``) or already uploaded to ``staged``, a temporary file
    beside ``dest`` (SFTP). It is validated before anything is replaced. A backup exists only for a
    file really replaced: a replacement that fails takes back the backup it wrote, identical backups
    are never kept twice, and pruning never removes the newest backup of another version than the
    one now in place (repeated failed deploys once left only copies of the current file).
    """
    try:
        if staged:
            with open(staged, "rb") as f:
                data = f.read()
        else:
            data = base64.b64decode(content_b64 or "")
        before = file_state(dest)
        if before["exists"] and before["sha256"] == _sha256(data):
            return {"changed": False, "sha256": before["sha256"], "backup": None}
        if validate_python:
            try:
                compile(data, dest, "exec", dont_inherit=True)
            except SyntaxError as exc:
                raise AgentError("refusing %s: not valid Python (%s at line %s)" % (dest, exc.msg, exc.lineno))
        os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
        backup, written = None, False
        if before["exists"]:
            with open(dest, "rb") as src:
                backup, written = _backup(dest, src.read(), before["mode"], backup_dir)
        try:
            atomic_write(dest, data, mode if mode is not None else before.get("mode", 0o644))
        except OSError:
            if backup and written:
                os.unlink(backup)
            raise
        if backup:
            base = os.path.basename(dest)
            prune(backup_dir, base + ".", keep_backups, _newest_other_version(backup_dir, base, _sha256(data)))
    finally:
        if staged and os.path.exists(staged):
            os.unlink(staged)
    return {"changed": True, "sha256": _sha256(data), "backup": backup}


@command
def restore_file(backup: str, dest: str) -> Json:
    """Put a backup's content back at ``dest`` atomically (the rollback of install_file)."""
    with open(backup, "rb") as src:
        data = src.read()
    atomic_write(dest, data, os.stat(backup).st_mode & 0o7777)
    return {"sha256": _sha256(data)}


@command
def remove_file(path: str) -> Json:
    try:
        os.unlink(path)
        return {"removed": True}
    except FileNotFoundError:
        return {"removed": False}


@command
def write_file(path: str, content: str, mode: int = 0o600) -> Json:
    """Replace a small state file (watch state, incident report) atomically."""
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    atomic_write(path, content.encode("utf-8"), mode)
    return {"path": path}


@command
def append_log(path: str, line: str, max_bytes: int, keep: int) -> Json:
    """Append one line; first rotate (path -> path.1 -> ... -> path.KEEP) when it would exceed max_bytes."""
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    data = (line.rstrip("\n") + "\n").encode()
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        size = 0
    rotate = bool(size and size + len(data) > max_bytes)
    if rotate:
        for index in range(keep - 1, 0, -1):
            if os.path.exists("%s.%d" % (path, index)):
                os.replace("%s.%d" % (path, index), "%s.%d" % (path, index + 1))
        os.replace(path, path + ".1")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    return {"rotated": rotate}


@command
def secret_state(path: str) -> Json:
    """Whether the JWT secret file exists and is fit to use; never returns the secret."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return {"exists": False}
    if not stat.S_ISREG(st.st_mode):
        return {"exists": True, "problems": ["it is not a regular file"]}
    problems = []
    if st.st_mode & 0o077:
        problems.append("mode %o lets other users read it (chmod 600 %s)" % (st.st_mode & 0o777, path))
    if st.st_size < 32:
        problems.append("it is shorter than 32 bytes")
    return {"exists": True, "problems": problems}


@command
def create_secret(path: str) -> Json:
    """Create a random secret file readable by its owner only; fail if it already exists."""
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(48))
    return {"created": True}


@command
def read_secret(path: str) -> str:
    with open(path) as f:
        return f.read().strip()
