"""Command-line arguments: option groups shared by every subcommand, their types, and the config they describe.

`config_from_args` turns the options into the one `ExpansionConfig` (a --config file or JSON first,
then each option given); usage errors are `UsageError`, printed by `fpxint.cli.main` as one line.
"""
from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

import torch

from ..config import (A_GRANULARITIES, FIRST_LAST, GRIDS, LEVELS, MODES, SCALE_RULES, TRUNCATIONS,
                     W_GRANULARITIES, ExpansionConfig, LayerOverride)

EXIT_USAGE = 2


class UsageError(ValueError):
    """Bad command-line input; main() prints it as one line and returns 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would print the usage block and exit; we want one line
        raise UsageError(f"{message} (see: python -m fpxint {self.prog.split(' ', 1)[-1]} --help)"
                         if " " in self.prog else message)


# ----- argument types -----------------------------------------------------------------------------
def int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def choice_list(allowed: tuple[str, ...]):
    def parse(text: str) -> list[str]:
        items = [v.strip() for v in text.split(",") if v.strip()]
        bad = [v for v in items if v not in allowed]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"{text!r}: choose from {', '.join(allowed)} (comma-separated)")
        return items
    return parse


def pairs(text: str) -> list[tuple[int, int]]:
    out = []
    for item in (v.strip() for v in text.split(",") if v.strip()):
        w, sep, a = item.partition(":")
        try:
            out.append((int(w), int(a)))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item!r}: pairs are W:A bits, e.g. 4:4,2:4,3:3") from None
    return out


def _override(text: str) -> tuple[str, LayerOverride]:
    """'layer.name:fp' or 'layer.name:w_bits=8,a_bits=8' -> (name, LayerOverride)."""
    name, sep, body = text.partition(":")
    if not name or not sep or not body:
        raise argparse.ArgumentTypeError(f"{text!r}: use NAME:fp or NAME:w_bits=8,a_terms=3")
    if body.strip() == "fp":
        return name, LayerOverride(fp=True)
    kw = {}
    for item in body.split(","):
        key, _, value = item.partition("=")
        key = key.strip()
        if key not in ("w_bits", "w_terms", "a_bits", "a_terms"):
            raise argparse.ArgumentTypeError(f"{text!r}: keys are w_bits, w_terms, a_bits, a_terms (or 'fp')")
        try:
            kw[key] = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: {key} needs an integer") from None
    try:
        return name, LayerOverride(**kw)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r}: {e}") from None


# ----- parser -------------------------------------------------------------------------------------
_CFG_FIELDS = ("w_bits", "w_terms", "a_bits", "a_terms", "level", "w_granularity", "a_granularity", "w_grid",
               "a_grid", "scale_rule", "truncation", "order", "first_last", "mode", "fold_bn")


def add_config_options(p: argparse.ArgumentParser, bits_and_terms: bool = True) -> None:
    g = p.add_argument_group("expansion config (defaults: fpxint.ExpansionConfig, or --config)")
    g.add_argument("--config", metavar="JSON|PATH", help="a whole ExpansionConfig as JSON text or a file "
                   "(an expansion's .json written by `expand` works too); the options below override it")
    if bits_and_terms:
        g.add_argument("--bits", type=int, help="bits per term, weights and activations (sets both)")
        g.add_argument("--terms", type=int, help="number of terms, weights and activations (sets both)")
        g.add_argument("--w-bits", type=int, help="bits per weight term, 1..8")
        g.add_argument("--w-terms", type=int, help="weight terms, 1..16")
        g.add_argument("--a-bits", type=int, help="bits per activation term, 1..8")
        g.add_argument("--a-terms", type=int, help="activation terms, 1..16")
    g.add_argument("--level", choices=LEVELS, help="tensor: weights only; layer; model: lockstep basis models")
    g.add_argument("--w-granularity", choices=W_GRANULARITIES)
    g.add_argument("--a-granularity", choices=A_GRANULARITIES, help="default per_sample")
    g.add_argument("--w-grid", choices=GRIDS)
    g.add_argument("--a-grid", choices=GRIDS)
    g.add_argument("--scale-rule", choices=SCALE_RULES)
    g.add_argument("--truncation", choices=TRUNCATIONS, help="which cross terms (i, j) to keep")
    g.add_argument("--order", type=int, help="K of the total-order truncation i + j <= K")
    g.add_argument("--first-last", choices=FIRST_LAST, help="policy for the first and last expandable layer")
    g.add_argument("--mode", choices=MODES, help="simulate (float) or integer (exact integer GEMMs)")
    g.add_argument("--no-fold-bn", dest="fold_bn", action="store_const", const=False,
                   help="do not fold BatchNorm into the preceding layer")
    g.add_argument("--override", action="append", type=_override, metavar="NAME:SPEC",
                   help="per-layer settings, e.g. conv1:fp or fc:w_bits=8,a_bits=8 (repeatable)")


def add_run_options(p: argparse.ArgumentParser, limit_default: int | None = None) -> None:
    g = p.add_argument_group("model, data and run")
    g.add_argument("--weights", metavar="PATH", help="your own checkpoint (state_dict) for the architecture")
    g.add_argument("--data", metavar="PATH", help="digits, cifar10, or an image folder / zip "
                   "(default: the model's own test set: digits bundled, CIFAR-10 from the shared folder)")
    g.add_argument("--limit", type=int, default=limit_default,
                   help="evaluate N images, stratified by class" + (f" (default {limit_default})" if limit_default
                                                                   else " (default: all)"))
    g.add_argument("--seed", type=int, default=0, help="seed of the stratified subset")
    g.add_argument("--device", default="auto", help="auto, cpu or cuda")
    g.add_argument("--batch-size", type=int, default=256)
    g.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    g.add_argument("--shared", metavar="DIR", help="the shared folder with checkpoints and CIFAR-10 "
                   "(default: $FPXINT_SHARED, else ../shared beside the checkout)")
    g.add_argument("--download", action="store_true", help="allow downloading missing weights")
    g.add_argument("--no-cache", action="store_true", help="do not cache decoded images")
    g.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    g.add_argument("--no-limits", action="store_true", help="run even when the estimated memory or time "
                   "exceeds the limits (FPXINT_MAX_RUN_MB, default half of RAM; FPXINT_MAX_RUN_SECONDS, "
                   "default none for the CLI)")


def add_force_option(p, files: str) -> None:
    """--force: the one way to replace files a command writes (without it the command refuses before any work)."""
    p.add_argument("--force", action="store_true", help=f"replace {files} if they exist (written atomically either way)")


# ----- the config the options describe ------------------------------------------------------
def _read_config(text: str) -> ExpansionConfig:
    if not text.lstrip().startswith("{"):
        path = Path(text).expanduser()
        if not path.is_file():
            raise UsageError(f"--config {text!r} is neither JSON text nor an existing file")
        text = path.read_text()
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"--config is not valid JSON: {e}") from None
    except RecursionError:
        raise UsageError("--config is nested too deeply to be a config") from None
    if isinstance(d, dict) and "format" in d and isinstance(d.get("config"), dict):
        d = d["config"]  # an expansion's JSON written by `expand`
    if not isinstance(d, dict):
        raise UsageError("--config must be a JSON object with ExpansionConfig fields")
    return ExpansionConfig.from_dict(d)


def config_from_args(args: argparse.Namespace) -> ExpansionConfig:
    """The ExpansionConfig the options describe: --config (or the defaults), then each given option."""
    cfg = _read_config(args.config) if args.config else ExpansionConfig()
    changes = {}
    if getattr(args, "bits", None) is not None and not isinstance(args.bits, list):
        changes.update(w_bits=args.bits, a_bits=args.bits)
    if getattr(args, "terms", None) is not None and not isinstance(args.terms, list):
        changes.update(w_terms=args.terms, a_terms=args.terms)
    for name in _CFG_FIELDS:
        if getattr(args, name, None) is not None and not isinstance(getattr(args, name), list):
            changes[name] = getattr(args, name)
    if args.override:
        changes["overrides"] = {**dict(cfg.overrides), **dict(args.override)}
    return cfg.replace(**changes)


def config_given(args: argparse.Namespace) -> bool:
    names = ("config", "bits", "terms", "override") + _CFG_FIELDS
    return any(getattr(args, n, None) is not None for n in names)


def check_run_args(args: argparse.Namespace) -> None:
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit {args.limit} is not allowed; give a number of images >= 1")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size {args.batch_size} is not allowed; give a number >= 1")
    if args.threads is not None:
        if args.threads < 1:
            raise UsageError(f"--threads {args.threads} is not allowed; give a number >= 1")
        torch.set_num_threads(args.threads)


# ----- admission and strict JSON --------------------------------------------------------------
def admit_run(args: argparse.Namespace, spec, cfg: ExpansionConfig, n_images: int, passes: int = 1) -> None:
    """Refuses (UsageError) a run whose estimated memory or time exceeds the limits, unless --no-limits.

    The CLI's user is the machine's operator and runs one thing: only memory is limited by default
    (half of RAM); FPXINT_MAX_RUN_MB / FPXINT_MAX_RUN_SECONDS set the limits.
    """
    from ..admission import AdmissionError, Limits, admit

    if getattr(args, "no_limits", False) or spec.input_size is None:
        return
    try:
        env = {k: v for k, v in os.environ.items() if k != "FPXINT_MAX_CONCURRENT"}  # the app's queue, not ours
        limits = Limits.from_env(env, max_run_seconds=None, max_concurrent=1)
        admit(spec, cfg, n_images, args.batch_size, passes=passes, limits=limits)
    except AdmissionError as e:
        raise UsageError(f"{e} Or pass --no-limits to run anyway.") from None
    except ValueError as e:  # a malformed FPXINT_* variable
        raise UsageError(str(e)) from None


def strict(obj):
    """obj with every NaN / Inf float replaced by None, for JSON that strict parsers (jq, browsers) accept."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(v) for v in obj]
    return obj


def dumps(obj, **kw) -> str:
    """json.dumps that never writes NaN or Infinity (they become null)."""
    return json.dumps(strict(obj), allow_nan=False, **kw)
