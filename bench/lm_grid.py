"""Language-model grid for docs/RESULTS.md: SmolLM2-135M perplexity / MiniLM-L6 STS-B Spearman for
W8A8, W4A8, W4A4 (weights per channel, activations per token) x terms, with cost, and the per-layer
outlier statistic beside the one-term error. Rows are written (atomically) as they are measured.

    python -m bench.lm_grid smollm2_135m [windows=2] [seq_len=256] [out_prefix]
    python -m bench.lm_grid minilm_l6 [pairs=200] [-] [out_prefix]
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
GRID = [(4, 4, k) for k in (1, 2, 3, 4)] + [(4, 8, k) for k in (1, 2, 3, 4)] + [(8, 8, k) for k in (1, 2)]


def _write(df: pd.DataFrame, path: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)


def main(argv: list[str]) -> int:
    name = argv[0]
    n = int(argv[1]) if len(argv) > 1 else (2 if name == "smollm2_135m" else 200)
    seq_len = int(argv[2]) if len(argv) > 2 and argv[2] != "-" else 256
    prefix = argv[3] if len(argv) > 3 else f"docs/results/lm_{name}"
    shared = find_shared()
    lm = load_lm(name, cache_dir=cache_dir())
    if lm.spec.task == "causal_lm":
        data = LMData(windows=token_windows(lm.tokenizer, shared / WIKITEXT, seq_len, n), source="wiki.test.raw")
    else:
        data = LMData.sts(lm.tokenizer, *read_sts(shared / STS_TEST, n), source="sts-test.tsv")
    print(data.describe(), "|", lm.spec.caveat or "float32 reference", flush=True)
    base = ExpansionConfig(w_granularity="per_channel", a_granularity="per_token", fold_bn=False)
    ref = reference(lm.model, data)
    rows = []
    for w, a, k in GRID:
        cfg = base.replace(w_bits=w, a_bits=a, w_terms=k, a_terms=k)
        t = time.perf_counter()
        r = evaluate_lm(lm.model, cfg, data, ref)
        cost = r.pop("cost")
        rows.append({"model": name, "data": data.describe(), "config": f"W{w}A{a}", "terms": k, **r,
                     "effective_bits": cost["effective_bits"], "int_gemms_per_layer": k * k,
                     "bops_vs_fp": cost["bops_vs_fp"], "seconds": round(time.perf_counter() - t, 1)})
        print(rows[-1], flush=True)
        _write(pd.DataFrame(rows), f"{prefix}_grid.csv")
    rep = layer_report(lm.model, base.replace(w_bits=4, a_bits=4), data.probe(128), terms=(1, 2))
    rep8 = layer_report(lm.model, base.replace(w_bits=8, a_bits=8), data.probe(128), terms=(1,))
    rep8["config"], rep["config"] = "W8A8", "W4A4"
    _write(pd.concat([rep, rep8]), f"{prefix}_layers.csv")
    print("layers written", flush=True)
    return 0


if __name__ == "__main__":
    torch.set_num_threads(2)
    sys.exit(main(sys.argv[1:]))
