"""cascade-ops's commands: ``cascade-ops --list`` shows them, ``cascade-ops --help TASK`` a task's
options. The same collection serves ``invoke`` and ``fab`` in a checkout (tasks.py, fabfile.py).

Exit codes: 0 all ok; 2 a step failed (or a release was rolled back); 3 a host was unreachable;
4 invalid inventory, playbook, variables or options (nothing touched); 5 another run holds the
host's lock; 6 the watchdog's restart budget is spent; 129 / 130 / 143 interrupted by SIGHUP /
SIGINT / SIGTERM (the run stopped at the next safe point).
"""

import atexit
import gc
import os
import sys
from typing import Any

from invoke import Collection

from cascade_ops.cli.hosts import deploy, diagnose, recover, verify, watch
from cascade_ops.cli.reports import report, show_inventory
from cascade_ops.cli.schedule import (
    cron_install,
    cron_remove,
    cron_status,
    service_install,
    service_remove,
    service_status,
    timer_install,
    timer_remove,
    timer_status,
)
from cascade_ops.cli.setup import bootstrap, demo_recover, hang, invite

# A command's process ends right after its answer. The interpreter's last garbage collections over
# the few hundred modules a run loads take 40 to 100 ms here and free nothing the kernel would not:
# freezing the heap at exit skips them. Nothing is lost: every file is written in a with-block, and
# the interpreter flushes the standard streams itself.
atexit.register(gc.freeze)

__all__ = [
    "bootstrap",
    "cron_install",
    "deploy",
    "diagnose",
    "main",
    "ns",
    "recover",
    "report",
    "timer_install",
    "verify",
    "watch",
]


def main() -> None:
    """The `cascade-ops` console script: Fabric's program (for -H) over this collection. A usage
    error (an unknown option, a missing value) exits 4 like any invalid input, not Invoke's 1."""
    from fabric import Config, Executor
    from fabric.main import Fab
    from invoke import Exit, ParseError

    from cascade_ops.errors import EXIT_INVALID
    from cascade_ops.resources import version

    class Program(Fab):
        def parse_core(self, argv: Any) -> None:
            try:
                super().parse_core(argv)
            except ParseError as exc:
                raise Exit("cascade-ops: usage: %s" % exc, code=EXIT_INVALID) from None

        def parse_tasks(self) -> None:
            try:
                super().parse_tasks()
            except ParseError as exc:
                raise Exit(
                    "cascade-ops: usage: %s (cascade-ops --help TASK shows its options)" % exc, code=EXIT_INVALID
                ) from None

    program = Program(
        name="cascade-ops",
        binary="cascade-ops",
        binary_names=["cascade-ops"],
        version=version(),
        namespace=ns,
        executor_class=Executor,
        config_class=Config,
    )
    try:
        program.run()
    except BrokenPipeError:  # `cascade-ops --list | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)


demo = Collection("demo")
demo.add_task(demo_recover, "recover", default=True)
demo.add_task(hang)
ns = Collection(recover, deploy, diagnose, verify, watch, report, bootstrap, demo)
ns.add_task(show_inventory, "inventory")


def _schedule(kind: str, install: Any, status: Any, remove: Any) -> None:
    """``kind.install`` / ``.status`` / ``.remove`` here, and the names ``fab -H host kind-install``
    (``-status``, ``-remove``) asks for on a host."""
    tasks = Collection(kind)
    for name, body in (("install", install), ("status", status), ("remove", remove)):
        tasks.add_task(body, name)
        ns.add_task(body, "%s-%s" % (kind, name))
    ns.add_collection(tasks)


_schedule("cron", cron_install, cron_status, cron_remove)
_schedule("timer", timer_install, timer_status, timer_remove)
_schedule("service", service_install, service_status, service_remove)
auth_tasks = Collection("auth")
auth_tasks.add_task(invite)
ns.add_collection(auth_tasks)
