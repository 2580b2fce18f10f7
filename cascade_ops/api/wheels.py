"""Wheels of this very cascade-ops and of everything it needs, made from what runs here, so that a
host can be bootstrapped over SSH with no package index: the controller *is* the index.

cascade-ops's own wheel is built from its package directory (and, in a checkout, the playbooks and
demo it ships); each dependency is repacked from its installed files (its RECORD), keeping the tags
pip installed it under, so a host that cannot run it (another Python, another architecture) gets
pip's own refusal rather than a broken install.
"""

import base64
import hashlib
import io
import os
import re
import zipfile
from importlib import metadata
from typing import Dict, Iterator, List, Tuple

from cascade_ops import resources
from cascade_ops.errors import CascadeError

CACHE = os.path.join(os.path.expanduser("~"), ".cache", "cascade-ops")
_SKIP = re.compile(r"(^|/)__pycache__/|\.pyc$")


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _tag(tags: List[str]) -> str:
    """The compressed tag set of a wheel's file name (``py2.py3-none-any``)."""
    parts = [t.split("-") for t in tags]
    return "-".join(".".join(dict.fromkeys(p[i] for p in parts)) for i in range(3))


def _wheel(files: Dict[str, bytes], dist_info: str, tags: List[str], extra: Dict[str, str]) -> bytes:
    """A wheel (a zip with a RECORD of every file's hash) holding ``files`` and ``dist_info`` metadata."""
    entries = dict(files)
    wheel = "Wheel-Version: 1.0\nGenerator: cascade-ops\nRoot-Is-Purelib: %s\n" % (
        "true" if all(t.endswith("none-any") for t in tags) else "false"
    )
    for name, text in dict(extra, WHEEL=wheel + "".join("Tag: %s\n" % t for t in tags)).items():
        entries["%s/%s" % (dist_info, name)] = text.encode()
    record = []
    for path, data in sorted(entries.items()):
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append("%s,sha256=%s,%d" % (path, digest, len(data)))
    record.append("%s/RECORD,," % dist_info)
    entries["%s/RECORD" % dist_info] = ("\n".join(record) + "\n").encode()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, data in sorted(entries.items()):
            zf.writestr(zipfile.ZipInfo(path, date_time=(1980, 1, 1, 0, 0, 0)), data)
    return out.getvalue()


def _tree(src: str, dest: str) -> Iterator[Tuple[str, bytes]]:
    for root, dirs, files in os.walk(src):
        dirs[:] = sorted(d for d in dirs if d not in ("__pycache__", ".cascade-ops"))
        for name in sorted(files):
            rel = os.path.relpath(os.path.join(root, name), src).replace(os.sep, "/")
            if not _SKIP.search(rel):
                with open(os.path.join(root, name), "rb") as f:
                    yield "%s/%s" % (dest, rel), f.read()


def own_wheel() -> Tuple[str, bytes]:
    """(file name, bytes) of cascade-ops's wheel, from the code that runs here."""
    dist = metadata.distribution("cascade-ops")
    version = dist.version
    package = resources.PACKAGE_DIR
    files = dict(_tree(package, "cascade_ops"))
    if resources.CHECKOUT:  # what pyproject.toml maps into the package when it builds a wheel
        files.update(_tree(os.path.dirname(resources.playbook("recover")), "cascade_ops/_data/playbooks"))
        files.update(_tree(resources.demo_backend(), "cascade_ops/_data/demo"))
    dist_info = "cascade_ops-%s.dist-info" % version
    extra = {
        "METADATA": dist.read_text("METADATA") or dist.read_text("PKG-INFO") or "",
        "entry_points.txt": "[console_scripts]\ncascade-ops = cascade_ops.cli:main\n",
    }
    return "cascade_ops-%s-py3-none-any.whl" % version, _wheel(files, dist_info, ["py3-none-any"], extra)


def repacked(dist: metadata.Distribution) -> Tuple[str, bytes]:
    """(file name, bytes) of an installed distribution, repacked from the files its RECORD lists."""
    name, version = dist.metadata["Name"], dist.version
    tags = [
        line.split(":", 1)[1].strip()
        for line in (dist.read_text("WHEEL") or "").splitlines()
        if line.startswith("Tag:")
    ]
    if not dist.files or not tags:
        raise CascadeError(
            "cannot ship %s %s: it was not installed from a wheel (no RECORD or WHEEL)" % (name, version)
        )
    files = {}
    dist_info = ""
    for entry in dist.files:
        path = str(entry).replace(os.sep, "/")
        if path.startswith("..") or _SKIP.search(path):
            continue  # scripts outside site-packages are made again by pip on the host
        top, _, base = path.partition("/")
        if top.endswith(".dist-info"):
            dist_info = top
            if base in ("RECORD", "WHEEL", "INSTALLER", "REQUESTED", "direct_url.json"):
                continue  # written anew for the repacked wheel, or by pip when it installs it
        with open(entry.locate(), "rb") as f:
            files[path] = f.read()
    return "%s-%s-%s.whl" % (_normal(name), version, _tag(tags)), _wheel(files, dist_info, tags, {})


def requirements(name: str, extras: Tuple[str, ...] = ()) -> List[metadata.Distribution]:
    """The installed distributions ``name`` (with ``extras``) needs, transitively; absent ones are
    left out (an environment marker excluded them), as are the extras of dependencies."""
    found: Dict[str, metadata.Distribution] = {}
    todo = [name]
    while todo:
        current = todo.pop()
        for requirement in metadata.requires(current) or []:
            extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)", requirement)
            if extra and (current != name or extra.group(1) not in extras):
                continue
            match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
            if match is None or _normal(match.group(1)) in found:
                continue
            try:
                dist = metadata.distribution(match.group(1))
            except metadata.PackageNotFoundError:
                continue
            found[_normal(match.group(1))] = dist
            todo.append(match.group(1))
    return list(found.values())


def wheelhouse(extras: Tuple[str, ...] = ()) -> str:
    """A directory holding the wheels a host needs to run this cascade-ops (with ``extras``), built
    once per content."""
    wheels = dict([own_wheel()] + [repacked(d) for d in requirements("cascade-ops", extras)])
    digest = hashlib.sha256(b"".join(hashlib.sha256(w).digest() for _, w in sorted(wheels.items()))).hexdigest()
    house = os.path.join(CACHE, "wheels-%s" % digest[:16])
    if not os.path.isdir(house):
        tmp = "%s.tmp.%d" % (house, os.getpid())
        os.makedirs(tmp)
        for name, data in wheels.items():
            with open(os.path.join(tmp, name), "wb") as f:
                f.write(data)
        os.rename(tmp, house)
    return house
