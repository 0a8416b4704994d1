"""`fpxint eval` and `fpxint sweep`: one config, or a grid of them, against FP on the same images.

The FP model runs once per command; every expanded model is compared with it (top-1, agreement, KL,
logit SQNR) and its cost is reported beside. Language models go to `fpxint.cli.lm`.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from ..config import LEVELS, TRUNCATIONS, ExpansionConfig
from . import lm as cli_lm
from .args import (UsageError, add_config_options, add_force_option, add_run_options, admit_run, check_run_args,
                   choice_list, config_from_args, config_given, dumps, int_list, pairs)
from .common import (claim_outputs, cost_of, data_from_args, environment, expanded_paths, fmt, model_from_args,
                     run_logits, scores, sweep_configs, sweep_paths, write_sweep)


def add_parsers(sub) -> None:
    """Adds `eval` and `sweep` to fpxint's subparsers."""
    p = sub.add_parser("eval", help="FP and expanded top-1 and fidelity on a dataset")
    p.add_argument("model", nargs="?", help="registry name (default: digits_cnn, or the one in --expanded)")
    p.add_argument("--expanded", metavar="PREFIX", help="evaluate a saved expansion (PREFIX.safetensors + .json)")
    add_config_options(p)
    add_run_options(p)
    cli_lm.add_text_options(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(run=run_eval)

    p = sub.add_parser("sweep", help="accuracy and error over bits x terms x level x truncation")
    p.add_argument("model", nargs="?", help="registry name (default: digits_cnn)")
    g = p.add_argument_group("grid")
    g.add_argument("--bits", type=int_list, default=[2, 3, 4], help="weight bits, e.g. 2,3,4 (default 2,3,4)")
    g.add_argument("--a-bits", type=int_list, help="activation bits (crossed with --bits; default: same as weights)")
    g.add_argument("--pairs", type=pairs, help="explicit W:A bit pairs instead of --bits x --a-bits, e.g. 4:4,2:4")
    g.add_argument("--terms", type=int_list, default=[1, 2, 3], help="terms on both sides (default 1,2,3)")
    g.add_argument("--levels", type=choice_list(LEVELS), default=None, help="e.g. layer,tensor (default: config's)")
    g.add_argument("--truncations", type=choice_list(TRUNCATIONS), default=None,
                   help="e.g. full,total_order (default: config's)")
    add_config_options(p, bits_and_terms=False)
    add_run_options(p)
    cli_lm.add_text_options(p)
    p.add_argument("--out", metavar="PREFIX", help="write PREFIX.csv and PREFIX.json (updated after each row)")
    add_force_option(p, "PREFIX.csv / PREFIX.json")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(run=run_sweep)


def _print_result(r: dict) -> None:
    delta = r["top1"] - r["fp_top1"] if r["top1"] is not None and r["fp_top1"] is not None else None
    c = r.get("cost", {})
    lines = [
        ("model", f"{r['model']} ({r['weights']})"),
        ("data", r["data"]),
        ("config", r["label"]),
        ("FP top-1", fmt(r["fp_top1"], unit=" %")),
        ("top-1", fmt(r["top1"], unit=" %") + (f" ({delta:+.2f} vs FP)" if delta is not None else "")),
        ("agreement", fmt(r["agreement"], unit=" % same top-1 as FP")),
        ("KL(FP||exp)", "n/a" if r["kl"] is None else f"{r['kl']:.3g} nats/image"),
        ("logit SQNR", fmt(r["logit_sqnr_db"], 1, " dB")),
    ]
    if c:
        lines.append(("cost", f"{c['effective_bits']:.2f} bits/weight, {c['int_gemms']} integer GEMMs, "
                              f"BOPs {100 * c['bops_vs_fp']:.2f} % of FP"))
    lines.append(("time", f"FP {r['fp_seconds']:.1f} s, expanded {r['seconds']:.1f} s on {r['device_name']} "
                          f"(torch {r['torch']}, {r['threads']} threads)"))
    for k, v in lines:
        print(f"{k:<12} {v}")


def run_eval(args) -> int:
    from ..export import load_expanded, read_meta
    from ..model import expand, resolve_device

    check_run_args(args)
    if cli_lm.wants(args) and not args.expanded:
        return cli_lm.run_eval(args)
    saved_meta = None
    if args.expanded:
        if config_given(args):
            raise UsageError("config options cannot be combined with --expanded: the saved JSON holds the config")
        st_path, js_path = expanded_paths(args.expanded)
        if not js_path.is_file():
            raise UsageError(f"--expanded {args.expanded}: {js_path} not found (write it with `fpxint expand`)")
        saved_meta = read_meta(js_path)
        if not isinstance(saved_meta.get("config"), dict):
            raise UsageError(f"{js_path} has no 'config' object: not an expansion written by `fpxint expand`")
        if args.model and saved_meta.get("model") and args.model != saved_meta["model"]:
            raise UsageError(f"{js_path} is an expansion of {saved_meta['model']}, not {args.model}")
        cfg = ExpansionConfig.from_dict(saved_meta["config"])
        name = args.model or saved_meta.get("model")
    else:
        cfg, name = config_from_args(args), args.model
    device = resolve_device(args.device)
    lm, shared = model_from_args(args, name)
    if saved_meta is not None:
        lm = _expanded_weights(args, lm, saved_meta, js_path)
    data = data_from_args(args, lm.spec, shared)
    admit_run(args, lm.spec, cfg, len(data))

    t0 = time.perf_counter()  # expand first: a bad override fails before the FP run
    if saved_meta is not None:
        qmodel = load_expanded(lm.model, st_path, saved_meta, device=device)
    else:
        qmodel = expand(lm.model, cfg, device=device)
    expand_seconds = time.perf_counter() - t0
    fp_logits, fp_seconds = run_logits(args, lm.model, data, "FP", device)
    logits, run_seconds = run_logits(args, qmodel, data, cfg.label(), device)
    seconds = expand_seconds + run_seconds

    fp = scores(fp_logits, data.labels)
    r = {"model": lm.spec.name, "weights": lm.weights_source, "trained": lm.trained, "config": cfg.to_dict(),
         "label": cfg.label(), "expanded_from": str(st_path) if saved_meta else None,
         "data": data.source, "n_images": len(data), "fp_top1": fp["top1"],
         **scores(logits, data.labels, fp_logits), "seconds": seconds, "fp_seconds": fp_seconds,
         "cost": cost_of(lm.model, cfg, lm.spec), **environment(device)}
    if args.json:
        print(dumps(r, indent=2))
    else:
        _print_result(r)
    return 0


def _expanded_weights(args, lm, meta: dict, js_path: Path):
    """The FP model an expansion was made from, so that "vs FP" compares with those weights: the
    loaded one when its sha256 matches the JSON's record, else the recorded weights file, else an error."""
    from ..model import state_sha256
    from ..zoo import load_model

    want, source = meta["fp_weights"].get("sha256"), meta["fp_weights"].get("source")
    if not want or state_sha256(lm.model) == want:
        return lm
    if not args.weights and source and Path(source).is_file():  # expanded from a --weights file: reload it
        other = load_model(lm.spec.name, source)
        if state_sha256(other.model) == want:
            return other
    raise UsageError(f"{js_path} was expanded from other FP weights ({source or 'source not recorded'}, "
                     f"sha256 {want[:12]}) than {lm.weights_source}; pass --weights FILE with the weights "
                     "that were expanded")


def run_sweep(args) -> int:
    import pandas as pd
    from tqdm.auto import tqdm

    from ..model import check_overrides, expand, resolve_device

    check_run_args(args)
    if args.out:
        claim_outputs(args, sweep_paths(args.out))  # before any work
    if cli_lm.wants(args):
        return cli_lm.run_sweep(args)
    configs = sweep_configs(args, config_from_args(args))  # validates every config before any work
    device = resolve_device(args.device)
    lm, shared = model_from_args(args, args.model)
    check_overrides(lm.model, configs[0])  # before the data and the FP run
    data = data_from_args(args, lm.spec, shared)
    heaviest = max(configs, key=lambda c: (c.mode == "integer", c.w_terms * c.a_terms))
    admit_run(args, lm.spec, heaviest, len(data), passes=len(configs))
    fp_logits, fp_seconds = run_logits(args, lm.model, data, "FP", device)
    fp_top1 = scores(fp_logits, data.labels)["top1"]
    argv = getattr(args, "argv", None)
    doc = {"model": lm.spec.name, "weights": lm.weights_source, "trained": lm.trained, "data": data.source,
           "n_images": len(data), "fp_top1": fp_top1, "fp_seconds": fp_seconds,
           "command": "python -m fpxint " + " ".join(argv) if argv is not None else None,
           **environment(device), "rows": []}
    folded = macs = None
    if lm.spec.input_size is not None:  # every row's cost from one folded copy and one MAC count
        from ..cost import layer_macs
        from ..model import fold_batchnorm

        folded = fold_batchnorm(lm.model)
        macs = layer_macs(lm.model, lm.spec.input_size, folded)
    outer = tqdm(configs, desc="sweep", unit="cfg", file=sys.stderr, dynamic_ncols=True,
                 disable=args.quiet or not sys.stderr.isatty())
    for cfg in outer:
        t0 = time.perf_counter()
        logits, _ = run_logits(args, expand(lm.model, cfg, device=device), data, cfg.label(), device)
        s = scores(logits, data.labels, fp_logits)
        c = cost_of(lm.model, cfg, lm.spec, macs, folded)
        doc["rows"].append({
            "model": lm.spec.name, "w_bits": cfg.w_bits, "a_bits": cfg.a_bits if cfg.expands_activations else None,
            "terms": cfg.w_terms, "level": cfg.level, "truncation": cfg.truncation, "label": cfg.label(),
            "n_images": len(data), "fp_top1": fp_top1, "top1": s["top1"],
            "delta": s["top1"] - fp_top1 if s["top1"] is not None and fp_top1 is not None else None,
            "agreement": s["agreement"], "kl": s["kl"], "logit_sqnr_db": s["logit_sqnr_db"],
            "effective_bits": c.get("effective_bits"), "int_gemms": c.get("int_gemms"),
            "bops_vs_fp": c.get("bops_vs_fp"), "seconds": time.perf_counter() - t0, "config": cfg.to_json()})
        if args.out:
            write_sweep(args, doc, again=len(doc["rows"]) > 1)  # later rows rewrite this run's own files
    if args.json:
        print(dumps(doc, indent=2))
        return 0
    t = pd.DataFrame(doc["rows"])
    print(f"{doc['model']} on {doc['data']}: FP top-1 {fmt(fp_top1, unit=' %')} ({fp_seconds:.1f} s)")
    cols = ["label", "top1", "delta", "agreement", "kl", "logit_sqnr_db", "effective_bits", "bops_vs_fp", "seconds"]
    print(t[cols].to_string(index=False, na_rep="-", float_format=lambda v: f"{v:.4g}"))
    if args.out:
        print(f"wrote {args.out}.csv and {args.out}.json")
    return 0
