"""`eval` and `sweep` on language models (smollm2_135m, minilm_l6, hf:<name or path>).

Causal LMs are scored on token windows of a text file (default: WikiText-2 test from the shared folder),
encoders on STS-B test pairs; the JSON holds fp_ppl / ppl (or fp_spearman / spearman) next to the
config and the cost (MACs counted per token). Activations default to per-token scales here.
"""
from __future__ import annotations

import argparse
import json
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


def _load(args):
    from ..lm import LMData
    from ..text import STS_TEST, WIKITEXT, TextError, read_sts, token_windows
    from ..zoo import cache_dir, find_shared
    from ..zoo.hf import load_lm

    if args.weights or args.data:
        raise UsageError("--weights and --data are for image models; language models take --text / --windows")
    if args.windows < 1 or args.seq_len < 2:
        raise UsageError(f"--windows {args.windows} --seq-len {args.seq_len}: need >= 1 window of >= 2 tokens")
    shared = find_shared(args.shared)
    lm = load_lm(args.model, cache_dir=None if args.no_cache else cache_dir(), allow_download=args.download)
    try:
        if lm.spec.task == "causal_lm":
            path = args.text or (shared / WIKITEXT if shared else None)
            if path is None:
                raise UsageError("no text: pass --text PATH or --shared DIR (with data/wikitext-2-raw)")
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

    from .entry import _sweep_configs, _write_sweep
    from ..lm import sweep_lm
    from ..model import resolve_device

    configs = _sweep_configs(args, _config(args))
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
        _write_sweep(args.out, doc)
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(f"{doc['model']} on {doc['data']}" + (f" ({doc['caveat']})" if doc["caveat"] else ""))
    print(pd.DataFrame(doc["rows"]).drop(columns=["config"]).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return 0
