"""The library's entry points; ``tasks.py`` only wraps these."""

import functools
import os
from typing import TYPE_CHECKING, Dict, Iterable, List, Optional

from .errors import ConfigError
from .hostvars import parse_cli_vars
from .hostvars import Host
from .inventory import load_inventory
from .transport import connect

if TYPE_CHECKING:  # the heavier layers load on first use: a healthy watch tick never needs them
    from .facts import Diagnosis
    from .runner import RunResult, StepCallback
    from .steps.verify import Check
    from .watch import Tick

DEFAULT_INVENTORY = "inventory.yaml"


def select_hosts(inventory: str = DEFAULT_INVENTORY, limit: Optional[str] = None,
                 vars: Iterable[str] = ()) -> List[Host]:
    """Load and validate the inventory (``vars`` are KEY=VALUE overrides) and pick hosts."""
    return load_inventory(inventory, parse_cli_vars(vars)).select(limit)


def command_line_host(inventory: str, vars: Iterable[str], name: str, user: Optional[str] = None,
                      port: Optional[int] = None) -> Host:
    """The host ``fab -H NAME`` means: the inventory's host of that name, else an SSH host built
    from the inventory's ``all`` variables."""
    loaded = load_inventory(inventory, parse_cli_vars(vars))
    if name in loaded.hosts:
        return loaded.hosts[name]
    return loaded.adhoc(name, connection="ssh", address=name, user=user, ssh_port=port)


def default_playbook(inventory: str, name: str) -> str:
    """``playbooks/NAME.yaml`` beside the inventory, else in the current directory."""
    beside = os.path.join(os.path.dirname(os.path.abspath(inventory)), "playbooks", name + ".yaml")
    return beside if os.path.exists(beside) else os.path.abspath(os.path.join("playbooks", name + ".yaml"))


def recover(inventory: str = DEFAULT_INVENTORY, limit: Optional[str] = None, vars: Iterable[str] = (),
            check: bool = False, diff: bool = False, playbook: Optional[str] = None,
            on_step: "Optional[StepCallback]" = None, hosts: "Optional[List[Host]]" = None,
            **options) -> "RunResult":
    """Run a playbook (default: recover) on the selected hosts. Everything is validated first.

    ``options`` are RunOptions: forks, serial, max_fail_percentage, accept_new_host_keys.
    """
    from .playbook import load_playbook, run_playbook
    from .runner import RunOptions
    book = load_playbook(playbook or default_playbook(inventory, "recover"))
    hosts = hosts if hosts is not None else select_hosts(inventory, limit, vars)
    run_options = RunOptions(check=check, diff=diff, **_run_options(options))
    return run_playbook(hosts, book, run_options, on_step=on_step)


def _run_options(options: dict) -> dict:
    """Check command-line run options (strings from the CLI, or numbers from Python)."""
    checked = {k: v for k, v in options.items() if v is not None}
    try:
        if "forks" in checked:
            checked["forks"] = int(checked["forks"])
            if checked["forks"] < 1:
                raise ValueError
    except ValueError:
        raise ConfigError("expected a whole number of at least 1, got %r" % options["forks"], field="--forks")
    if "max_fail_percentage" in checked:
        try:
            checked["max_fail_percentage"] = float(checked["max_fail_percentage"])
            if not 0 <= checked["max_fail_percentage"] <= 100:
                raise ValueError
        except ValueError:
            raise ConfigError("expected a number from 0 to 100, got %r" % options["max_fail_percentage"],
                              field="--max-fail-percentage")
    if "serial" in checked:
        from .runner import batch_size
        batch_size(checked["serial"], 1, field="--serial")  # raises ConfigError when malformed
        checked["serial"] = str(checked["serial"])
    return checked


def _on_host(host: Host, action):
    transport = connect(host.vars)
    try:
        return action(host, transport)
    finally:
        transport.close()


def _per_host(hosts: List[Host], action):
    return {host.name: _on_host(host, action) for host in hosts}


def diagnose(inventory: str = DEFAULT_INVENTORY, limit: Optional[str] = None,
             vars: Iterable[str] = ()) -> "Dict[str, Diagnosis]":
    """Probe each selected host and list who holds its port. Changes nothing."""
    from .facts import read_diagnosis
    return _per_host(select_hosts(inventory, limit, vars),
                     lambda host, transport: read_diagnosis(transport, host.vars))


def verify(inventory: str = DEFAULT_INVENTORY, limit: Optional[str] = None,
           vars: Iterable[str] = ()) -> "Dict[str, List[Check]]":
    """Run every verification check on each selected host. Changes nothing."""
    from .steps.verify import run_checks
    return _per_host(select_hosts(inventory, limit, vars), lambda host, transport: run_checks(transport, host.vars))


def watch(inventory: str = DEFAULT_INVENTORY, limit: Optional[str] = None, vars: Iterable[str] = (),
          reset: bool = False, playbook: Optional[str] = None) -> "Dict[str, Tick]":
    """One watchdog tick on each selected host: recover only when unhealthy, within the budget.

    The playbook is loaded and checked only when a host needs recovering, before it is touched.
    """
    from .watch import watch as watch_hosts
    hosts = select_hosts(inventory, limit, vars)

    @functools.lru_cache(maxsize=None)
    def load():
        from .playbook import load_playbook
        return load_playbook(playbook or default_playbook(inventory, "recover"))
    return watch_hosts(hosts, load, reset)


def last_tick(host: Host) -> Optional[str]:
    """The last line of a host's watch log."""
    from .watch import LOG_FILE
    lines = _on_host(host, lambda h, transport: transport.agent(
        "tail", path=os.path.join(h.vars["state_dir"], LOG_FILE), lines=1))
    return lines[-1] if lines else None


def incidents(inventory: str = DEFAULT_INVENTORY, limit: Optional[str] = None,
              vars: Iterable[str] = ()) -> "Dict[str, List[str]]":
    """Paths of each host's stored incident reports, oldest first."""
    from . import report
    return _per_host(select_hosts(inventory, limit, vars), lambda host, transport: report.stored(transport, host.vars))


def last_incident(inventory: str = DEFAULT_INVENTORY, limit: Optional[str] = None,
                  vars: Iterable[str] = ()) -> "Dict[str, Optional[tuple]]":
    """Each host's newest incident report as (path, document), or None."""
    from . import report

    def newest(host, transport):
        paths = report.stored(transport, host.vars)
        return (paths[-1], report.load(transport, paths[-1])) if paths else None
    return _per_host(select_hosts(inventory, limit, vars), newest)
