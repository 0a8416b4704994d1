"""The parser of `fpxint` / `python -m fpxint` and its dispatch: every error becomes one line.

The edge of the project: the only engine-side code that reads the environment (through
`fpxint.zoo.paths.find_shared` / `cache_dir`), prints, and turns user errors into one line on
stderr ("error: ...", exit code 2) instead of a traceback. Each command family lives in its own
module (`models`, `evaluate`: eval and sweep, `expand`, `allocate`), which adds its subparser and
the function that runs it; see `fpxint.cli` for the commands.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

from .. import __version__
from . import allocate, evaluate, expand, models
from .args import EXIT_USAGE, Parser


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="fpxint", description="FP=xINT series expansion: evaluate, sweep and export "
                    "networks written as sums of low-bit integer terms.")
    parser.add_argument("--version", action="version", version=f"fpxint {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    models.add_parser(sub)
    evaluate.add_parsers(sub)  # eval, sweep
    expand.add_parser(sub)
    allocate.add_parser(sub)
    return parser


def _one_line(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        text = f"{e.strerror}: {e.filename}" if e.filename else e.strerror
    else:
        text = str(e).strip() or type(e).__name__
    return " ".join(text.split())[:500]


def main(argv: list[str] | None = None) -> int:
    """Runs the command line; returns the exit code (0 ok, 1 a failed --check, 2 any error, 130 interrupted).

    Every error is one line on stderr and exit code 2: bad input (UsageError, ModelLoadError,
    DataError, ...), out of memory, input nested too deeply, and anything unexpected (FPXINT_DEBUG=1
    shows the traceback of those).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        args.argv = argv
        return args.run(args)
    except SystemExit as e:  # --help / --version
        return e.code if isinstance(e.code, int) else 0
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except (torch.OutOfMemoryError, MemoryError):
        print("error: out of memory; try a smaller --batch-size or --limit, fewer terms, or simulate mode",
              file=sys.stderr)
        return EXIT_USAGE
    except RecursionError:
        print("error: the input is nested too deeply to be read", file=sys.stderr)
        return EXIT_USAGE
    except (ValueError, OSError) as e:  # UsageError, ModelLoadError and DataError are ValueErrors
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as e:  # noqa: BLE001 - a traceback is for developers: FPXINT_DEBUG=1
        if os.environ.get("FPXINT_DEBUG") == "1":
            raise
        print(f"error: {type(e).__name__}: {_one_line(e)} (FPXINT_DEBUG=1 shows the traceback)", file=sys.stderr)
        return EXIT_USAGE
