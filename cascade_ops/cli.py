"""cascade-ops's commands: ``cascade-ops --list`` shows them, ``cascade-ops --help TASK`` a task's
options. The same collection serves ``invoke`` and ``fab`` in a checkout (tasks.py, fabfile.py).

Exit codes: 0 all ok; 2 a step failed (or a release was rolled back); 3 a host was unreachable;
4 invalid inventory, playbook, variables or options (nothing touched); 5 another run holds the
host's lock; 6 the watchdog's restart budget is spent; 130 / 143 interrupted by SIGINT / SIGTERM
(the run stopped at the next safe point).
"""

import contextlib
import functools
import json
import os
import sys

from invoke import Collection, Exit, task

HELP = {
    "inventory": "inventory file (default: $CASCADE_INVENTORY, else cascade.yaml's, else inventory.yaml)",
    "limit": "hosts or groups to act on: names or globs, comma-separated",
    "var": "KEY=VALUE overriding an inventory variable (repeatable)",
    "check": "report what would change and change nothing",
    "diff": "show file changes as unified diffs",
    "json": "print one JSON document and nothing else on stdout",
    "forks": "hosts worked on at once (default: $CASCADE_FORKS, else cascade.yaml's, else 10)",
    "serial": "rolling batches: hosts per batch, a count or a percentage (overrides the playbook's)",
    "max-fail-percentage": "with serial: failed share of a batch that stops the rollout (default 0)",
    "accept-new-host-keys": "record unknown SSH host keys instead of refusing them (a changed key is always refused)",
    "ask-become-pass": "ask once for the password sudo wants for become (read from the terminal, never echoed)",
    "color": "colour statuses at a terminal (default; NO_COLOR or --no-color: none; cascade.yaml color: always)",
}


@functools.cache
def _settings():
    """cascade.yaml and CASCADE_* (see ``cascade_ops.settings``), read once per command."""
    from cascade_ops import settings
    return _guard(settings.load)


def _inventory(given):
    """The inventory a command acts on: --inventory, else $CASCADE_INVENTORY, else cascade.yaml's, else
    inventory.yaml."""
    return given or _settings().inventory


def _guard(action):
    """Run an action; turn cascade-ops errors into a message and the documented exit code."""
    from cascade_ops.errors import CascadeError
    try:
        return action()
    except CascadeError as exc:
        print("cascade-ops: %s" % exc, file=sys.stderr)
        raise Exit(code=exc.exit_code)


def _run(c, name, inventory, limit, var, check, diff, json_, playbook, forks, serial, max_fail_percentage,
         accept_new_host_keys, color=True, ask_become_pass=False):
    """The body of recover and deploy, for a local Context or a Fabric Connection (``fab -H``)."""
    from cascade_ops import api, output

    hosts = _guard(lambda: _fab_hosts(c, inventory, var) or api.select_hosts(inventory, limit, var or ()))
    password = _become_password(ask_become_pass)
    width = max([12] + [len(h.name) for h in hosts])
    waits = output.Waits(lambda line: print(line, flush=True), width)
    person = sys.stdout.isatty() and not json_  # someone watching a terminal: say who waits for what

    colour = not json_ and color and output.use_colour(_settings().color, sys.stdout.isatty(), dict(os.environ))

    def show(host, result):
        waits.end(host)
        print(output.step_line(host, result, width, colour), flush=True)

    def go():
        return api.recover(inventory, limit, var or (), check=check, diff=diff,
                           playbook=playbook or api.default_playbook(inventory, name),
                           on_step=None if json_ else show, hosts=hosts, forks=forks or _settings().forks,
                           serial=serial, max_fail_percentage=max_fail_percentage,
                           accept_new_host_keys=accept_new_host_keys or _settings().accept_new_host_keys,
                           become_password=password,
                           on_begin=waits.begin if person else None)

    with api.interruptible(), waits if person else contextlib.nullcontext():
        run = _guard(go)
    print(_envelope(run.to_json()["hosts"], run.exit_code) if json_ else output.recap(run, colour))
    if run.exit_code:
        raise Exit(code=run.exit_code)


def _become_password(ask):
    """With --ask-become-pass: the password, asked once for the whole run (hosts all get it)."""
    if not ask:
        return None
    import getpass
    return getpass.getpass("BECOME password: ")


def _help(playbook, *names):
    """The option help of a task; ``names`` picks options of HELP (default: all of them)."""
    chosen = {k: HELP[k] for k in names} if names else dict(HELP)
    return dict(chosen, playbook="playbook file (default: playbooks/%s.yaml beside the inventory, else the "
                "built-in one)" % playbook)


@task(iterable=["var"], help=_help("recover"))
def recover(c, inventory=None, limit=None, var=None, check=False, diff=False, json_=False,
            playbook=None, forks=None, serial=None, max_fail_percentage=None, accept_new_host_keys=False,
            color=True, ask_become_pass=False):
    """Recover the backend on the inventory's hosts; a healthy, up-to-date one is left alone.

    Finds who holds the port, stops only them, puts the auth module in place, starts the backend
    detached and verifies it. Idempotent. Runs `forks` hosts at once, in rolling batches with `serial`."""
    inventory = _inventory(inventory)
    _run(c, "recover", inventory, limit, var, check, diff, json_, playbook, forks, serial, max_fail_percentage,
         accept_new_host_keys, color, ask_become_pass)


@task(iterable=["var"], help=_help("deploy"))
def deploy(c, inventory=None, limit=None, var=None, check=False, diff=False, json_=False,
           playbook=None, forks=None, serial=None, max_fail_percentage=None, accept_new_host_keys=False,
           color=True, ask_become_pass=False):
    """Deploy the auth module: put it in place, restart only if needed, verify (`fab -H host deploy`)."""
    inventory = _inventory(inventory)
    _run(c, "deploy", inventory, limit, var, check, diff, json_, playbook, forks, serial, max_fail_percentage,
         accept_new_host_keys, color, ask_become_pass)


def _finish(per_host, failed=False):
    """Exit with the worst code of the hosts that could not answer (and 2 when ``failed``)."""
    from cascade_ops.errors import EXIT_FAILED, worst_exit_code
    code = worst_exit_code([per_host.exit_code] + ([EXIT_FAILED] if failed else []))
    if code:
        raise Exit(code=code)


def _each_text(per_host, text):
    """Each host's answer as ``text(host, answer)``, or its error, in host order."""
    from cascade_ops import output
    return "\n".join(text(host, answer) if error is None else output.host_error(host, error)
                     for host, answer, error in per_host.each())


def _envelope(hosts, exit_code):
    """The one JSON shape of every command: each host's document under "hosts", and the exit code."""
    return json.dumps({"hosts": hosts, "exit_code": exit_code}, indent=2)


def _each_json(per_host, doc, failed=False):
    from cascade_ops.errors import EXIT_FAILED, worst_exit_code
    hosts = {host: doc(answer) if error is None else {"error": str(error), "exit_code": error.exit_code}
             for host, answer, error in per_host.each()}
    return _envelope(hosts, worst_exit_code([per_host.exit_code] + ([EXIT_FAILED] if failed else [])))


@task(iterable=["var"], help={k: HELP[k] for k in ("inventory", "limit", "var", "json", "ask-become-pass")})
def diagnose(c, inventory=None, limit=None, var=None, json_=False, ask_become_pass=False):
    """Probe the backend and list every process holding its port (a richer `ss -ltnp`). Changes nothing."""
    inventory = _inventory(inventory)
    from cascade_ops import api, output
    hosts = _fab_hosts(c, inventory, var)
    password = _become_password(ask_become_pass)
    found = _guard(lambda: api.diagnose(inventory, limit, var or (), hosts=hosts, become_password=password))
    print(_each_json(found, lambda d: d.to_json()) if json_ else _each_text(found, output.diagnosis_table))
    _finish(found)


@task(iterable=["var"], help={k: HELP[k] for k in ("inventory", "limit", "var", "json", "ask-become-pass")})
def verify(c, inventory=None, limit=None, var=None, json_=False, ask_become_pass=False):
    """Check the backend: health, a JWT round trip through /auth, Redis PING. Changes nothing."""
    inventory = _inventory(inventory)
    from cascade_ops import api, output
    hosts = _fab_hosts(c, inventory, var)
    password = _become_password(ask_become_pass)
    results = _guard(lambda: api.verify(inventory, limit, var or (), hosts=hosts, become_password=password))
    failed = not all(check.ok for checks in results.values() for check in checks)
    if json_:
        print(_each_json(results, lambda checks: [check.__dict__ for check in checks], failed))
    else:
        print(_each_text(results, output.checks_text))
    _finish(results, failed)


@task(iterable=["var"], help={k: HELP[k] for k in ("inventory", "limit", "var")})
def hang(c, inventory=None, limit=None, var=None):
    """Freeze the running demo backend (SIGSTOP every holder of its port) to watch a recovery."""
    inventory = _inventory(inventory)
    from cascade_ops import api
    done = _guard(lambda: api.hang(inventory, limit, var or ()))
    print(_each_text(done, lambda host, lines: "\n".join("%s: %s" % (host, line) for line in lines)))
    _finish(done)


@task(iterable=["var"], help=dict(_help("recover", "inventory", "limit", "var", "json"),
                                   reset="forget the failure streak and the restart budget first"))
def watch(c, inventory=None, limit=None, var=None, reset=False, playbook=None, json_=False):
    """One watchdog tick (for cron): probe, and recover only when unhealthy.

    Recovers after fail_threshold unhealthy ticks in a row, within the restart budget
    (max_restarts per window), under the host's lock; alerts alert_webhook."""
    inventory = _inventory(inventory)
    from cascade_ops import api
    from cascade_ops.watch import exit_code
    with api.interruptible():
        ticks = _guard(lambda: api.watch(inventory, limit, var or (), reset=reset, playbook=playbook))
    if json_:
        print(_envelope({name: t.to_json() for name, t in ticks.items()}, exit_code(ticks)))
    else:
        for t in ticks.values():
            print("%-12s %-16s %s (%s) %.3fs" % (t.host, t.action, t.outcome, t.verdict, t.duration_s))
            if t.alert_error:
                print("%-12s alert            %s" % (t.host, t.alert_error))
            if t.ping_error:
                print("%-12s ping             %s" % (t.host, t.ping_error))
    code = exit_code(ticks)
    if code:
        raise Exit(code=code)


@task(iterable=["var"], help=dict({k: HELP[k] for k in ("inventory", "limit", "var")},
                                   json="print the whole report document", list="list the stored reports"))
def report(c, inventory=None, limit=None, var=None, json_=False, list_=False):
    """Show each host's last recovery: diagnosis, evidence, actions, verification, rollback."""
    inventory = _inventory(inventory)
    from cascade_ops import api, output
    if list_:
        stored = _guard(lambda: api.incidents(inventory, limit, var or ()))
        print(_each_text(stored, lambda host, paths: "\n".join(["%s: %d stored" % (host, len(paths))]
                                                                + ["  " + path for path in paths])))
        _finish(stored)
        return
    found = _guard(lambda: api.last_incident(inventory, limit, var or ()))
    if json_:
        print(_each_json(found, lambda item: item[1] if item else None))
    else:
        print(_each_text(found, lambda host, item: output.incident_text(*item) if item
                         else "%s: no incident report yet" % host))
    _finish(found)


@task(iterable=["var"], optional=["graph"], help={
    "inventory": HELP["inventory"], "var": HELP["var"], "host": "one host's variables, as JSON",
    "list": "every group and each host's variables, as JSON (the default)",
    "graph": "the group tree (of GROUP, default all)"})
def show_inventory(c, inventory=None, var=None, list_=False, graph=None, host=None):
    """Show the inventory as cascade-ops reads it, shaped like `ansible-inventory` (--list, --graph, --host).

    Reads YAML, INI, inventory scripts and their JSON, with group_vars/ and host_vars/ beside the file;
    Ansible's connection variables appear under cascade-ops's names. Changes nothing."""
    inventory = _inventory(inventory)
    from cascade_ops import api
    loaded = _guard(lambda: api.read_inventory(inventory, var or ()))
    if graph is not None:
        print(_guard(lambda: loaded.graph(graph if isinstance(graph, str) else "all")))
    elif host is not None:
        if host not in loaded.hosts:
            print("cascade-ops: %s: no host %r" % (inventory, host), file=sys.stderr)
            raise Exit(code=4)
        print(json.dumps(loaded.to_ansible_json()["_meta"]["hostvars"][host], indent=2, sort_keys=True))
    else:
        print(json.dumps(loaded.to_ansible_json(), indent=2))


CRON_HELP = dict({k: HELP[k] for k in ("inventory", "limit", "var")},
                 user="whose crontab (default: the current user's)",
                 every="how often: 1m-30m dividing an hour, or 1h-24h dividing a day",
                 log="where cron appends the ticks' output (default: .cascade/cron.log beside the inventory)",
                 project="a checkout of cascade-ops to run the watch from (default: the installed CLI, else this one)",
                 python="the interpreter of cascade-ops's venv (default: the installed CLI from `bootstrap`, else "
                        "the same as here)",
                 host_inventory="with fab -H: the inventory the host's watch reads (default: this one's path)")


def _fab_hosts(c, inventory, var):
    """With ``fab -H [USER@]HOST[:PORT]`` (Fabric calls the task once per host, with its Connection):
    that host, with the user, port and ``-i`` key the command line gave, and those only (a value
    equal to Fabric's default cannot be told apart from no value: the inventory's stands)."""
    from cascade_ops import api
    if not getattr(c, "host", None):
        return None
    # Fabric has already split USER@HOST:PORT and filled in its defaults: what differs from them was given.
    ssh_config = getattr(c, "ssh_config", None) or {}
    user = c.user if c.user != ssh_config.get("user", c.config.user) else None
    port = c.port if c.port != int(ssh_config.get("port", c.config.port)) else None
    keys = (c.connect_kwargs or {}).get("key_filename")
    key_file = (keys[0] if isinstance(keys, list) else keys) if keys else None
    return [_guard(lambda: api.command_line_host(inventory, var or (), c.host, user, port, key_file))]


def _cron_target(c, inventory, var):
    """Whose crontab: this machine's, or with ``fab -H`` that host's (over SSH)."""
    hosts = _fab_hosts(c, inventory, var)
    return hosts[0] if hosts else None


@task(iterable=["var"], help=CRON_HELP)
def cron_install(c, every="5m", inventory=None, limit=None, var=None, user=None, log=None,
                 project=None, python=None, host_inventory=None):
    """Install (or update) one crontab entry running `watch` with absolute paths. Idempotent.

    With `fab -H host cron-install` the entry goes into that host's crontab: a self-healing
    fleet with no central controller (cascade-ops must be installed there at --project)."""
    inventory = _inventory(inventory)
    from cascade_ops import api
    done = _guard(lambda: api.cron_install(every, inventory, limit, var or (), user, log, project, python,
                                           host_inventory, target=_cron_target(c, inventory, var)))
    print(_each_text(done, lambda host, result: "%s: %s crontab entry: %s" % (
        host, "installed" if result[0] else "unchanged", result[1])))
    _finish(done)


@task(iterable=["var"], help={k: CRON_HELP[k] for k in ("inventory", "limit", "var", "user")})
def cron_remove(c, inventory=None, limit=None, var=None, user=None):
    """Remove this inventory's watch entry from the crontab; other entries stay untouched.

    The inventory is checked (with --limit and --var) as cron.install checks it."""
    inventory = _inventory(inventory)
    from cascade_ops import api
    _guard(lambda: api.select_hosts(inventory, limit, var or ()))
    done = _guard(lambda: api.cron_remove(inventory, user, target=_cron_target(c, inventory, var)))
    print(_each_text(done, lambda host, removed: "removed the crontab entry" if removed
                     else "no crontab entry for %s" % inventory))
    _finish(done)


@task(iterable=["var"], help={k: CRON_HELP[k] for k in ("inventory", "limit", "var", "user")})
def cron_status(c, inventory=None, limit=None, var=None, user=None):
    """Show this inventory's crontab entry and each host's last watchdog tick."""
    inventory = _inventory(inventory)
    from cascade_ops import api
    entry = _guard(lambda: api.cron_entry(inventory, user))
    print(_each_text(entry, lambda host, line: "crontab: %s" % (line or "no entry (invoke cron.install)")))
    ticks = _guard(lambda: api.last_ticks(inventory, limit, var or ()))
    print(_each_text(ticks, lambda host, line: "%-12s last tick: %s" % (host, line or "none yet")))
    _finish(ticks)
    _finish(entry)


@task(help={"port": "port the demo backend listens on (default 8000)", "json": HELP["json"]})
def demo_recover(c, port=8000, json_=False):
    """Recover the bundled demo backend on 127.0.0.1:PORT (`cascade-ops demo`); works from an installed wheel.

    Its inventory, a working copy of the demo and its state go to .cascade/ in the current directory;
    `cascade-ops demo.hang -i .cascade/demo-inventory.yaml` freezes it to watch a recovery."""
    from cascade_ops import api
    inventory = _guard(lambda: api.demo_inventory(os.path.join(".cascade", "demo-inventory.yaml"), port))
    _run(c, "recover", inventory, None, (), False, False, json_, None, None, None, None, False)


@task(iterable=["var"], help=dict({k: HELP[k] for k in ("inventory", "limit", "var")},
                                   prefix="where the venv goes on the host (default: ~/.local/share/cascade-ops)"))
def bootstrap(c, inventory=None, limit=None, var=None, prefix=None):
    """Install this very version of cascade-ops on the hosts (`cascade-ops -H host bootstrap`).

    Into a venv on the host, from wheels this controller builds of itself and its dependencies, sent
    over SSH: the host needs python3 with venv, no package index. A host at this version is left alone."""
    inventory = _inventory(inventory)
    from cascade_ops import api
    hosts = _guard(lambda: _fab_hosts(c, inventory, var) or api.select_hosts(inventory, limit, var or ()))
    done = _guard(lambda: api.bootstrap(hosts, prefix))
    print(_each_text(done, lambda host, result: "%s: %s %s" % (
        host, "installed" if result["changed"] else "already at", result["cli"])))
    _finish(done)


def main() -> None:
    """The `cascade-ops` console script: Fabric's program (for -H) over this collection."""
    from fabric import Config, Executor
    from fabric.main import Fab

    from cascade_ops.resources import version
    program = Fab(name="cascade-ops", binary="cascade-ops", binary_names=["cascade-ops"], version=version(),
                  namespace=ns, executor_class=Executor, config_class=Config)
    try:
        program.run()
    except BrokenPipeError:  # `cascade-ops --list | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)


demo = Collection("demo")
demo.add_task(demo_recover, "recover", default=True)
demo.add_task(hang)
cron_tasks = Collection("cron")
cron_tasks.add_task(cron_install, "install")
cron_tasks.add_task(cron_remove, "remove")
cron_tasks.add_task(cron_status, "status")
ns = Collection(recover, deploy, diagnose, verify, watch, report, bootstrap, demo, cron_tasks)
ns.add_task(show_inventory, "inventory")
ns.add_task(cron_install, "cron-install")  # the name `fab -H host cron-install` asks for
