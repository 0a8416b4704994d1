"""Forward cost: an expanded model against its BatchNorm-folded FP model, simulate and integer modes.

Every block (model, batch) times the FP model and each expanded variant in the same rounds. Configs
are 4-bit, k terms on both sides (W4xk A4xk), for each truncation (full, total_order, weight_only).
The layers run the activation series through the fused kernel (`series.expanded_sum_fused`) whenever
it builds (`fused.kernel_info()` says which path is active). Integer mode in detail: `bench.integer`.
Target (issue): ResNet-18, W4x2 A4x2 full, batch 32, simulate at most 1.5x the FP forward.
"""
from __future__ import annotations

import torch
import torchvision

import fpxint
from bench.common import ratio, table, time_interleaved, verdict
from fpxint import ExpansionConfig, fused
from fpxint.data import random_images

TITLE = "expanded model forward vs the BatchNorm-folded FP forward (simulate, integer)"
TARGET = 1.5
TRUNCATIONS = ("full", "total_order", "weight_only")


def plan(opts) -> list[dict]:
    """(model, batch) blocks: which truncations and term counts to simulate, which to run in integer mode."""
    every = {t: (1, 2, 3, 4) for t in TRUNCATIONS}
    if opts.smoke:  # the built-in model (bundled weights, no shared folder), every path once
        return [dict(model="digits_cnn", batch=2, sim={"full": (1,), "total_order": (2,)}, int={"full": (1,)})]
    if opts.quick:
        return [dict(model="resnet20", batch=32, sim={"full": (2,)}, int={"full": (2,)}),
                dict(model="resnet18", batch=1, sim={"full": (2,)}, int={"full": (2,)}),
                dict(model="resnet18", batch=32, sim={"full": (2,)}, int={})]
    if opts.full:
        small_int = {"full": (1, 2, 3, 4), "total_order": (1, 2, 3, 4)}
        return [dict(model="resnet20", batch=1, sim=every, int=small_int),
                dict(model="resnet20", batch=32, sim=every, int=small_int),
                dict(model="resnet20", batch=256, sim=every, int={}),
                dict(model="resnet18", batch=1, sim=every, int=small_int),
                dict(model="resnet18", batch=32, sim=every, int={"full": (1, 2)})]
    return [dict(model="resnet20", batch=1, sim=every, int={"full": (1, 2), "total_order": (1, 2)}),
            dict(model="resnet20", batch=32, sim=every, int={"full": (1, 2)}),
            dict(model="resnet20", batch=256, sim={"full": (2,)}, int={}),
            dict(model="resnet18", batch=1, sim=every, int={"full": (1, 2)}),
            dict(model="resnet18", batch=32, sim={"full": (1, 2, 3, 4), "total_order": (2,), "weight_only": (2,)},
                 int={})]


def load(name: str) -> tuple[torch.nn.Module | None, tuple[int, ...], str]:
    """(model, input shape without the batch, note); None with the reason when the checkpoint is missing."""
    if name == "resnet18":
        return torchvision.models.resnet18(weights=None).eval(), (3, 224, 224), "torchvision, random weights"
    from fpxint.zoo import find_shared, load_model  # the bench is an edge: it may read the environment

    shared = find_shared()  # None is fine for the built-in model; the others then fail to load, with the reason
    try:
        lm = load_model(name, shared_dir=shared)
        return lm.model, tuple(lm.spec.input_size), f"weights from {lm.weights_source}"
    except Exception as e:  # a missing or broken checkpoint skips the model, with the reason
        hint = "" if shared is not None else " (shared folder not found: set FPXINT_SHARED)"
        return None, (), f"{type(e).__name__}: {e}{hint}"


def loaded_blocks(blocks, skipped: list):
    """Each plan block with its model, input shape (no batch), BatchNorm-folded FP copy and a per-model dict for the
    expanded models, loaded once per model name; blocks whose model is missing go to `skipped`."""
    cache = {}
    for block in blocks:
        name, batch = block["model"], block["batch"]
        if name not in cache:
            model, size, note = load(name)
            cache[name] = (model, size, note, fpxint.fold_batchnorm(model) if model is not None else None, {})
            print(f"{name}: {note}", flush=True)
        model, size, note, fp, qmodels = cache[name]
        if model is None:
            skipped.append(f"{name} batch {batch}: {note}")
            print(f"  SKIPPED {name} batch {batch}: {note}", flush=True)
            continue
        yield block, model, size, fp, qmodels


def cfg_for(k: int, truncation: str) -> ExpansionConfig:
    return ExpansionConfig(w_bits=4, w_terms=k, a_bits=4, a_terms=k, truncation=truncation)


def run(opts) -> dict:
    info = fused.kernel_info()
    print(f"fused backend: {info['backend']}" + (f" ({info['reason']})" if info["reason"] else ""))
    rows, skipped = [], []
    for block, model, size, fp, qmodels in loaded_blocks(plan(opts), skipped):
        name, batch = block["model"], block["batch"]
        x = random_images(batch, tuple(size))
        fns, meta = {"fp": lambda: fp(x)}, {}
        for trunc in TRUNCATIONS:
            for k in sorted(set(block["sim"].get(trunc, ())) | set(block["int"].get(trunc, ()))):
                cfg = cfg_for(k, trunc)
                if cfg not in qmodels:
                    qmodels[cfg] = fpxint.expand(model, cfg, device="cpu")
                q, label = qmodels[cfg], cfg.label()
                meta[label] = dict(model=name, batch=batch, config=label, truncation=trunc, terms=k)
                if k in block["sim"].get(trunc, ()):
                    fns[f"sim|{label}"] = lambda q=q: q(x)
                if k in block["int"].get(trunc, ()):
                    def integer(q=q):
                        fpxint.set_mode(q, "integer")
                        try:
                            return q(x)
                        finally:
                            fpxint.set_mode(q, "simulate")
                    fns[f"int|{label}"] = integer
        repeat = opts.repeat or (3 if batch == 1 else 2)
        inner = {} if opts.smoke else {k: 3 for k in fns} if batch == 1 else {"fp": 2}  # batch 1 is cheap: more samples
        print(f"  {name} batch {batch}: {len(fns) - 1} variants x {repeat} rounds", flush=True)
        with torch.inference_mode():
            t = time_interleaved(fns, repeat=repeat, inner=inner)
        for label, row in meta.items():
            row["fp_ms"] = t["fp"].best_s * 1e3
            for kind in ("sim", "int"):
                key = f"{kind}|{label}"
                if key in t:
                    row[f"{kind}_x"] = ratio(t[key], t["fp"])
            if "int_x" in row and "sim_x" in row:
                row["int_vs_sim"] = row["int_x"] / row["sim_x"]
            rows.append(row)
            parts = [f"{kind} {row[kind + '_x']:.2f}x" for kind in ("sim", "int") if kind + "_x" in row]
            print(f"    {label:28s} " + "  ".join(parts), flush=True)
    print()
    print(table(rows, [("model", "model", ""), ("batch", "batch", "d"), ("config", "config", ""),
                       ("fp_ms", "FP ms", ".1f"), ("sim_x", "simulate x FP", ".2f"), ("int_x", "integer x FP", ".2f"),
                       ("int_vs_sim", "integer x simulate", ".1f")]))
    print("\nx FP: best wall time / best wall time of the BatchNorm-folded FP model in the same rounds.")
    for s in skipped:
        print(f"skipped: {s}")
    head = next((r for r in rows if r["model"] == "resnet18" and r["batch"] == 32 and r["truncation"] == "full"
                 and r["terms"] == 2), None)
    headline = None
    if head:
        headline = {"simulate_x": head["sim_x"], "target_x": TARGET, "verdict": verdict(head["sim_x"], TARGET)}
        print(f"\nHEADLINE ResNet-18 W4x2 A4x2 full, batch 32, simulate: {head['sim_x']:.2f}x FP "
              f"(target <= {TARGET}x: {headline['verdict']})")
    ints = [r for r in rows if "int_vs_sim" in r]
    for r in ints:
        if r["truncation"] == "full" and r["terms"] == 2:
            print(f"integer mode, {r['model']} batch {r['batch']} {r['config']}: {r['int_x']:.2f}x FP = "
                  f"{r['int_vs_sim']:.1f}x simulate")
    return {"rows": rows, "skipped": skipped, "headline": headline}
