"""The commands that set things up: the demo, bootstrapping a host, inviting a citizen, freezing
the demo backend to watch a recovery."""

import os
from typing import List, Optional

from invoke import Context

from cascade_ops.cli.common import HELP, _each_json, _each_text, _fab_hosts, _finish, _guard, _inventory, task
from cascade_ops.cli.hosts import PlaybookArgs, _run


@task(
    iterable=["var"],
    positional=["name"],
    help=dict(
        {k: HELP[k] for k in ("inventory", "limit", "var", "json")},
        name="the citizen whose account the code activates",
        ttl="how long the code is valid (default 15m; at most 7d)",
    ),
)
def invite(
    c: Context,
    name: str,
    ttl: str = "15m",
    inventory: Optional[str] = None,
    limit: Optional[str] = None,
    var: Optional[List[str]] = None,
    json_: bool = False,
) -> None:
    """Print a one-time code that activates NAME's account in the auth module, per host.

    The citizen sends it with POST /auth/register {"username", "password", "code"}; without a valid
    code nobody can claim an account. The code is signed with the host's JWT secret, works once,
    and expires after --ttl."""
    inventory = _inventory(inventory)
    from cascade_ops import api

    codes = _guard(lambda: api.invite(name, ttl, inventory, limit, var or (), hosts=_fab_hosts(c, inventory, var)))
    if json_:
        print(_each_json(codes, lambda code: {"username": name, "code": code}))
    else:
        print(_each_text(codes, lambda host, code: "%s: %s  (for %s, valid %s)" % (host, code, name, ttl)))
    _finish(codes)


@task(iterable=["var"], help={k: HELP[k] for k in ("inventory", "limit", "var")})
def hang(
    c: Context, inventory: Optional[str] = None, limit: Optional[str] = None, var: Optional[List[str]] = None
) -> None:
    """Freeze the running demo backend (SIGSTOP every holder of its port) to watch a recovery."""
    inventory = _inventory(inventory)
    from cascade_ops import api

    done = _guard(lambda: api.hang(inventory, limit, var or ()))
    print(_each_text(done, lambda host, lines: "\n".join("%s: %s" % (host, line) for line in lines)))
    _finish(done)


@task(help={"port": "port the demo backend listens on (default 8000)", "json": HELP["json"]})
def demo_recover(c: Context, port: int = 8000, json_: bool = False) -> None:
    """Recover the bundled demo backend on 127.0.0.1:PORT (`cascade-ops demo`); works from an installed wheel.

    Its inventory, a working copy of the demo and its state go to .cascade/ in the current directory;
    `cascade-ops demo.hang -i .cascade/demo-inventory.yaml` freezes it to watch a recovery."""
    from cascade_ops import api

    inventory = _guard(lambda: api.demo_inventory(os.path.join(".cascade", "demo-inventory.yaml"), port))
    _run(c, "recover", PlaybookArgs(inventory, json_=json_))


@task(
    iterable=["var"],
    help=dict(
        {k: HELP[k] for k in ("inventory", "limit", "var")},
        prefix="where the venv goes on the host (default: ~/.local/share/cascade-ops)",
    ),
)
def bootstrap(
    c: Context,
    inventory: Optional[str] = None,
    limit: Optional[str] = None,
    var: Optional[List[str]] = None,
    prefix: Optional[str] = None,
) -> None:
    """Install this very version of cascade-ops on the hosts (`cascade-ops -H host bootstrap`).

    Into a venv on the host, from wheels this controller builds of itself and its dependencies, sent
    over SSH: the host needs python3 with venv, no package index. A host at this version is left alone."""
    inventory = _inventory(inventory)
    from cascade_ops import api

    hosts = _guard(lambda: _fab_hosts(c, inventory, var) or api.select_hosts(inventory, limit, var or ()))
    done = _guard(lambda: api.bootstrap(hosts, prefix))
    print(
        _each_text(
            done,
            lambda host, result: (
                "%s: %s %s" % (host, "installed" if result["changed"] else "already at", result["cli"])
            ),
        )
    )
    _finish(done)
