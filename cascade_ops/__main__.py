"""`python -m cascade_ops`: the `cascade-ops` command."""

from cascade_ops.cli import main

main()
