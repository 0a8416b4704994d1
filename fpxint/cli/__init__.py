"""The command line, `fpxint ...` / `python -m fpxint ...`: `entry` (parser and `main`), `args` (the options
shared by the commands and `config_from_args`), `allocate` and `lm` (the allocate command and the language
models' eval / sweep)."""
from .entry import main

__all__ = ["main"]
