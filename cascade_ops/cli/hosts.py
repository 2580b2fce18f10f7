"""The commands that act on hosts: recover, deploy, diagnose, verify, watch, and setting up (the
demo, bootstrapping a host, inviting a citizen)."""

import contextlib
import os
import sys
import time
from typing import TYPE_CHECKING, List, Optional

from invoke import Context, Exit, Task

from cascade_ops.cli.common import (
    HELP,
    _connect_options,
    _each_json,
    _each_text,
    _envelope,
    _fab_hosts,
    _finish,
    _guard,
    _help,
    _inventory,
    _settings,
    _verbosity,
    task,
)

if TYPE_CHECKING:
    from cascade_ops.model.results import RunResult, StepResult


def _run(
    c: Context,
    name: str,
    inventory: str,
    limit: Optional[str],
    var: Optional[List[str]],
    check: bool,
    diff: bool,
    json_: bool,
    playbook: Optional[str],
    forks: Optional[str],
    serial: Optional[str],
    max_fail_percentage: Optional[str],
    accept_new_host_keys: bool,
    color: bool = True,
    ask_become_pass: bool = False,
    verbose: int = 0,
    quiet: bool = False,
    list_hosts: bool = False,
    retry_file: Optional[str] = None,
    ask_pass: bool = False,
) -> None:
    """The body of recover and deploy, for a local Context or a Fabric Connection (``fab -H``)."""
    from cascade_ops import api
    from cascade_ops.reporting import text as output

    hosts = _guard(lambda: _fab_hosts(c, inventory, var) or api.select_hosts(inventory, limit, var or ()))
    if list_hosts:  # as ansible-playbook --list-hosts: what would be acted on, nothing more
        print("  hosts (%d):\n%s" % (len(hosts), "\n".join("    %s" % h.name for h in hosts)))
        return
    _verbosity(verbose)
    connect = _connect_options(ask_become_pass, accept_new_host_keys, ask_pass)
    width = max([12] + [len(h.name) for h in hosts])
    waits = output.Waits(lambda line: print(line, flush=True), width)
    person = sys.stdout.isatty() and not json_  # someone watching a terminal: say who waits for what

    colour = not json_ and color and output.use_colour(_settings().color, sys.stdout.isatty(), dict(os.environ))

    def show(host: str, result: "StepResult") -> None:
        waits.end(host)
        if not quiet or result.status == "failed":
            print(output.step_line(host, result, width, colour), flush=True)

    def go() -> "RunResult":
        return api.recover(
            inventory,
            limit,
            var or (),
            check=check,
            diff=diff,
            playbook=playbook or api.default_playbook(inventory, name),
            on_step=None if json_ else show,
            hosts=hosts,
            forks=forks or _settings().forks,
            serial=serial,
            max_fail_percentage=max_fail_percentage,
            connect=connect,
            on_begin=waits.begin if person else None,
        )

    with api.interruptible(), waits if person else contextlib.nullcontext():
        run = _guard(go)
    print(_envelope(run.to_json()["hosts"], run.exit_code) if json_ else output.recap(run, colour))
    if retry_file:
        retry = [n for n, h in run.hosts.items() if h.status in ("failed", "unreachable", "rolled_back")]
        with open(retry_file, "w", encoding="utf-8") as f:
            f.write("".join(n + "\n" for n in retry))
    if run.exit_code:
        raise Exit(code=run.exit_code)


def _playbook_task(name: str, doc: str) -> Task:
    """The task that runs the built-in playbook ``name``: recover and deploy differ in nothing else."""

    def body(
        c: Context,
        inventory: Optional[str] = None,
        limit: Optional[str] = None,
        var: Optional[List[str]] = None,
        check: bool = False,
        diff: bool = False,
        json_: bool = False,
        playbook: Optional[str] = None,
        forks: Optional[str] = None,
        serial: Optional[str] = None,
        max_fail_percentage: Optional[str] = None,
        accept_new_host_keys: bool = False,
        color: bool = True,
        ask_become_pass: bool = False,
        verbose: int = 0,
        quiet: bool = False,
        list_hosts: bool = False,
        retry_file: Optional[str] = None,
        ask_pass: bool = False,
    ) -> None:
        _run(
            c,
            name,
            _inventory(inventory),
            limit,
            var,
            check,
            diff,
            json_,
            playbook,
            forks,
            serial,
            max_fail_percentage,
            accept_new_host_keys,
            color,
            ask_become_pass,
            verbose,
            quiet,
            list_hosts,
            retry_file,
            ask_pass,
        )

    body.__name__ = body.__qualname__ = name
    body.__doc__ = doc
    made: Task = task(iterable=["var"], incrementable=["verbose"], help=_help(name))(body)
    return made


recover = _playbook_task(
    "recover",
    "\n".join(
        [
            "Recover the backend on the inventory's hosts; a healthy, up-to-date one is left alone.",
            "",
            "Finds who holds the port, stops only them, puts the auth module in place, starts the backend",
            "detached and verifies it. Idempotent. Runs `forks` hosts at once, in rolling batches with `serial`.",
        ]
    ),
)
deploy = _playbook_task(
    "deploy", "Deploy the auth module: put it in place, restart only if needed, verify (`fab -H host deploy`)."
)

READ_HELP = ("inventory", "limit", "var", "json", "ask-become-pass", "accept-new-host-keys", "ask-pass")


@task(iterable=["var"], help={k: HELP[k] for k in READ_HELP})
def diagnose(
    c: Context,
    inventory: Optional[str] = None,
    limit: Optional[str] = None,
    var: Optional[List[str]] = None,
    json_: bool = False,
    ask_become_pass: bool = False,
    accept_new_host_keys: bool = False,
    ask_pass: bool = False,
) -> None:
    """Probe the backend and list every process holding its port (a richer `ss -ltnp`). Changes nothing.

    Exit 0 when every host is healthy, 7 when one is not (slow, hung, or nothing listening), 3 when
    one cannot be reached."""
    inventory = _inventory(inventory)
    from cascade_ops import api
    from cascade_ops.errors import EXIT_UNHEALTHY
    from cascade_ops.reporting import text as output

    hosts = _fab_hosts(c, inventory, var)
    connect = _connect_options(ask_become_pass, accept_new_host_keys, ask_pass)
    found = _guard(lambda: api.diagnose(inventory, limit, var or (), hosts=hosts, connect=connect))
    unhealthy = EXIT_UNHEALTHY if any(not d.healthy for d in found.values()) else 0
    print(
        _each_json(found, lambda d: d.to_json(), code=unhealthy) if json_ else _each_text(found, output.diagnosis_table)
    )
    _finish(found, code=unhealthy)


@task(iterable=["var"], help={k: HELP[k] for k in READ_HELP})
def verify(
    c: Context,
    inventory: Optional[str] = None,
    limit: Optional[str] = None,
    var: Optional[List[str]] = None,
    json_: bool = False,
    ask_become_pass: bool = False,
    accept_new_host_keys: bool = False,
    ask_pass: bool = False,
) -> None:
    """Check the backend: health, a JWT round trip through /auth, Redis PING. Changes nothing."""
    inventory = _inventory(inventory)
    from cascade_ops import api
    from cascade_ops.reporting import text as output

    hosts = _fab_hosts(c, inventory, var)
    connect = _connect_options(ask_become_pass, accept_new_host_keys, ask_pass)
    results = _guard(lambda: api.verify(inventory, limit, var or (), hosts=hosts, connect=connect))
    failed = not all(check.ok for checks in results.values() for check in checks)
    if json_:
        print(_each_json(results, lambda checks: [check.__dict__ for check in checks], failed))
    else:
        print(_each_text(results, output.checks_text))
    _finish(results, failed)


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


@task(
    iterable=["var"],
    help=dict(
        _help("recover", "inventory", "limit", "var", "json"),
        reset="forget the failure streak and the restart budget first",
        follow="stay: probe every --every and recover at once, in this process",
        every="with --follow: how often to probe (default 0.5s)",
        log="with --follow: append its lines to this file, rotated like watch.log (default: stdout)",
    ),
)
def watch(
    c: Context,
    inventory: Optional[str] = None,
    limit: Optional[str] = None,
    var: Optional[List[str]] = None,
    reset: bool = False,
    playbook: Optional[str] = None,
    json_: bool = False,
    follow: bool = False,
    every: str = "0.5s",
    log: Optional[str] = None,
) -> None:
    """One watchdog tick (for cron): probe, and recover only when unhealthy.

    Recovers after fail_threshold unhealthy ticks in a row, within the restart budget
    (max_restarts per window), under the host's lock; alerts alert_webhook. With --follow it stays
    (the resident watchdog: SIGHUP reads the inventory again, SIGTERM stops it between two cycles)."""
    inventory = _inventory(inventory)
    from cascade_ops import api
    from cascade_ops.watchdog.tick import exit_code

    if follow:

        def say(line: str) -> None:
            stamped = "%s %s" % (time.strftime("%Y-%m-%dT%H:%M:%S"), line)
            if log is None:
                print(stamped, flush=True)
                return
            from cascade_ops.agent.files import append_log
            from cascade_ops.config.hostvars import SPECS

            append_log(log, stamped, SPECS["watch_log_max_bytes"].default, SPECS["watch_log_keep"].default)

        from cascade_ops.api import schedules as scheduled

        code = _guard(lambda: scheduled.follow(inventory, limit, var or (), every, playbook, say))
        if code:
            raise Exit(code=code)
        return
    with api.interruptible():
        ticks = _guard(lambda: api.watch(inventory, limit, var or (), reset=reset, playbook=playbook))
    if json_:
        print(_envelope({name: t.to_json() for name, t in ticks.items()}, exit_code(ticks)))
    else:
        for t in ticks.values():
            print("%-12s %-16s %s (%s) %.3fs" % (t.host, t.action, t.outcome, t.verdict, t.duration_s))
            if t.alert_error:
                print("%-12s alert            %s" % (t.host, t.alert_error))
            if t.note:
                print("%-12s note             %s" % (t.host, t.note))
            if t.ping_error:
                print("%-12s ping             %s" % (t.host, t.ping_error))
    code = exit_code(ticks)
    if code:
        raise Exit(code=code)


@task(help={"port": "port the demo backend listens on (default 8000)", "json": HELP["json"]})
def demo_recover(c: Context, port: int = 8000, json_: bool = False) -> None:
    """Recover the bundled demo backend on 127.0.0.1:PORT (`cascade-ops demo`); works from an installed wheel.

    Its inventory, a working copy of the demo and its state go to .cascade/ in the current directory;
    `cascade-ops demo.hang -i .cascade/demo-inventory.yaml` freezes it to watch a recovery."""
    from cascade_ops import api

    inventory = _guard(lambda: api.demo_inventory(os.path.join(".cascade", "demo-inventory.yaml"), port))
    _run(c, "recover", inventory, None, None, False, False, json_, None, None, None, None, False)


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
