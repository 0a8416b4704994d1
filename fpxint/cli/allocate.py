"""Command line for per-layer term allocation: `python -m fpxint allocate ...` (see fpxint.allocation).

    python -m fpxint allocate resnet20 --w-bits 3 --a-bits 3 --terms 4 --budget-gemms 0.75x --out alloc.json
    python -m fpxint allocate resnet20 --w-bits 3 --a-bits 3 --budget-sqnr 25 --calibration synthetic
    python -m fpxint allocate digits_cnn --bits 2 --terms 4 --budget-bops 0.75x --eval all --uniform-terms 3,4,5
    python -m fpxint allocate smollm2_135m --bits 4 --terms 3 --budget-gemms 0.75x --calib 1 --calib-seq-len 128 \
        --windows 2 --seq-len 256 --eval all --uniform-terms 2,3

Calibration and evaluation images never overlap: `--calib N` stratified images choose the
allocation; `--eval N|all` reports accuracy on images outside them (digits: calibration from the
bundled train split, evaluation on the test split). Language models: `--calib N` windows of
`--calib-seq-len` tokens choose it, taken from the text just after the `--windows` evaluation
windows (disjoint); the noise is measured on the next-token logits. `--out` writes an ordinary ExpansionConfig JSON
that `python -m fpxint eval --config alloc.json` reads back.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd
import torch

from .args import (UsageError, add_config_options, add_force_option, add_run_options, check_run_args, config_from_args,
                   dumps)
from .common import (allocation_paths, claim_outputs, data_from_args, model_from_args, write_allocation,
                     write_outputs)

_BUDGETS = (("gemms", "int_gemms", "max integer GEMMs: N, or a multiple of the uniform config's, e.g. 0.75x"),
            ("bops", "bops", "max bit-operations: N or e.g. 0.75x"),
            ("weight_bits", "weight_bits", "max weight storage in bits: N or e.g. 0.8x (weight terms only)"),
            ("sqnr", "sqnr_db", "target model-output SQNR in dB on the calibration images (cheapest that meets it)"),
            ("top1_drop", "top1_drop", "target: at most this many top-1 points below FP on the calibration images"))


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Adds the `allocate` subcommand to fpxint's subparsers."""
    from ..allocation import COSTS, MODES, SOLVERS

    p = subparsers.add_parser("allocate", help="choose per-layer term counts under a budget (beyond the paper)",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("model", nargs="?", help="registry name (default: digits_cnn)")
    g = p.add_argument_group("budget (exactly one)").add_mutually_exclusive_group(required=True)
    for flag, _, text in _BUDGETS:
        g.add_argument(f"--budget-{flag.replace('_', '-')}", dest=f"budget_{flag}", metavar="VALUE", help=text)
    a = p.add_argument_group("allocation")
    a.add_argument("--metric", choices=COSTS, default="int_gemms", help="cost a target minimises (default int_gemms)")
    a.add_argument("--calibration", choices=MODES, help="data the choice may use: weights (none), synthetic "
                   "(Gaussian inputs), unlabeled or labeled images (default: labeled when the images have labels)")
    a.add_argument("--calib", type=int, help="calibration images, stratified (default 256); language models: "
                   "calibration windows after the evaluation windows (default 1)")
    a.add_argument("--max-terms", type=int, default=6, help="largest term count per side and layer (default 6)")
    a.add_argument("--solver", choices=SOLVERS, default="dp", help="dp: exact on the additive noise model (default)")
    a.add_argument("--sensitivity", metavar="CSV", help="reuse this sensitivity table if it exists, else write it")
    e = p.add_argument_group("evaluation and output")
    e.add_argument("--eval", default="0", metavar="N|all",
                   help="report top-1 of uniform and allocated on N (or all) images disjoint from calibration")
    e.add_argument("--uniform-terms", default="1,2,3,4",
                   help="uniform term counts for the comparison (default 1,2,3,4)")
    e.add_argument("--out", metavar="PATH", help="write the allocated ExpansionConfig as JSON")
    e.add_argument("--save", metavar="PREFIX", help="write PREFIX.layers.csv, PREFIX.curve.csv and PREFIX.json")
    add_force_option(e, "the --out / --save files")
    e.add_argument("--json", action="store_true", help="print the result as JSON")
    add_config_options(p)
    add_run_options(p)
    from .lm import add_text_options
    add_text_options(p)
    p.add_argument("--calib-seq-len", type=int, help="language models: tokens per calibration window "
                   "(default: --seq-len)")
    p.set_defaults(run=run)
    return p


def _budget(args):
    from ..allocation import Budget

    for flag, kind, _ in _BUDGETS:
        text = getattr(args, f"budget_{flag}", None)
        if text is not None:
            try:
                return Budget.parse(f"{kind}={text}", metric=args.metric)
            except ValueError as e:
                raise UsageError(f"--budget-{flag.replace('_', '-')} {text!r}: {e}") from None
    raise UsageError("give one budget: --budget-gemms, --budget-bops, --budget-weight-bits, --budget-sqnr "
                     "or --budget-top1-drop")


def split_images(args, spec, shared):
    """(calibration images, labels), (evaluation images, labels), and a line saying which images are which.

    One data set: `allocation.calibration_split` (the same split as the app's Allocate page). The bundled
    digits: calibration from the train split, evaluation on the test split (disjoint by construction).
    """
    from ..allocation import calibration_split
    from ..data import load_data, stratified_indices

    n_eval = None if args.eval == "all" else int(args.eval)
    if spec.dataset == "digits" and args.data in (None, "digits"):
        train, test = load_data("digits", spec, split="train"), load_data("digits", spec, split="test")
        ci = stratified_indices(train.labels, args.calib, args.seed)
        ei = torch.arange(len(test))
        if n_eval is not None and n_eval < len(test):  # the evaluation subset as calibration_split draws it
            ei = stratified_indices(test.labels, n_eval, args.seed + 1) if n_eval > 0 else ei[:0]
        cal, ev = (train.images[ci], train.labels[ci]), (test.images[ei], test.labels[ei])
        where, ev_pool = "digits", "the test split"
    else:
        data = data_from_args(args, spec, shared)
        try:
            ci, ei = calibration_split(data.labels, len(data), args.calib, args.seed, n_eval)
        except ValueError as e:
            raise UsageError(f"--calib {args.calib}: {e}") from None
        lab = data.labels
        cal = (data.images[ci], None if lab is None else lab[ci])
        ev = (data.images[ei], None if lab is None else lab[ei])
        where, ev_pool = data.source, "the rest"
    text = (f"{where}: allocation chosen on {len(cal[0])} stratified images (seed {args.seed}); "
            + (f"accuracy on {len(ev[0])} images of {ev_pool}, disjoint from them" if len(ev[0]) else
               "no accuracy evaluation (--eval N|all)"))
    return cal, ev, text


def _check(args) -> None:
    check_run_args(args)
    if args.calib is None:
        args.calib = 256
    if args.calib < 1:
        raise UsageError(f"--calib {args.calib} is not allowed; give a number of images >= 1")
    if args.eval != "all" and (not args.eval.isdigit()):
        raise UsageError(f"--eval {args.eval!r} is not allowed; give a number of images or 'all'")
    try:
        args.uniform_terms = [int(v) for v in args.uniform_terms.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"--uniform-terms {args.uniform_terms!r}: comma-separated integers, e.g. 2,3,4") from None


def run(args) -> int:
    """Runs `fpxint allocate`; returns the exit code (errors are raised as ValueError for main())."""
    from ..allocation import allocate, cost_accuracy_curve
    from ..model import resolve_device

    from . import lm as cli_lm
    claim_outputs(args, allocation_paths(args), "--out / --save")  # before any work, for images and text alike
    if cli_lm.wants(args):
        return cli_lm.run_allocate(args, _budget)
    _check(args)
    budget, cfg, device = _budget(args), config_from_args(args), resolve_device(args.device)
    lm, shared = model_from_args(args, args.model)
    (cx, cy), (ex, ey), which = split_images(args, lm.spec, shared)
    mode = args.calibration or ("labeled" if cy is not None else "unlabeled")
    sens_path = Path(args.sensitivity) if args.sensitivity else None
    sens = pd.read_csv(sens_path) if sens_path and sens_path.is_file() else None
    progress = None if args.quiet or not sys.stderr.isatty() else (
        lambda f, t: print(f"\r{100 * f:5.1f} % {t[:60]:<60}", end="", file=sys.stderr))
    a = allocate(lm.model, cfg, budget, cx, cy, mode=mode, max_terms=args.max_terms, solver=args.solver,
                 sensitivity=sens, device=device, progress=progress)
    if progress:
        print(file=sys.stderr)
    if sens_path and sens is None:
        write_outputs(args, [(sens_path, a.sensitivity.to_csv(index=False))], flag="--sensitivity")
    curve = None
    if len(ex) and lm.trained:
        curve = cost_accuracy_curve(lm.model, cfg, ex, ey, [(f"allocated ({budget.describe()})", a.config)],
                                    args.uniform_terms, args.batch_size, device)
    summary = {"model": lm.spec.name, "weights": lm.weights_source, "base_config": cfg.to_json(),
               "budget": budget.describe(), "cap": a.cap, "mode": a.mode, "calibration_data": a.data,
               "images": which, "solver": a.solver, "predicted_sqnr_db": a.predicted_sqnr_db,
               "calib_sqnr_db": a.measured_sqnr_db, "calib_top1": a.top1, "calib_fp_top1": a.fp_top1,
               **{f"{k}": a.cost[k] for k in ("int_gemms", "bops", "weight_bits")},
               **{f"uniform_{k}": a.uniform_cost[k] for k in ("int_gemms", "bops", "weight_bits")},
               "config": json.loads(a.config.to_json())}
    write_allocation(args, a.config.to_json(indent=2), a.layers, curve, summary)
    if args.json:
        summary["layers"] = a.layers.to_dict(orient="records")
        summary["curve"] = None if curve is None else curve.drop(columns="config").to_dict(orient="records")
        print(dumps(summary, indent=2, default=str))
        return 0
    _print(a, summary, curve)
    return 0


def _print(a, s: dict, curve) -> None:
    t = a.layers[["layer", "w_bits", "w_terms", "a_bits", "a_terms", "int_gemms", "bops", "noise_db"]].copy()
    t["bops"] = (100 * t.bops / t.bops.sum()).map(lambda v: f"{v:.1f} %")
    print(t.rename(columns={"bops": "bops_share"}).to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    u = a.uniform_cost
    lines = [("model", f"{s['model']} ({s['weights']})"), ("images", s["images"]),
             ("calibration", f"{s['mode']}: {s['calibration_data']}"), ("budget", f"{s['budget']} ({a.solver})"),
             ("int GEMMs", f"{s['int_gemms']} vs uniform {u['int_gemms']} ({_pct(s['int_gemms'], u['int_gemms'])})"),
             ("BOPs", f"{s['bops']:.4g} vs uniform {u['bops']:.4g} ({_pct(s['bops'], u['bops'])})"),
             ("weight bits", f"{s['weight_bits']:.4g} vs uniform {u['weight_bits']:.4g}"),
             ("SQNR", f"predicted {a.predicted_sqnr_db:.1f} dB" + (
                 "" if a.measured_sqnr_db is None else f", measured {a.measured_sqnr_db:.1f} dB on calibration"))]
    if a.top1 is not None:
        lines.append(("calib top-1", f"{a.top1:.2f} % (FP {a.fp_top1:.2f} %)"))
    if a.candidates is not None and a.candidates.measured_sqnr_db.notna().any():
        lines.append(("candidates", ", ".join(f"{r.candidate} {r.measured_sqnr_db:.1f} dB"
                                              + (" (chosen)" if r.chosen else "") for r in a.candidates.itertuples())))
    for k, v in lines:
        print(f"{k:<12} {v}")
    if curve is not None:
        cols = ["label", "int_gemms", "bops_vs_fp", "sqnr_db", "agreement", "top1", "fp_top1", "n_images"]
        print(curve[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))


def _pct(v: float, ref: float) -> str:
    return f"{100 * (v / ref - 1):+.1f} %" if ref else "n/a"

