"""Integer mode on int8 units vs the BatchNorm-folded FP forward, and vs its float64 arithmetic before.

Every (model, batch) block times, in the same interleaved rounds: the FP model, and per config the
expanded model in integer mode on the int8 kernels (kernel "auto": oneDNN's int8 convolution for
convolutions, `torch._int_mm` for linear layers), on the float64
kernel (exact float64 GEMMs / convolutions, what integer mode ran before issue 14), and in simulate
mode. Integer outputs of both kernels are checked equal to each other (the accumulators are the
same integers; only the float rescale differs, so the check is a float tolerance).
Targets (issue 14, this CPU): ResNet-18 batch 32, W4x2 A4x2 integer <= 1.5x FP, W4x1 A4x1 <= 0.75x.
EfficientNet-Lite0 (ImageNet, depthwise convolutions) is timed at batch 8.
"""
from __future__ import annotations

import torch

import fpxint
from bench.common import markdown as md_table
from bench.common import ratio, table, time_interleaved, verdict
from bench.forward import loaded_blocks
from fpxint import ExpansionConfig
from fpxint.data import random_images
from fpxint.layers import set_int_kernel

TITLE = "integer mode (int8 oneDNN conv / torch._int_mm; float64 before) vs the BatchNorm-folded FP forward"
TARGETS = {"W4x2 A4x2": 1.5, "W4x1 A4x1": 0.75}
CONFIGS = {"W4x2 A4x2": (4, 2), "W4x1 A4x1": (4, 1), "W8x1 A8x1": (8, 1)}


def plan(opts) -> list[dict]:
    if opts.smoke:  # the built-in model (bundled weights, no shared folder), every path once
        return [dict(model="digits_cnn", batch=2, configs=["W4x1 A4x1"], before=["W4x1 A4x1"])]
    if opts.quick:
        return [dict(model="resnet18", batch=32, configs=list(CONFIGS), before=["W4x1 A4x1"]),
                dict(model="resnet20", batch=32, configs=list(CONFIGS), before=list(CONFIGS)),
                dict(model="efficientnet_lite0", batch=8, configs=list(CONFIGS), before=["W4x1 A4x1"])]
    return [dict(model="resnet18", batch=32, configs=list(CONFIGS), before=list(CONFIGS)),
            dict(model="resnet18", batch=1, configs=list(CONFIGS), before=list(CONFIGS)),
            dict(model="resnet20", batch=32, configs=list(CONFIGS), before=list(CONFIGS)),
            dict(model="resnet20", batch=256, configs=list(CONFIGS), before=["W4x2 A4x2"]),
            dict(model="efficientnet_lite0", batch=8, configs=list(CONFIGS), before=list(CONFIGS))]


def run(opts) -> dict:
    rows, skipped = [], []
    for block, model, size, fp, qmodels in loaded_blocks(plan(opts), skipped):
        name, batch = block["model"], block["batch"]
        x = random_images(batch, tuple(size))
        fns, meta = {"fp": lambda: fp(x)}, {}
        for label in block["configs"]:
            bits, k = CONFIGS[label]
            if label not in qmodels:
                cfg = ExpansionConfig(w_bits=bits, w_terms=k, a_bits=bits, a_terms=k)
                qmodels[label] = (fpxint.expand(model, cfg.replace(mode="integer"), device="cpu"),
                                  fpxint.expand(model, cfg, device="cpu"))
            qi, qs = qmodels[label]
            fns[f"int|{label}"] = lambda q=qi: set_int_kernel(q, "auto")(x)
            fns[f"sim|{label}"] = lambda q=qs: q(x)
            if label in block["before"]:
                fns[f"f64|{label}"] = lambda q=qi: set_int_kernel(q, "float64")(x)
                with torch.inference_mode():
                    a, b = set_int_kernel(qi, "auto")(x[:2]), set_int_kernel(qi, "float64")(x[:2])
                meta[label] = {"same_as_float64": bool(torch.allclose(a, b, rtol=1e-5, atol=1e-5 * float(b.abs().max())))}
            meta.setdefault(label, {})
        repeat = opts.repeat or 2
        print(f"  {name} batch {batch}: {len(fns) - 1} variants x {repeat} rounds", flush=True)
        with torch.inference_mode():
            t = time_interleaved(fns, repeat=repeat, warmup=1, inner={} if opts.smoke else {"fp": 2})
        for label, extra in meta.items():
            row = dict(model=name, batch=batch, config=label, fp_ms=t["fp"].best_s * 1e3, **extra)
            for kind in ("int", "f64", "sim"):
                if f"{kind}|{label}" in t:
                    row[f"{kind}_x"] = ratio(t[f"{kind}|{label}"], t["fp"])
            if "f64_x" in row:
                row["speedup"] = row["f64_x"] / row["int_x"]
            target = TARGETS.get(label) if (name, batch) == ("resnet18", 32) else None
            if target:
                row["target_x"], row["verdict"] = target, verdict(row["int_x"], target)
            rows.append(row)
            print(f"    {label}: integer {row['int_x']:.2f}x FP" + (f", float64 {row['f64_x']:.2f}x" if "f64_x" in row else "")
                  + f", simulate {row['sim_x']:.2f}x" + (f"  target <= {target}: {row['verdict']}" if target else ""),
                  flush=True)
        for label in block["configs"]:
            qmodels[label][0].int_kernel = "auto"
    print()
    print(table(rows, [("model", "model", ""), ("batch", "batch", "d"), ("config", "config", ""),
                       ("fp_ms", "FP ms", ".1f"), ("int_x", "int8 x FP", ".2f"), ("f64_x", "float64 x FP (before)", ".2f"),
                       ("speedup", "int8 speedup", ".1f"), ("sim_x", "simulate x FP", ".2f"),
                       ("same_as_float64", "= float64", ""), ("target_x", "target", ".2f"), ("verdict", "verdict", "")]))
    print("\nx FP: best wall time / best wall time of the BatchNorm-folded FP model in the same rounds. "
          "int8: kernel 'auto' (oneDNN int8 convolution, torch._int_mm for linear layers); "
          "float64: exact float64 GEMMs / convolutions (integer mode before issue 14).")
    for s in skipped:
        print(f"skipped: {s}")
    return {"rows": rows, "skipped": skipped, "targets": TARGETS}


def markdown(res: dict) -> str:
    """RESULTS' integer-mode table from a results file (`python -m bench --table FILE`): the measured ratios,
    with the FP time of the same rounds and the integer time it implies (ratio x FP ms, the best integer call)."""
    rows = [{**r, "int_ms": r["int_x"] * r["fp_ms"],
             "target": f"<= {r['target_x']}: {'met' if r['verdict'] == 'MEETS' else 'missed'}" if "target_x" in r else None}
            for r in res["rows"]]
    out = md_table(rows, [("model", "model", ""), ("batch", "batch", "d"), ("config", "config", ""),
                          ("fp_ms", "FP ms", ".1f"), ("int_ms", "integer (int8) ms", ".1f"),
                          ("int_x", "integer (int8) x FP", ".2f"), ("f64_x", "integer on float64 (before) x FP", ".2f"),
                          ("speedup", "int8 speedup", ".1f"), ("sim_x", "simulate x FP", ".2f"),
                          ("same_as_float64", "= float64", ""), ("target", "target", "")])
    return out + "".join(f"\n\nskipped: {s}" for s in res.get("skipped", []))
