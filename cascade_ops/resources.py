"""Files cascade-ops ships beside its code: the built-in playbooks, the auth module, the demo backend.

In a wheel they are package data under ``cascade_ops/_data``; in a checkout they are the
repository's own ``playbooks/`` and ``examples/`` (pyproject.toml maps one onto the other).
"""

import os

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))  # cascade_ops/ itself
_PACKAGED = os.path.join(PACKAGE_DIR, "_data")
CHECKOUT = not os.path.isdir(_PACKAGED)  # running from a clone (an editable install), not a wheel


def _path(packaged: str, checkout: str) -> str:
    return os.path.join(os.path.dirname(PACKAGE_DIR), checkout) if CHECKOUT else os.path.join(_PACKAGED, packaged)


def playbook(name: str) -> str:
    """The built-in playbook ``name`` (recover, deploy)."""
    return os.path.join(_path("playbooks", "playbooks"), name + ".yaml")


def auth_module() -> str:
    return os.path.join(_path("playbooks", "playbooks"), "files", "auth.py")


def demo_backend() -> str:
    return _path("demo", os.path.join("examples", "cascade_backend"))


def version() -> str:
    from importlib import metadata

    try:
        return metadata.version("cascade-ops")
    except metadata.PackageNotFoundError:
        return "0+unknown"
