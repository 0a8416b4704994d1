"""Language-model grid for docs/RESULTS.md: SmolLM2-135M perplexity / MiniLM-L6 STS-B Spearman for
W8A8, W4A8, W4A4 (weights per channel, activations per token) x terms, with cost, and the per-layer
outlier statistic beside the one-term error. Rows are written (atomically) as they are measured.

    python -m bench.lm_grid smollm2_135m [windows=2] [seq_len=256] [out_prefix]
    python -m bench.lm_grid minilm_l6 [pairs=200] [-] [out_prefix]
    python -m bench.lm_grid smollm2_135m 2 256 - 8:8:1    # only these W:A:terms rows, appended to the CSV
                                                           # already there (the layer report first if missing)
    python -m bench.lm_grid --tables      # markdown of the written CSVs, for docs/RESULTS.md
"""
from __future__ import annotations

import os
import sys
import time

import pandas as pd
import torch

from fpxint.config import ExpansionConfig
from fpxint.lm import LMData, evaluate_lm, layer_report, reference
from fpxint.text import STS_TEST, WIKITEXT, read_sts, token_windows
from fpxint.zoo import cache_dir, find_shared
from fpxint.zoo.hf import load_lm

# (w_bits, a_bits, terms): most informative first, so a cut run still answers the question
GRID = [(4, 4, k) for k in (1, 2, 3, 4)] + [(4, 8, k) for k in (1, 2, 3, 4)] + [(8, 8, k) for k in (1, 2, 3, 4)]


def _write(df: pd.DataFrame, path: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)


def tables(prefix: str = "docs/results/lm_") -> None:
    """Markdown tables: metric per config x terms, then per-kind outlier / error medians."""
    for name, metric in (("smollm2_135m", "ppl"), ("minilm_l6", "spearman")):
        try:
            g = pd.read_csv(f"{prefix}{name}_grid.csv")
        except FileNotFoundError:
            continue
        fp = g[f"fp_{metric}"].iloc[0]
        print(f"\n{name}: {g.data.iloc[0]}; FP {metric} {fp:.4g}\n")
        extra = "agreement" if metric == "ppl" else "cosine_to_fp"
        print(f"| config | terms | {metric} | {extra} | bits/weight | BOPs vs FP |\n|---|---|---|---|---|---|")
        for r in g.itertuples():
            print(f"| {r.config} | {r.terms} | {getattr(r, metric):.4g} | {getattr(r, extra):.4f} | "
                  f"{r.effective_bits:.2f} | {r.bops_vs_fp:.4f} |")
        try:
            lay = pd.read_csv(f"{prefix}{name}_layers.csv")
        except FileNotFoundError:
            continue
        one = lay[lay.terms == 1]
        print(f"\n| kind | layers | median outlier | W4A4 x1 median error | W8A8 x1 median error | "
              "W4A4 x2 median error |\n|---|---|---|---|---|---|")
        for kind, d in one[one.config == "W4A4"].groupby("kind", sort=False):
            e8 = one[(one.config == "W8A8") & (one.kind == kind)].rel_l2.median()
            e2 = lay[(lay.config == "W4A4") & (lay.terms == 2) & (lay.kind == kind)].rel_l2.median()
            print(f"| {kind} | {len(d)} | {d.outlier.median():.1f} | {d.rel_l2.median():.3g} | {e8:.3g} | {e2:.3g} |")
        w4 = one[one.config == "W4A4"]
        rho = w4.outlier.rank().corr(w4.rel_l2.rank())
        print(f"\nSpearman rank correlation of outlier statistic vs W4A4 one-term error over {len(w4)} layers: "
              f"{rho:.3f}")
        w8 = one[one.config == "W8A8"]
        print(f"same for W8A8 one term: {w8.outlier.rank().corr(w8.rel_l2.rank()):.3f}")


def main(argv: list[str]) -> int:
    if argv == ["--tables"]:
        tables()
        return 0
    name = argv[0]
    n = int(argv[1]) if len(argv) > 1 else (2 if name == "smollm2_135m" else 200)
    seq_len = int(argv[2]) if len(argv) > 2 and argv[2] != "-" else 256
    prefix = argv[3] if len(argv) > 3 and argv[3] != "-" else f"docs/results/lm_{name}"
    shared = find_shared()
    lm = load_lm(name, cache_dir=cache_dir())
    if lm.spec.task == "causal_lm":
        data = LMData(windows=token_windows(lm.tokenizer, shared / WIKITEXT, seq_len, n), source="wiki.test.raw")
    else:
        data = LMData.sts(lm.tokenizer, *read_sts(shared / STS_TEST, n), source="sts-test.tsv")
    print(data.describe(), "|", lm.spec.caveat or "float32 reference", flush=True)
    # the grid the committed tables were measured on (symmetric activations, the default then): pinned, so a
    # resumed run appends rows of the same configuration whatever today's default
    base = ExpansionConfig(w_granularity="per_channel", a_granularity="per_token", a_grid="symmetric", fold_bn=False)
    grid, rows = GRID, []
    if len(argv) > 4:  # a resumed run: the layer report first (the grid so far is kept), then the given rows
        grid = [tuple(int(v) for v in item.split(":")) for item in argv[4].split(",")]
        rows = pd.read_csv(f"{prefix}_grid.csv").to_dict("records")
        if not os.path.exists(f"{prefix}_layers.csv"):  # a cut run may not have reached it
            _layers(lm, base, data, prefix)
    ref = reference(lm.model, data)
    for w, a, k in grid:
        cfg = base.replace(w_bits=w, a_bits=a, w_terms=k, a_terms=k)
        t = time.perf_counter()
        r = evaluate_lm(lm.model, cfg, data, ref)
        cost = r.pop("cost")
        rows.append({"model": name, "data": data.describe(), "config": f"W{w}A{a}", "terms": k, **r,
                     "effective_bits": cost["effective_bits"], "int_gemms_per_layer": k * k,
                     "bops_vs_fp": cost["bops_vs_fp"], "seconds": round(time.perf_counter() - t, 1)})
        print(rows[-1], flush=True)
        _write(pd.DataFrame(rows), f"{prefix}_grid.csv")
    if len(argv) <= 4:
        _layers(lm, base, data, prefix)
    return 0


def _layers(lm, base: ExpansionConfig, data: LMData, prefix: str) -> None:
    rep = layer_report(lm.model, base.replace(w_bits=4, a_bits=4), data.probe(128), terms=(1, 2))
    rep8 = layer_report(lm.model, base.replace(w_bits=8, a_bits=8), data.probe(128), terms=(1,))
    rep8["config"], rep["config"] = "W8A8", "W4A4"
    _write(pd.concat([rep, rep8]), f"{prefix}_layers.csv")
    print("layers written", flush=True)


if __name__ == "__main__":
    torch.set_num_threads(2)
    sys.exit(main(sys.argv[1:]))
