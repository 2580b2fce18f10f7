"""The commands that act on hosts: recover, deploy, diagnose, verify, watch (cli.setup holds the
demo, bootstrapping and invitations)."""

import contextlib
import dataclasses
import os
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

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


@dataclass(frozen=True)
class PlaybookArgs:
    """What recover and deploy are asked (their options, as the API takes them)."""

    inventory: str
    limit: Optional[str] = None
    var: Tuple[str, ...] = ()
    check: bool = False
    diff: bool = False
    json_: bool = False
    playbook: Optional[str] = None
    forks: Optional[str] = None
    serial: Optional[str] = None
    max_fail_percentage: Optional[str] = None
    accept_new_host_keys: bool = False
    color: bool = True
    ask_become_pass: bool = False
    verbose: int = 0
    quiet: bool = False
    list_hosts: bool = False
    retry_file: Optional[str] = None
    ask_pass: bool = False


def _run(c: Context, name: str, a: PlaybookArgs) -> None:
    """The body of recover and deploy, for a local Context or a Fabric Connection (``fab -H``)."""
    from cascade_ops import api
    from cascade_ops.reporting import text as output

    hosts = _guard(lambda: _fab_hosts(c, a.inventory, a.var) or api.select_hosts(a.inventory, a.limit, a.var))
    if a.list_hosts:  # as ansible-playbook --list-hosts: what would be acted on, nothing more
        print("  hosts (%d):\n%s" % (len(hosts), "\n".join("    %s" % h.name for h in hosts)))
        return
    _verbosity(a.verbose)
    connect = _connect_options(a.ask_become_pass, a.accept_new_host_keys, a.ask_pass)
    width = max([12] + [len(h.name) for h in hosts])
    waits = output.Waits(lambda line: print(line, flush=True), width)
    person = sys.stdout.isatty() and not a.json_  # someone watching a terminal: say who waits for what

    colour = not a.json_ and a.color and output.use_colour(_settings().color, sys.stdout.isatty(), dict(os.environ))

    def show(host: str, result: "StepResult") -> None:
        waits.end(host)
        if not a.quiet or result.status == "failed":
            print(output.step_line(host, result, width, colour), flush=True)

    def go() -> "RunResult":
        return api.recover(
            a.inventory,
            a.limit,
            a.var,
            check=a.check,
            diff=a.diff,
            playbook=a.playbook or api.default_playbook(a.inventory, name),
            on_step=None if a.json_ else show,
            hosts=hosts,
            forks=a.forks or _settings().forks,
            serial=a.serial,
            max_fail_percentage=a.max_fail_percentage,
            connect=connect,
            on_begin=waits.begin if person else None,
        )

    with api.interruptible(), waits if person else contextlib.nullcontext():
        run = _guard(go)
    print(_envelope(run.to_json()["hosts"], run.exit_code) if a.json_ else output.recap(run, colour))
    if a.retry_file:
        retry = [n for n, h in run.hosts.items() if h.status in ("failed", "unreachable", "rolled_back")]
        with open(a.retry_file, "w", encoding="utf-8") as f:
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
            PlaybookArgs(
                _inventory(inventory),
                limit,
                tuple(var or ()),
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
            ),
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


def _read_task(name: str, doc: str, answer: Callable[[str, Dict[str, Any]], None]) -> Task:
    """A command that reads the hosts and changes nothing (diagnose, verify): the same options, and
    ``answer(inventory, options)`` prints what it found and exits with its code."""

    def body(
        c: Context,
        inventory: Optional[str] = None,
        limit: Optional[str] = None,
        var: Optional[List[str]] = None,
        json_: bool = False,
        ask_become_pass: bool = False,
        accept_new_host_keys: bool = False,
        ask_pass: bool = False,
    ) -> None:
        path = _inventory(inventory)
        options = dict(
            limit=limit,
            vars=var or (),
            hosts=_fab_hosts(c, path, var),
            connect=_connect_options(ask_become_pass, accept_new_host_keys, ask_pass),
            json=json_,
        )
        answer(path, options)

    body.__name__ = body.__qualname__ = name
    body.__doc__ = doc
    made: Task = task(iterable=["var"], help={k: HELP[k] for k in READ_HELP})(body)
    return made


def _diagnosis(inventory: str, options: Dict[str, Any]) -> None:
    from cascade_ops import api
    from cascade_ops.errors import EXIT_UNHEALTHY
    from cascade_ops.reporting import text as output

    json_ = options.pop("json")
    found = _guard(lambda: api.diagnose(inventory, **options))
    unhealthy = EXIT_UNHEALTHY if any(not d.healthy for d in found.values()) else 0
    print(
        _each_json(found, lambda d: d.to_json(), code=unhealthy) if json_ else _each_text(found, output.diagnosis_table)
    )
    _finish(found, code=unhealthy)


def _checks(inventory: str, options: Dict[str, Any]) -> None:
    from cascade_ops import api
    from cascade_ops.reporting import text as output

    json_ = options.pop("json")
    results = _guard(lambda: api.verify(inventory, **options))
    failed = not all(check.ok for checks in results.values() for check in checks)
    if json_:
        print(_each_json(results, lambda checks: [dataclasses.asdict(check) for check in checks], failed))
    else:
        print(_each_text(results, output.checks_text))
    _finish(results, failed)


diagnose = _read_task(
    "diagnose",
    "\n".join(
        [
            "Probe the backend and list every process holding its port (a richer `ss -ltnp`). Changes nothing.",
            "",
            "Exit 0 when every host is healthy, 7 when one is not (slow, hung, or nothing listening), 3 when",
            "one cannot be reached.",
        ]
    ),
    _diagnosis,
)
verify = _read_task(
    "verify", "Check the backend: health, a JWT round trip through /auth, Redis PING. Changes nothing.", _checks
)


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
