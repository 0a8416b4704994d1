"""Expansion throughput: every expandable weight of ResNet-18 / ResNet-50 into 1..8 terms.

Reference: one read-and-write pass over the same weights, `[w * 2.0 for w in weights]`, timed in
the same rounds. Compared: the eager loop (`expand_tensor(..., backend="torch")`), the public
`fpxint.expand_tensor` called once per weight (the fused kernel by default) and `series.expand_weights`
(all weights in one call), for the max rule (one reduction per term) and the fixed rule (one
reduction in all), 4 bits, per channel.
Target (issues 10, 14): ResNet-50, 4 terms, at most 3x the reference, through `expand_tensor`.
"""
from __future__ import annotations

import torch
import torchvision

from bench.common import markdown as md_table
from bench.common import cpu_ratio, ratio, table, time_interleaved, verdict
from fpxint import expand_tensor, fused, series
from fpxint.model import expandable_layers

TITLE = "expanding all weights vs one read-and-write pass ([w * 2.0 for w in weights])"
TARGET = 3.0
RULE_LIMITS = {
    "max": "one min/max reduction per term; the fused kernel folds it into the previous term's pass: "
           "n + 1 passes per row, from L1/L2 for per-channel rows (one read of the weights from memory), "
           "n + 1 reads from memory for a per-tensor view",
    "fixed": "one reduction for the first term, then s_k = s_1 f^(k-1): each term is a pointwise pass; "
             "the same pass count as max in the fused kernel, minus the min/max work",
    "mse": "first scale searched over 16 clip ratios by the eager mse_scale (~100 passes, not fused); "
           "terms 2..n fused as max",
}


SMOKE_SHAPES = [(16, 3, 3, 3), (32, 16, 3, 3), (10, 32)]  # --smoke: a conv stem, a conv, a classifier


def model_weights(name: str) -> list[torch.Tensor]:
    if name == "smoke":
        g = torch.Generator().manual_seed(0)
        return [torch.randn(s, generator=g) for s in SMOKE_SHAPES]
    model = getattr(torchvision.models, name)(weights=None).eval()
    return [m.weight.detach() for _, m in expandable_layers(model)]


def same(a, b) -> bool:
    return all(torch.equal(x.q, y.q) and torch.equal(x.scales, y.scales) for x, y in zip(a, b))


EAGER_TERMS = {"max": (1, 2, 4, 8), "fixed": (1, 4)}  # eager costs ~the same per term: a few counts suffice


def run(opts) -> dict:
    info = fused.kernel_info()  # builds (or loads) the kernel outside the timed rounds
    print(f"fused backend: {info['backend']}" + (f" ({info['reason']})" if info["reason"] else "")
          + f" | kernel build {info['compile_s']:.2f} s{' (cached)' if info['cached'] else ''}"
          + f" | OpenMP {info['openmp']} | FMA residual {info['fma']}")
    models = ["smoke"] if opts.smoke else ["resnet50"] if opts.quick else ["resnet18", "resnet50"]
    term_list = [4] if opts.quick or opts.smoke else list(range(1, 9))
    repeat = opts.repeat or 2
    rows = []
    for name in models:
        ws = model_weights(name)
        numel = sum(w.numel() for w in ws)
        print(f"{name}: {len(ws)} weights, {numel / 1e6:.1f} M values", flush=True)
        series.expand_weights(ws, 4, 1, "per_channel")  # first call: allocator and thread pool warm
        for rule in ("max",) if opts.quick or opts.smoke else ("max", "fixed"):
            for n in term_list:
                last: dict = {}

                def eager(n=n, rule=rule):
                    last["eager"] = [expand_tensor(w, 4, n, "per_channel", "symmetric", rule, backend="torch") for w in ws]

                def public(n=n, rule=rule):
                    last["public"] = [expand_tensor(w, 4, n, "per_channel", "symmetric", rule) for w in ws]

                def fast(n=n, rule=rule):
                    last["fused"] = series.expand_weights(ws, 4, n, "per_channel", "symmetric", rule)

                fns = {"ref": lambda: [w * 2.0 for w in ws], "fused": fast, "public": public}
                with_eager = opts.full or n in EAGER_TERMS[rule]
                if with_eager:
                    fns["eager"] = eager
                inner = 1 if opts.smoke else 8
                t = time_interleaved(fns, repeat=repeat, warmup=1 if n == term_list[0] else 0,
                                     inner={"ref": inner, "fused": inner, "public": inner})
                row = {"model": name, "rule": rule, "terms": n, "ref_ms": t["ref"].best_s * 1e3,
                       "fused_ms": t["fused"].best_s * 1e3, "fused_x": ratio(t["fused"], t["ref"]),
                       "fused_x_term": ratio(t["fused"], t["ref"]) / n, "fused_cpu_x": cpu_ratio(t["fused"], t["ref"]),
                       "public_x": ratio(t["public"], t["ref"]), "public_same": same(last["public"], last["fused"])}
                if with_eager:
                    row.update(eager_ms=t["eager"].best_s * 1e3, eager_x=ratio(t["eager"], t["ref"]),
                               eager_x_term=ratio(t["eager"], t["ref"]) / n, eager_cpu_x=cpu_ratio(t["eager"], t["ref"]),
                               speedup=t["eager"].best_s / t["fused"].best_s,
                               identical=same(last["eager"], last["fused"]))
                rows.append(row)
                eager_txt = f"eager {row['eager_x']:.1f}x | " if with_eager else ""
                print(f"  {rule:5s} {n} terms: ref {row['ref_ms']:.1f} ms | {eager_txt}fused {row['fused_x']:.2f}x"
                      f" | expand_tensor {row['public_x']:.2f}x"
                      + (f" | identical {row['identical']}" if with_eager else ""), flush=True)
                del last
    print()
    print(table(rows, [("model", "model", ""), ("rule", "rule", ""), ("terms", "n", "d"),
                       ("ref_ms", "ref ms", ".1f"), ("eager_ms", "eager ms", ".0f"), ("fused_ms", "fused ms", ".1f"),
                       ("eager_x", "eager x ref", ".1f"), ("fused_x", "fused x ref", ".2f"),
                       ("public_x", "expand_tensor x ref", ".2f"), ("public_same", "= fused", ""),
                       ("eager_x_term", "eager x/term", ".1f"), ("fused_x_term", "fused x/term", ".2f"),
                       ("eager_cpu_x", "eager cpu x", ".1f"), ("fused_cpu_x", "fused cpu x", ".2f"),
                       ("speedup", "fused speedup", ".1f"), ("identical", "identical", "")]))
    print("\nx ref: best wall time / best wall time of the reference pass in the same rounds; "
          "cpu x: the same with process CPU time (all threads); eager timed at a few term counts "
          "(all with --full).")
    for rule in ("max", "fixed", "mse"):
        print(f"limit, {rule} rule: {RULE_LIMITS[rule]}")
    head = next((r for r in rows if r["model"] == "resnet50" and r["rule"] == "max" and r["terms"] == 4), None)
    headline = None
    if head:
        headline = {"eager_x": head.get("eager_x"), "fused_x": head["fused_x"], "fused_cpu_x": head["fused_cpu_x"],
                    "expand_tensor_x": head["public_x"], "target_x": TARGET, "verdict": verdict(head["public_x"], TARGET)}
        print(f"\nHEADLINE ResNet-50, 4 terms of 4 bits per channel, max rule: eager {head.get('eager_x', float('nan')):.1f}x, "
              f"expand_tensor {head['public_x']:.2f}x, expand_weights {head['fused_x']:.2f}x (cpu {head['fused_cpu_x']:.2f}x) "
              f"the read-and-write pass; target <= {TARGET:.0f}x (expand_tensor): {headline['verdict']}")
    return {"kernel": info, "rows": rows, "headline": headline, "rule_limits": RULE_LIMITS}


MARKDOWN_TERMS = (1, 2, 4, 8)  # the rows RESULTS shows; the file holds every term count


def markdown(res: dict) -> str:
    """RESULTS' expansion-throughput table from a results file (`python -m bench --table FILE`)."""
    rows = [r for r in res["rows"] if r["terms"] in MARKDOWN_TERMS]
    return md_table(rows, [("model", "model", ""), ("rule", "rule", ""), ("terms", "terms", "d"),
                           ("ref_ms", "reference pass ms", ".1f"), ("fused_ms", "`expand_weights` ms", ".1f"),
                           ("fused_x", "`expand_weights` x ref", ".2f"), ("public_x", "`expand_tensor` x ref", ".2f"),
                           ("fused_cpu_x", "`expand_weights` CPU time x ref", ".2f"),
                           ("eager_ms", "eager ms", ".0f"), ("eager_x", "eager x ref", ".1f"),
                           ("identical", "fused = eager", "")])
