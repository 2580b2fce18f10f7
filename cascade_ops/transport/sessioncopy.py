"""Files to a host over the SSH session itself, for hosts without an SFTP subsystem (minimal images,
some appliances): one session runs the host's own Python on a small unpacker, the files travel as
JSON on its stdin. The agent needs that Python anyway, so this needs nothing more on the host."""

import base64
import json
import shlex
from typing import Any, Dict

UNPACK = r"""
import base64, json, os, shutil, sys
doc = json.loads(sys.stdin.read())
dest = doc["dest"]
tmp = "%s.tmp.%d" % (dest, os.getpid()) if doc["atomic"] else dest
for rel, data in doc["files"].items():
    path = os.path.join(tmp, rel)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    with open(path, "wb") as f:
        f.write(base64.b64decode(data))
if doc["atomic"]:
    try:
        os.rename(tmp, dest)
    except OSError:
        shutil.rmtree(tmp)
print("ok")
"""


def copy_over_session(
    client: Any, find_python: str, files: Dict[str, bytes], dest: str, atomic: bool, timeout: float
) -> str:
    """Write ``files`` (relative path -> bytes) under ``dest`` (relative: the login directory, as with
    SFTP); ``atomic``: into a fresh directory renamed into place. '' on success, else what the host said."""
    doc = json.dumps(
        {"dest": dest, "atomic": atomic, "files": {rel: base64.b64encode(data).decode() for rel, data in files.items()}}
    )
    channel = client.get_transport().open_session(timeout=timeout)
    try:
        channel.settimeout(timeout)
        channel.exec_command('%sexec "$P" -I -c %s' % (find_python, shlex.quote(UNPACK)))
        channel.sendall(doc.encode())
        channel.shutdown_write()
        out = channel.makefile("rb").read().decode("utf-8", "replace")
        err = channel.makefile_stderr("rb").read().decode("utf-8", "replace")
        status = channel.recv_exit_status()
    finally:
        channel.close()
    if status == 0 and out.strip() == "ok":
        return ""
    return (err.strip().splitlines() or ["exit %d" % status])[-1]
