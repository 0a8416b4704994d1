"""Simulate mode's batch independence (issue 12, item 5) and its forward cost beside FP and integer mode.

1. Real CIFAR-10 ResNet-20 and its first N test images (200; 64 with --quick): the logits of all N as
   one batch against batches of 1 and against shuffled batches of 16 (a fixed random permutation),
   in simulate and in integer mode, W4x2 A4x2 and W3x3 A3x3: images whose logits changed at all, the
   largest |change|, top-1 flips; and images where simulate and integer mode differ.
2. Forward time in the same interleaved rounds: the BatchNorm-folded FP model, simulate and integer
   mode (ResNet-20 batch 32, EfficientNet-Lite0 batch 8), as ratios to FP (wall and process CPU time).

Before / after: this section only uses the public API, so it runs on an older engine too:
    git archive <commit> fpxint | tar -x -C /tmp/before
    cd /tmp/before && PYTHONPATH=/tmp/before:<repo> python -m bench --only batch --out /tmp/before-out
"""
from __future__ import annotations

import torch

import fpxint
from bench.common import cpu_ratio, ratio, table, time_interleaved
from bench.forward import loaded_blocks
from fpxint import ExpansionConfig
from fpxint.data import random_images

TITLE = "simulate mode: logits independent of batch composition; forward cost vs FP and integer mode"
CONFIGS = {"W4x2 A4x2": (4, 2), "W3x3 A3x3": (3, 3)}


def _logits(q, x: torch.Tensor, order: torch.Tensor, batch: int) -> torch.Tensor:
    """Logits of x[order] in batches of `batch`, put back in x's order."""
    out = torch.empty(len(x), *q(x[:1]).shape[1:])
    for s in range(0, len(x), batch):
        idx = order[s:s + batch]
        out[idx] = q(x[idx])
    return out


def independence(model, images: torch.Tensor) -> list[dict]:
    n = len(images)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    ident = torch.arange(n)
    rows = []
    for label, (bits, k) in CONFIGS.items():
        cfg = ExpansionConfig(w_bits=bits, w_terms=k, a_bits=bits, a_terms=k)
        outs = {}
        for mode in ("simulate", "integer"):
            q = fpxint.expand(model, cfg.replace(mode=mode), device="cpu")
            with torch.inference_mode():
                one = _logits(q, images, ident, n)
                outs[mode] = one
                for name, order, batch in (("batches of 1", ident, 1), ("shuffled batches of 16", perm, 16)):
                    other = _logits(q, images, order, batch)
                    d = (other - one).abs().amax(1)
                    rows.append({"config": label, "mode": mode, "vs one batch of N": name, "images": n,
                                 "changed": int((d > 0).sum()), "max_abs": float(d.max()),
                                 "top1_flips": int((other.argmax(1) != one.argmax(1)).sum())})
                    print(f"  {label} {mode:8s} {name:24s} changed {rows[-1]['changed']}/{n}, max "
                          f"{rows[-1]['max_abs']:.3g}, top-1 flips {rows[-1]['top1_flips']}", flush=True)
        d = (outs["simulate"] - outs["integer"]).abs().amax(1)
        rows.append({"config": label, "mode": "simulate vs integer", "vs one batch of N": "same batch", "images": n,
                     "changed": int((d > 0).sum()), "max_abs": float(d.max()),
                     "top1_flips": int((outs["simulate"].argmax(1) != outs["integer"].argmax(1)).sum())})
        print(f"  {label} simulate vs integer: {rows[-1]['changed']}/{n} differ, max {rows[-1]['max_abs']:.3g}",
              flush=True)
    return rows


def timing(opts) -> list[dict]:
    plan = ([dict(model="digits_cnn", batch=4)] if opts.smoke else
            [dict(model="resnet20", batch=32), dict(model="efficientnet_lite0", batch=8)])
    rows, skipped = [], []
    for block, model, size, fp, qmodels in loaded_blocks(plan, skipped):
        x = random_images(block["batch"], tuple(size))
        fns = {"fp": lambda: fp(x)}
        for label, (bits, k) in CONFIGS.items():
            cfg = ExpansionConfig(w_bits=bits, w_terms=k, a_bits=bits, a_terms=k)
            qs = fpxint.expand(model, cfg, device="cpu")
            qi = fpxint.expand(model, cfg.replace(mode="integer"), device="cpu")
            fns[f"sim|{label}"] = lambda q=qs: q(x)
            fns[f"int|{label}"] = lambda q=qi: q(x)
        with torch.inference_mode():
            t = time_interleaved(fns, repeat=1 if opts.smoke else opts.repeat or (2 if opts.quick else 3), warmup=1)
        for label in CONFIGS:
            row = {"model": block["model"], "batch": block["batch"], "config": label, "fp_ms": t["fp"].best_s * 1e3}
            for kind in ("sim", "int"):
                row[f"{kind}_x"] = ratio(t[f"{kind}|{label}"], t["fp"])
                row[f"{kind}_cpu_x"] = cpu_ratio(t[f"{kind}|{label}"], t["fp"])
            rows.append(row)
    for s in skipped:
        print(f"skipped: {s}")
    return rows


def run(opts) -> dict:
    from fpxint.data import load_data
    from fpxint.zoo import find_shared, load_model  # the bench is an edge: it may read the environment

    shared = find_shared()
    out = {"independence": [], "timing": []}
    if opts.smoke:  # the built-in model and 8 of its bundled images: does the section still run?
        lm = load_model("digits_cnn")
        data = load_data("digits", lm.spec, limit=8, seed=0)
        out["independence"] = independence(lm.model, data.images)
    elif shared is not None and (shared / "models/cifar10/resnet20-12fca82f.th").exists():
        lm = load_model("resnet20", shared_dir=shared)
        n = 64 if opts.quick else 200
        data = load_data(str(shared / "data/cifar10-test"), lm.spec, limit=n, seed=0)
        print(f"ResNet-20, {len(data.images)} CIFAR-10 test images", flush=True)
        out["independence"] = independence(lm.model, data.images)
        print(table(out["independence"], [("config", "config", ""), ("mode", "mode", ""),
                                          ("vs one batch of N", "vs one batch of N", ""),
                                          ("changed", "images changed", "d"), ("images", "of", "d"),
                                          ("max_abs", "max |Δ logit|", ".3g"), ("top1_flips", "top-1 flips", "d")]))
    else:
        print("skipped batch independence: ResNet-20 checkpoint not found (set FPXINT_SHARED)")
    out["timing"] = timing(opts)
    print()
    print(table(out["timing"], [("model", "model", ""), ("batch", "batch", "d"), ("config", "config", ""),
                                ("fp_ms", "FP ms", ".1f"), ("sim_x", "simulate x FP", ".2f"),
                                ("sim_cpu_x", "(CPU time)", ".2f"), ("int_x", "integer x FP", ".2f"),
                                ("int_cpu_x", "(CPU time)", ".2f")]))
    print("\nx FP: best wall (and process CPU) time over the BatchNorm-folded FP model's, same interleaved rounds.")
    return out
