"""The library's entry points; the face (``cascade_ops.cli``: ``cascade-ops``, ``invoke``, ``fab``)
only parses options, calls these and prints.

Every function that reaches hosts goes through the one scheduler (``scheduler.run_each``):
``forks`` hosts at once, a deadline per host, and a host that cannot answer reported in
``PerHost.failures`` while the others' answers stand.
"""

import functools
import json
import os
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    ContextManager,
    Dict,
    Generic,
    Iterable,
    Iterator,
    List,
    Optional,
    Sequence,
    Tuple,
    TypeVar,
)

from cascade_ops import agent, resources
from cascade_ops.config.hostvars import Host, Machine, parse_cli_vars
from cascade_ops.config.inventory import load_inventory
from cascade_ops.config.values import parse_serial
from cascade_ops.engine import interrupts
from cascade_ops.engine.scheduler import DEFAULT_FORKS, FDS_PER_FORK, H, max_forks, run_each
from cascade_ops.errors import CascadeError, ConfigError, worst_exit_code
from cascade_ops.transport import ConnectOptions, Transport

if TYPE_CHECKING:  # the heavier layers load on first use: a healthy watch tick never needs them
    from cascade_ops.config.inventory import Endpoint, Inventory
    from cascade_ops.engine.events import StepCallback
    from cascade_ops.model.facts import Diagnosis
    from cascade_ops.model.results import RunResult
    from cascade_ops.steps.verify import Check
    from cascade_ops.watchdog.tick import Tick

T = TypeVar("T")
DEFAULT_INVENTORY = "inventory.yaml"
# Where a checkout or an installed copy of cascade-ops lives (the default --project of a cron entry).
PROJECT_DIR = os.path.dirname(resources.PACKAGE_DIR)


class PerHost(Dict[str, T], Generic[T]):
    """Each host's answer by name, in host order; a host that could not answer (unreachable, cut
    off, a failed command) is in ``failures`` with its error instead."""

    def __init__(self, order: List[str], answers: Dict[str, T], failures: Dict[str, CascadeError]):
        super().__init__((name, answers[name]) for name in order if name in answers)
        self.order = order
        self.failures = failures

    @property
    def exit_code(self) -> int:
        return worst_exit_code(error.exit_code for error in self.failures.values())

    def each(self) -> Iterator[Tuple[str, Optional[T], Optional[CascadeError]]]:
        """(name, answer, error) for every host, in order; error is None when the host answered (an
        answer may itself be None: no incident report yet, no watch tick yet)."""
        for name in self.order:
            yield name, self.get(name), self.failures.get(name)


def on_hosts(
    hosts: Sequence[H],
    work: Callable[[H, Transport], T],
    forks: int = DEFAULT_FORKS,
    connect: Optional[ConnectOptions] = None,
) -> PerHost[T]:
    """``work(host, transport)`` on every host through the scheduler."""
    outcomes = run_each(hosts, work, forks, connect)
    return PerHost(
        [h.name for h in hosts],
        {name: o.value for name, o in outcomes.items() if o.error is None},  # type: ignore[misc]
        {name: o.error for name, o in outcomes.items() if o.error is not None},
    )


def interruptible() -> ContextManager[None]:
    """Ctrl-C and SIGTERM stop a run at its next safe point (see ``interrupts``), for the block."""
    return interrupts.handled()


def select_hosts(
    inventory: str = DEFAULT_INVENTORY, limit: Optional[str] = None, vars: Iterable[str] = ()
) -> List[Host]:
    """Load and validate the inventory (``vars`` are KEY=VALUE overrides) and pick hosts."""
    return load_inventory(inventory, parse_cli_vars(vars)).select(limit)


def read_inventory(inventory: str = DEFAULT_INVENTORY, vars: Iterable[str] = ()) -> "Inventory":
    """The inventory as cascade-ops reads it (``invoke inventory``), fully validated."""
    return load_inventory(inventory, parse_cli_vars(vars))


def command_line_host(
    inventory: str,
    vars: Iterable[str],
    name: str,
    user: Optional[str] = None,
    port: Optional[int] = None,
    key_file: Optional[str] = None,
    alias: Optional[str] = None,
    endpoint: "Optional[Endpoint]" = None,
) -> Host:
    """The host ``fab -H [USER@]ALIAS[:PORT]`` (and ``-i KEY``) means, ``name`` being the address
    ssh_config resolves ALIAS to; what the command line gives wins over the inventory (see
    ``Inventory.command_line``)."""
    return load_inventory(inventory, parse_cli_vars(vars)).command_line(
        name, alias=alias, endpoint=endpoint, user=user, ssh_port=port, key_file=key_file
    )


def controller() -> Machine:
    """The machine cascade-ops runs on (its crontab, its systemd units)."""
    return Machine("localhost", {"host": "localhost", "connection": "local", "host_timeout": 60.0})


def default_playbook(inventory: str, name: str) -> str:
    """``playbooks/NAME.yaml`` beside the inventory, else the built-in one."""

    beside = os.path.join(os.path.dirname(os.path.abspath(inventory)), "playbooks", name + ".yaml")
    return beside if os.path.exists(beside) else resources.playbook(name)


def demo_inventory(path: str, port: int) -> str:
    """Write (or refresh) the bundled demo's inventory at ``path``; its working copy goes beside it."""
    from cascade_ops.config.values import parse_port

    try:
        port = parse_port(port)
    except ValueError as exc:
        raise ConfigError("--port: %s" % exc) from None
    text = (
        "# Written by `cascade-ops demo`: the bundled demo backend, recovered on this machine.\n"
        "all:\n  hosts:\n    localhost:\n      connection: local\n      port: %d\n"
        "      app_dir: demo-backend\n      app_seed: %s\n      auth_module: %s\n"
        % (port, json.dumps(resources.demo_backend()), json.dumps(resources.auth_module()))
    )
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path


def recover(
    inventory: str = DEFAULT_INVENTORY,
    limit: Optional[str] = None,
    vars: Iterable[str] = (),
    check: bool = False,
    diff: bool = False,
    playbook: Optional[str] = None,
    on_step: "Optional[StepCallback]" = None,
    hosts: "Optional[List[Host]]" = None,
    connect: Optional[ConnectOptions] = None,
    **options: Any,
) -> "RunResult":
    """Run a playbook (default: recover) on the selected hosts. Everything is validated first.

    ``connect`` says how every host is reached; ``options`` are RunOptions: forks, serial,
    max_fail_percentage, on_begin.
    """
    import time

    from cascade_ops.engine.playbook import load_playbook, run_playbook
    from cascade_ops.engine.runner import RunOptions
    from cascade_ops.reporting import history
    from cascade_ops.reporting.listeners import run_listeners

    book = load_playbook(playbook or default_playbook(inventory, "recover"))
    hosts = hosts if hosts is not None else select_hosts(inventory, limit, vars)
    run_id = history.new_run_id()
    run_options = RunOptions(
        check=check,
        diff=diff,
        listeners=run_listeners(run_id, book.name),
        connect=connect or ConnectOptions(),
        **_run_options(options),
    )
    started_at = time.time()
    result = run_playbook(hosts, book, run_options, on_step=on_step)
    if not check:
        history.record_unreached(inventory, result.hosts, run_id, book.name, started_at)
    return result


def _run_options(options: Dict[str, Any]) -> Dict[str, Any]:
    """Check command-line run options (strings from the CLI, or numbers from Python)."""
    checked = {k: v for k, v in options.items() if v is not None}
    try:
        if "forks" in checked:
            checked["forks"] = int(checked["forks"])
            if checked["forks"] < 1:
                raise ValueError
    except ValueError:
        raise ConfigError("expected a whole number of at least 1, got %r" % options["forks"], field="--forks") from None
    if checked.get("forks", 0) > max_forks():
        raise ConfigError(
            "at most %d here: each host in flight holds a thread and up to %d file descriptors "
            "(ulimit -n sets the limit)" % (max_forks(), FDS_PER_FORK),
            field="--forks %d" % checked["forks"],
        )
    if "max_fail_percentage" in checked:
        try:
            checked["max_fail_percentage"] = float(checked["max_fail_percentage"])
            if not 0 <= checked["max_fail_percentage"] <= 100:
                raise ValueError
        except ValueError:
            raise ConfigError(
                "expected a number from 0 to 100, got %r" % options["max_fail_percentage"],
                field="--max-fail-percentage",
            ) from None
    if "serial" in checked:
        try:
            checked["serial"] = parse_serial(checked["serial"])
        except ValueError as exc:
            raise ConfigError(str(exc), field="--serial") from None
    return checked


def diagnose(
    inventory: str = DEFAULT_INVENTORY,
    limit: Optional[str] = None,
    vars: Iterable[str] = (),
    hosts: Optional[List[Host]] = None,
    connect: Optional[ConnectOptions] = None,
) -> "PerHost[Diagnosis]":
    """Probe each selected host and list who holds its port. Changes nothing."""
    from cascade_ops.model.facts import read_diagnosis

    return on_hosts(
        _hosts(inventory, limit, vars, hosts), lambda host, t: read_diagnosis(t, host.vars), connect=connect
    )


def verify(
    inventory: str = DEFAULT_INVENTORY,
    limit: Optional[str] = None,
    vars: Iterable[str] = (),
    hosts: Optional[List[Host]] = None,
    connect: Optional[ConnectOptions] = None,
) -> "PerHost[List[Check]]":
    """Run every verification check on each selected host. Changes nothing."""
    from cascade_ops.steps.verify import run_checks

    return on_hosts(_hosts(inventory, limit, vars, hosts), lambda host, t: run_checks(t, host.vars), connect=connect)


def invite(
    username: str,
    ttl: Any,
    inventory: str = DEFAULT_INVENTORY,
    limit: Optional[str] = None,
    vars: Iterable[str] = (),
    hosts: Optional[List[Host]] = None,
) -> PerHost[str]:
    """A one-time code per selected host that activates ``username``'s account there within ``ttl``
    (a duration, 1m to 7d; see ``activation``): signed with that host's JWT secret, which never
    leaves this process."""
    import time

    from cascade_ops.activation import activation_code
    from cascade_ops.config.values import parse_duration

    if not username or len(username) > 256:
        raise ConfigError("expected a citizen's name of 1 to 256 characters", field="NAME")
    try:
        seconds = parse_duration(ttl)
    except ValueError as exc:
        raise ConfigError(str(exc), field="--ttl") from None
    if not 60 <= seconds <= 7 * 86400:
        raise ConfigError("expected 1m to 7d, got %r" % (ttl,), field="--ttl")
    expiry = int(time.time() + seconds)

    def mint(host: Host, transport: Transport) -> str:
        secret = transport.call(agent.files.read_secret, path=host.vars.jwt_secret_file)
        return activation_code(secret, username, expiry)

    return on_hosts(_hosts(inventory, limit, vars, hosts), mint)


def _hosts(inventory: str, limit: Optional[str], vars: Iterable[str], hosts: Optional[List[Host]]) -> List[Host]:
    return hosts if hosts is not None else select_hosts(inventory, limit, vars)


def hang(
    inventory: str = DEFAULT_INVENTORY, limit: Optional[str] = None, vars: Iterable[str] = ()
) -> PerHost[List[str]]:
    """SIGSTOP every holder of each selected host's port (the demo's hang); what was stopped, in words."""
    from cascade_ops.model.facts import read_diagnosis

    def stop(host: Host, transport: Transport) -> List[str]:
        diagnosis = read_diagnosis(transport, host.vars, probe=False)
        if not diagnosis.holders:
            return ["nothing holds port %d" % diagnosis.port]
        done = []
        for holder in diagnosis.holders:
            transport.call(agent.signals.suspend, pid=holder.pid, start_ticks=holder.process.start_ticks)
            done.append("stopped pid %d (%s)" % (holder.pid, holder.process.command))
        return done

    return on_hosts(select_hosts(inventory, limit, vars), stop)


def watch(
    inventory: str = DEFAULT_INVENTORY,
    limit: Optional[str] = None,
    vars: Iterable[str] = (),
    reset: bool = False,
    playbook: Optional[str] = None,
) -> "Dict[str, Tick]":
    """One watchdog tick on each selected host: recover only when unhealthy, within the budget.

    The playbook is loaded and checked only when a host needs recovering, before it is touched.
    A host that cannot be reached or read gets a tick that says so; the others still tick.
    """
    from cascade_ops.watchdog.tick import failed_tick, tick_host

    hosts = select_hosts(inventory, limit, vars)

    @functools.cache
    def load() -> Any:
        from cascade_ops.engine.playbook import load_playbook

        return load_playbook(playbook or default_playbook(inventory, "recover"))

    from cascade_ops.watchdog.alerts import Pings

    pings = {host.name: Pings(host.vars.ping_url) for host in hosts}  # /start, before any host is reached
    ticks = on_hosts(hosts, lambda host, t: tick_host(host, t, load, reset))
    done: Dict[str, Tick] = {}
    for name, tick, error in ticks.each():
        done[name] = tick if tick is not None and error is None else failed_tick(name, error)  # type: ignore[arg-type]

    def finish(name: str) -> None:
        done[name].ping_error = pings[name].finish(done[name].exit_code)

    _in_parallel([name for name, p in pings.items() if p.url], finish)
    return done


def _in_parallel(names: List[str], work: Callable[[str], None]) -> None:
    """``work(name)`` for each name at once, on threads (each bounded in time by itself)."""
    import threading

    threads = [threading.Thread(target=work, args=(name,), daemon=True) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def bootstrap(hosts: List[Host], prefix: Optional[str] = None) -> PerHost[Dict[str, Any]]:
    """Install this version of cascade-ops into a venv on each host (``prefix``, default
    ``~/.local/share/cascade-ops``), from wheels built here and sent over (see ``wheels``). A host
    whose CLI there is this version already is left alone, and nothing is sent to it."""
    from cascade_ops.api import wheels
    from cascade_ops.transport.bundle import REMOTE_DIR

    version = resources.version()
    house = wheels.wheelhouse()  # before any host is touched: a dependency that cannot ship fails here

    def install(host: Host, transport: Transport) -> Dict[str, Any]:
        found = transport.call(agent.install.installed_cli, prefix=prefix)
        if found["version"] == version:
            return dict(found, changed=False)
        dest = house
        if not transport.shares_filesystem:
            # under the SSH user's home, where the agent starts; never the controller's own copy
            dest = "%s/incoming-%s" % (REMOTE_DIR, os.path.basename(house))
            transport.put_tree(house, dest)
        answer: Dict[str, Any] = transport.call(agent.install.install_cli, wheels=dest, version=version, prefix=prefix)
        return answer

    return on_hosts(hosts, install)
