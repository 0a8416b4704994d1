"""`python -m fpxint COMMAND ...`: the command line of `fpxint.cli` (its docstring lists the commands)."""
from .cli import main

raise SystemExit(main())
