"""`python -m cascade_ops`: the `cascade-ops` command."""
from .cli import main

main()
