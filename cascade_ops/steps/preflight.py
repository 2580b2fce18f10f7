"""Checked before anything else on every run: what the run will need on the host (directories,
the interpreter or start command, the secret file, the bind address). A run that cannot finish
does not begin: no file is replaced and no process signalled on a host that fails it."""

import shlex
from typing import List

from cascade_ops import agent
from cascade_ops.config.hostvars import HostVars
from cascade_ops.steps.base import Args, Context, HostRun, Outcome, Step, StepFailed, Unchanged


def start_program(v: HostVars) -> str:
    """The executable the start step will run."""
    if v.start_command:
        argv = shlex.split(v.start_command)
        return argv[0] if argv else ""
    return v.python


class Preflight(Step[List[str], None]):
    name = "preflight"

    def gather(self, run: HostRun, args: Args) -> List[str]:
        v = run.vars
        return list(
            run.transport.call(
                agent.preflight.preflight,
                app_dir=v.app_dir,
                seeded=bool(v.app_seed),
                program=start_program(v),
                secret_file=v.jwt_secret_file,
                state_dir=v.state_dir,
                bind_host=v.bind_host,
            )
        )

    def plan(self, problems: List[str], args: Args, ctx: Context) -> Outcome[None]:
        if problems:
            raise StepFailed("not starting: %s; nothing was changed" % "; ".join(problems))
        return Unchanged("host ready")
