"""What every command shares: option help, settings, error handling, output envelopes, the host
``fab -H`` names."""

import functools
import json
import sys
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Tuple, TypeVar, cast

import invoke
from invoke import Context, Exit

if TYPE_CHECKING:
    from cascade_ops.api import PerHost
    from cascade_ops.config.hostvars import Host
    from cascade_ops.config.settings import Settings
    from cascade_ops.transport import ConnectOptions

T = TypeVar("T")

# Ansible's flags, and only those get a short form: a user of ansible-playbook types -i, -l, -e,
# -C, -D, -f, -K and -v without thinking, and must never get another meaning for them. Every
# other option is long only (Invoke would otherwise hand out first letters: -a, -k, -e...).
FLAGS = {
    "inventory": ["i"],
    "limit": ["l"],
    "var": ["extra-vars", "e"],
    "check": ["C"],
    "diff": ["D"],
    "forks": ["f"],
    "ask_become_pass": ["K"],
    "ask_pass": ["k"],
    "verbose": ["v"],
}


class AnsibleTask(invoke.Task):
    """A task whose short flags are Ansible's (``FLAGS``): ``--var`` is also ``--extra-vars``/``-e``,
    ``-v`` counts (``-vvv``), ``-K`` asks the become password."""

    def arg_opts(self, name: str, default: Any, taken_names: Any) -> Dict[str, Any]:
        opts: Dict[str, Any] = super().arg_opts(name, default, taken_names)
        long = opts["names"][0]
        opts["names"] = [long] + FLAGS.get(name, [])
        return opts

    def get_arguments(self, ignore_unknown_help: Optional[bool] = None) -> List[invoke.Argument]:
        # Invoke pops each option's help as it builds the arguments: a task named twice (cron.install
        # and cron-install) would lose its help the second time.
        kept = dict(self.help)
        try:
            arguments: List[invoke.Argument] = super().get_arguments(ignore_unknown_help)
            return arguments
        finally:
            self.help = kept


task = functools.partial(invoke.task, klass=AnsibleTask)

HELP = {
    "inventory": "inventory file (default: $CASCADE_INVENTORY, else cascade.yaml's, else inventory.yaml)",
    "limit": "hosts or groups to act on, as Ansible's --limit: names or globs, ',' or ':' between them, "
    "!PATTERN leaves out, &PATTERN intersects, @FILE reads them from a file (a retry file)",
    "var": "KEY=VALUE or @FILE overriding inventory variables (repeatable; also --extra-vars, -e)",
    "verbose": "more detail: -v each step's full message, -vvv also the SSH library's log on stderr",
    "check": "report what would change and change nothing",
    "diff": "show file changes as unified diffs",
    "json": "print one JSON document and nothing else on stdout",
    "forks": "hosts worked on at once (default: $CASCADE_FORKS, else cascade.yaml's, else 10)",
    "serial": "rolling batches: hosts per batch, a count or a percentage (overrides the playbook's)",
    "max-fail-percentage": "with serial: failed share of a batch that stops the rollout (default 0)",
    "accept-new-host-keys": "record unknown SSH host keys instead of refusing them (a changed key is always refused)",
    "ask-become-pass": "ask once for the password sudo wants for become (read from the terminal, never echoed)",
    "ask-pass": "ask once for the SSH login password, tried after the keys (read from the terminal, never echoed)",
    "color": "colour statuses at a terminal (default; NO_COLOR or --no-color: none; cascade.yaml color: always)",
    "quiet": "for a large fleet: one line per host, and only failures in full",
    "list-hosts": "list the hosts the run would act on, and do nothing",
    "retry-file": "write the names of the hosts that failed or were unreachable to this file (rerun them "
    "with --limit @FILE)",
}


@functools.cache
def _settings() -> "Settings":
    """cascade.yaml and CASCADE_* (see ``cascade_ops.settings``), read once per command."""
    from cascade_ops.config import settings

    return _guard(settings.load)


def _inventory(given: Optional[str]) -> str:
    """The inventory a command acts on: --inventory, else $CASCADE_INVENTORY, else cascade.yaml's, else
    inventory.yaml."""
    return given or _settings().inventory


def _guard(action: Callable[[], T]) -> T:
    """Run an action; turn cascade-ops errors into a message and the documented exit code."""
    from cascade_ops.errors import CascadeError

    try:
        return action()
    except CascadeError as exc:
        print("cascade-ops: %s" % exc, file=sys.stderr)
        raise Exit(code=exc.exit_code)


def _verbosity(verbose: int) -> None:
    """-vvv: the SSH library's own log on stderr, for a connection that will not come up."""
    import os

    if verbose >= 3 and not os.environ.get("CASCADE_DEBUG_LOG"):
        os.environ["CASCADE_DEBUG_LOG"] = "/dev/stderr"


def _become_password(ask: bool, prompt: str = "BECOME password: ") -> Optional[str]:
    """With --ask-become-pass (or --ask-pass): the password, asked once for the whole run (hosts all get it)."""
    if not ask:
        return None
    import getpass

    return getpass.getpass(prompt)


def _connect_options(ask_become_pass: bool, accept_new_host_keys: bool, ask_pass: bool) -> "ConnectOptions":
    """How this command reaches its hosts: the passwords asked once for the whole run (every host
    gets them), and the host key policy of the flag, else of cascade.yaml."""
    from cascade_ops.transport import ConnectOptions

    login = _become_password(ask_pass, "SSH password: ")  # asked first, as ansible-playbook -k -K asks
    return ConnectOptions(
        accept_new_host_keys=accept_new_host_keys or _settings().accept_new_host_keys,
        become_password=_become_password(ask_become_pass),
        ssh_password=login,
    )


def _help(playbook: str, *names: str) -> Dict[str, str]:
    """The option help of a task; ``names`` picks options of HELP (default: all of them)."""
    chosen = {k: HELP[k] for k in names} if names else dict(HELP)
    return dict(
        chosen,
        playbook="playbook file (default: playbooks/%s.yaml beside the inventory, else the built-in one)" % playbook,
    )


def _finish(per_host: "PerHost[Any]", failed: bool = False, code: int = 0) -> None:
    """Exit with the worst code of the hosts that could not answer (and 2 when ``failed``, or ``code``)."""
    from cascade_ops.errors import EXIT_FAILED, worst_exit_code

    code = worst_exit_code([per_host.exit_code, code] + ([EXIT_FAILED] if failed else []))
    if code:
        raise Exit(code=code)


def _each_text(per_host: "PerHost[T]", text: Callable[[str, T], str]) -> str:
    """Each host's answer as ``text(host, answer)``, or its error, in host order."""
    from cascade_ops.reporting import text as output

    return "\n".join(
        text(host, cast(T, answer)) if error is None else output.host_error(host, error)
        for host, answer, error in per_host.each()
    )  # a host without an error has its answer


def _envelope(hosts: Dict[str, Any], exit_code: int) -> str:
    """The one JSON shape of every command: each host's document under "hosts", and the exit code."""
    return json.dumps({"hosts": hosts, "exit_code": exit_code}, indent=2)


def _each_json(per_host: "PerHost[T]", doc: Callable[[T], Any], failed: bool = False, code: int = 0) -> str:
    from cascade_ops.errors import EXIT_FAILED, worst_exit_code

    hosts = {
        host: doc(cast(T, answer)) if error is None else {"error": str(error), "exit_code": error.exit_code}
        for host, answer, error in per_host.each()
    }
    return _envelope(hosts, worst_exit_code([per_host.exit_code, code] + ([EXIT_FAILED] if failed else [])))


def _fab_hosts(c: Context, inventory: str, var: Optional[Iterable[str]]) -> Optional[List["Host"]]:
    """With ``fab -H [USER@]HOST[:PORT]`` (Fabric calls the task once per host, with its Connection):
    that host, with the user, port and ``-i`` key the command line gave, and those only (a value
    equal to Fabric's default cannot be told apart from no value: the inventory's stands).

    HOST is matched as ssh would reach it: Fabric has applied ~/.ssh/config (an alias's HostName,
    Port, User), and each inventory host's address and port are resolved the same way, so an alias
    acts on exactly the host it names, or the run refuses (exit 4)."""
    from cascade_ops import api

    if not getattr(c, "host", None):
        return None
    # Fabric has already split USER@HOST:PORT and filled in its defaults: what differs from them was given.
    ssh_config = getattr(c, "ssh_config", None) or {}
    user = c.user if c.user != ssh_config.get("user", c.config.user) else None
    port = c.port if c.port != c.config.port or "port" in ssh_config else None
    keys = (c.connect_kwargs or {}).get("key_filename")
    key_file = (keys[0] if isinstance(keys, list) else keys) if keys else None

    def endpoint(address: str, port: Optional[int]) -> Tuple[str, int]:
        found = c.config.base_ssh_config.lookup(address)
        return found.get("hostname", address), int(port or found.get("port", c.config.port))

    return [
        _guard(
            lambda: api.command_line_host(
                inventory, var or (), c.host, user, port, key_file, alias=c.original_host, endpoint=endpoint
            )
        )
    ]


def _cron_target(c: Context, inventory: str, var: Optional[Iterable[str]]) -> Optional["Host"]:
    """Whose crontab: this machine's, or with ``fab -H`` that host's (over SSH)."""
    hosts = _fab_hosts(c, inventory, var)
    return hosts[0] if hosts else None
