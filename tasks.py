"""`invoke TASK` in a checkout finds cascade-ops's tasks here: the same collection as the installed
`cascade-ops` command (the package cascade_ops/cli/), under the same names and options."""

from cascade_ops.cli import *  # noqa: F403
from cascade_ops.cli import ns  # noqa: F401
