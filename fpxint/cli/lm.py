"""`eval`, `sweep` and `allocate` on language models (smollm2_135m, minilm_l6, hf:<name or path>).

Causal LMs are scored on token windows of a text file (default: WikiText-2 test from the shared folder),
encoders on STS-B test pairs; the JSON holds fp_ppl / ppl (or fp_spearman / spearman) next to the
config and the cost (MACs counted per token). Activations default to per-token scales here.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from .args import UsageError, config_from_args
from ..config import ExpansionConfig


def add_text_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("language models (smollm2_135m, minilm_l6, hf:NAME)")
    g.add_argument("--text", metavar="PATH", help="UTF-8 text for perplexity (default: WikiText-2 test, shared)")
    g.add_argument("--windows", type=int, default=2, help="token windows scored (default 2)")
    g.add_argument("--seq-len", type=int, default=256, help="tokens per window (default 256)")
    g.add_argument("--stride", type=int, help="tokens between window starts (default: --seq-len, no overlap)")
    g.add_argument("--sts-pairs", type=int, default=200,
                   help="STS-B test pairs for encoders, evenly spaced through the file (default 200; 0: all 1,379)")


def wants(args) -> bool:
    from ..zoo.hf import is_language_model

    return bool(getattr(args, "model", None)) and is_language_model(args.model)


def _config(args) -> ExpansionConfig:
    cfg = config_from_args(args)
    if args.a_granularity is None and not (args.config and "a_granularity" in args.config):
        cfg = cfg.replace(a_granularity="per_token")  # one scale per token: the LLM default
    return cfg.replace(fold_bn=False)


def _text_path(args, shared):
    from ..text import WIKITEXT

    path = args.text or (shared / WIKITEXT if shared else None)
    if path is None:
        raise UsageError("no text: pass --text PATH or --shared DIR (with data/wikitext-2-raw)")
    return path


def _size_check(args):
    """`load_lm`'s admit for an hf: model: its float32 weights against the CLI's memory limit
    (FPXINT_MAX_RUN_MB, default half of RAM; FPXINT_MAX_PARAMS), checked from the config before any
    weights are downloaded or read; None with --no-limits."""
    from ..admission import AdmissionError, Limits, check_model

    if getattr(args, "no_limits", False):
        return None
    env = {k: v for k, v in os.environ.items() if k != "FPXINT_MAX_CONCURRENT"}  # the app's queue, not ours
    try:
        limits = Limits.from_env(env, max_run_seconds=None, max_concurrent=1)
    except ValueError as e:  # a malformed FPXINT_* variable
        raise UsageError(str(e)) from None

    def admit(size) -> None:
        try:
            check_model(args.model, size.params, size.bytes, limits)
        except AdmissionError as e:
            raise UsageError(f"{e} Or pass --no-limits to load it anyway.") from None
    return admit


def _load(args):
    from ..lm import LMData
    from ..text import STS_TEST, TextError, read_sts, token_windows
    from ..zoo import cache_dir, find_shared
    from ..zoo.hf import load_lm

    if args.weights or args.data:
        raise UsageError("--weights and --data are for image models; language models take --text / --windows")
    if args.windows < 1 or args.seq_len < 2:
        raise UsageError(f"--windows {args.windows} --seq-len {args.seq_len}: need >= 1 window of >= 2 tokens")
    shared = find_shared(args.shared)
    lm = load_lm(args.model, cache_dir=None if args.no_cache else cache_dir(), allow_download=args.download,
                 admit=_size_check(args))
    try:
        if lm.spec.task == "causal_lm":
            path = _text_path(args, shared)
            data = LMData(windows=token_windows(lm.tokenizer, path, args.seq_len, args.windows, args.stride))
        else:
            if args.text:
                raise UsageError(f"{args.model} is a sentence encoder scored on STS-B pairs; --text is for causal LMs")
            if shared is None:
                raise UsageError("no STS-B data: pass --shared DIR (with data/sts-b)")
            data = LMData.sts(lm.tokenizer, *read_sts(shared / STS_TEST, args.sts_pairs or None),
                              source=STS_TEST.name)
    except TextError as e:
        raise UsageError(str(e)) from None
    return lm, data


def _cost(c: dict) -> dict:
    keys = ("effective_bits", "weight_mb", "fp_weight_mb", "int_gemms", "bops_vs_fp", "expanded_layers", "layers")
    return {**{k: c[k] for k in keys}, "macs_per_token": c["macs"]}


def _head(lm, data) -> dict:
    return {"model": lm.spec.name, "task": lm.spec.task, "weights": lm.source, "caveat": lm.spec.caveat or None,
            "note": lm.note or None, "data": data.describe()}


def run_eval(args) -> int:
    from ..lm import evaluate_lm, reference
    from ..model import resolve_device

    cfg = _config(args)
    device = resolve_device(args.device)
    lm, data = _load(args)
    model = lm.model.to(device)
    t0 = time.perf_counter()
    ref = reference(model, data)
    fp_seconds = time.perf_counter() - t0
    r = evaluate_lm(model, cfg, data, ref, device=device)
    out = {**_head(lm, data), "config": cfg.to_dict(), "label": cfg.label(),
           **{k: v for k, v in r.items() if k != "cost"}, "cost": _cost(r["cost"]),
           "seconds": time.perf_counter() - t0 - fp_seconds, "fp_seconds": fp_seconds}
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"{out['model']} on {out['data']}: {cfg.label()}")
    if out["caveat"]:
        print(f"note: {out['caveat']}")
    if "ppl" in out:
        print(f"perplexity {out['ppl']:.3f} (FP {out['fp_ppl']:.3f}); next-token top-1 agreement with FP "
              f"{100 * out['agreement']:.1f} %; KL(FP||exp) {out['kl']:.4f} nats/token")
    else:
        print(f"STS-B Spearman {out['spearman']:.4f} (FP {out['fp_spearman']:.4f}); "
              f"embedding cosine to FP {out['cosine_to_fp']:.4f}")
    c = out["cost"]
    print(f"cost: {c['effective_bits']:.2f} bits/weight, {c['int_gemms']} integer GEMMs, "
          f"BOPs {c['bops_vs_fp']:.4f} x FP, {c['macs_per_token'] / 1e6:.1f} M MACs/token in Linear layers")
    return 0


def run_sweep(args) -> int:
    import pandas as pd

    from .common import sweep_configs, write_sweep
    from ..lm import sweep_lm
    from ..model import resolve_device

    configs = sweep_configs(args, _config(args))
    device = resolve_device(args.device)
    lm, data = _load(args)
    doc = {**_head(lm, data), "command": "python -m fpxint " + " ".join(getattr(args, "argv", []) or []),
           "rows": []}

    def progress(frac: float, label: str) -> None:
        if not args.quiet:
            print(f"  {label} done ({frac:.0%})", file=sys.stderr)

    df = sweep_lm(lm.model.to(device), data, configs, device=device, progress=progress)
    for cfg, row in zip(configs, df.to_dict("records")):
        doc["rows"].append({**row, "label": row["config"], "terms": cfg.w_terms, "config": cfg.to_json()})
    if args.out:
        write_sweep(args, doc)
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(f"{doc['model']} on {doc['data']}" + (f" ({doc['caveat']})" if doc["caveat"] else ""))
    print(pd.DataFrame(doc["rows"]).drop(columns=["config"]).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return 0


class _Progress:
    """On a terminal one line redrawn; in a log a line every 5 % (an allocation runs for minutes to hours)."""

    def __init__(self):
        self.tty, self.next = sys.stderr.isatty(), 0.0

    def __call__(self, f: float, text: str) -> None:
        if self.tty:
            print(f"\r{100 * f:5.1f} % {text[:60]:<60}", end="", file=sys.stderr)
        elif f >= self.next:
            self.next = f + 0.05
            print(f"{time.strftime('%H:%M:%S')} {100 * f:5.1f} % {text}", file=sys.stderr, flush=True)


def run_allocate(args, parse_budget) -> int:
    """`fpxint allocate` on a causal LM: calibration windows just after the evaluation windows (disjoint),
    the noise measured on the next-token logits, costs per token; `--eval` scores perplexity on the
    evaluation windows for the allocation and `--uniform-terms`, beside FP in the same run."""
    from pathlib import Path

    import pandas as pd

    from .args import check_run_args, dumps
    from .common import write_allocation, write_outputs
    from ..lm import LMData, allocate_lm, evaluate_lm, reference
    from ..model import resolve_device
    from ..text import TextError, token_windows
    from ..zoo import find_shared

    check_run_args(args)
    if args.calibration not in (None, "unlabeled", "weights"):
        raise UsageError(f"--calibration {args.calibration}: language models calibrate on text windows "
                         "(unlabeled: the noise is measured on the logits) or on the weights alone (weights)")
    calib_n, calib_len = args.calib or 1, args.calib_seq_len or args.seq_len
    if calib_n < 1 or calib_len < 2:
        raise UsageError(f"--calib {calib_n} --calib-seq-len {calib_len}: need >= 1 window of >= 2 tokens")
    try:
        terms = [int(v) for v in args.uniform_terms.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"--uniform-terms {args.uniform_terms!r}: comma-separated integers, e.g. 2,3") from None
    budget, cfg, device = parse_budget(args), _config(args), resolve_device(args.device)
    if budget.kind == "top1_drop":
        raise UsageError("--budget-top1-drop needs labeled images; language models take --budget-sqnr (on the logits)")
    lm, data = _load(args)
    if lm.spec.task != "causal_lm":
        raise UsageError(f"allocate on language models takes causal LMs (text windows); {args.model} is a "
                         "sentence encoder")
    try:
        calib = LMData(windows=token_windows(lm.tokenizer, _text_path(args, find_shared(args.shared)), calib_len,
                                             calib_n, start=data.windows.end))
    except TextError as e:
        raise UsageError(f"calibration windows after the evaluation windows: {e}") from None
    model = lm.model.to(device)
    progress = None if args.quiet else _Progress()
    sens_path = Path(args.sensitivity) if args.sensitivity else None
    sens = pd.read_csv(sens_path) if sens_path and sens_path.is_file() else None
    t0 = time.perf_counter()
    a = allocate_lm(model, cfg, budget, calib, max_terms=args.max_terms, solver=args.solver,
                    mode=args.calibration or "unlabeled", sensitivity=sens, device=device, progress=progress)
    if progress and progress.tty:
        print(file=sys.stderr)
    if sens_path and sens is None:
        write_outputs(args, [(sens_path, a.sensitivity.to_csv(index=False))], flag="--sensitivity")
    seconds = time.perf_counter() - t0
    curve = None
    if args.eval != "0":  # perplexity on the evaluation windows: FP, uniform k terms, the allocation
        ref = reference(model, data)
        rows = []
        for label, c in [("allocated", a.config)] + [(f"uniform {k} terms", cfg.with_terms(k)) for k in terms]:
            r = evaluate_lm(model, c, data, ref, device=device)
            cost = r.pop("cost")
            rows.append({"label": label, **r, "int_gemms": cost["int_gemms"], "bops_vs_fp": cost["bops_vs_fp"],
                         "effective_bits": cost["effective_bits"]})
            if not args.quiet:
                print(f"  {label}: perplexity {r['ppl']:.3f} (FP {r['fp_ppl']:.3f})", file=sys.stderr)
        curve = pd.DataFrame(rows)
    summary = {**_head(lm, data), "calibration": calib.describe() if a.mode != "weights" else a.data, "evaluation": data.describe(),
               "base_config": cfg.to_json(), "budget": budget.describe(), "cap": a.cap, "solver": a.solver,
               "predicted_sqnr_db": a.predicted_sqnr_db, "calib_sqnr_db": a.measured_sqnr_db,
               "allocation_seconds": seconds,
               **{k: a.cost[k] for k in ("int_gemms", "bops", "weight_bits")},
               **{f"uniform_{k}": a.uniform_cost[k] for k in ("int_gemms", "bops", "weight_bits")},
               "candidates": a.candidates.to_dict(orient="records"), "config": json.loads(a.config.to_json())}
    write_allocation(args, a.config.to_json(indent=2), a.layers, curve, summary)
    if args.json:
        summary["layers"] = a.layers.to_dict(orient="records")
        summary["curve"] = None if curve is None else curve.to_dict(orient="records")
        print(dumps(summary, indent=2, default=str))
        return 0
    from ..lm import layer_kind
    t = a.layers.assign(kind=a.layers.layer.map(layer_kind))
    print(t.groupby("kind", sort=False)[["w_terms", "a_terms"]].agg(["mean", "min", "max"]).to_string(
        float_format=lambda v: f"{v:.2f}"))
    u = a.uniform_cost
    for k, v in [("model", f"{summary['model']} ({summary['weights']})"), ("note", summary["caveat"] or "-"),
                 ("calibration", summary["calibration"]), ("evaluation", summary["evaluation"]),
                 ("budget", f"{summary['budget']} ({a.solver})"),
                 ("int GEMMs", f"{summary['int_gemms']} vs uniform {u['int_gemms']} per token"),
                 ("SQNR", f"predicted {a.predicted_sqnr_db:.1f} dB" + ("" if a.measured_sqnr_db is None else
                          f", measured {a.measured_sqnr_db:.1f} dB on the calibration logits"))]:
        print(f"{k:<12} {v}")
    if curve is not None:
        print(curve.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return 0
