"""SmolLM2-135M at equal BOPs on today's engine: W8A8 x1 against W4A4 x2, on both activation grids, on the
2 x 256 tokens of docs/RESULTS.md's grid (FP in the same process). Settles which differences in RESULTS are
the grid, the engine or the CPU.

    python -m bench.lm_equal_budget [--json FILE]
"""
from __future__ import annotations

import argparse
import time

import torch

from bench.common import machine_info
from fpxint.atomic import write_files
from fpxint.config import ExpansionConfig
from fpxint.lm import LMData, evaluate_lm, reference
from fpxint.text import WIKITEXT, token_windows
from fpxint.zoo import cache_dir, find_shared
from fpxint.zoo.hf import load_lm

ROWS = [(8, 8, 1, "symmetric"), (8, 8, 1, "asymmetric"), (4, 4, 2, "symmetric"), (4, 4, 2, "asymmetric")]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", help="write the rows here (refuses to replace a file)")
    opts = p.parse_args()
    torch.set_num_threads(1)
    lm = load_lm("smollm2_135m", cache_dir=cache_dir())
    data = LMData(windows=token_windows(lm.tokenizer, find_shared() / WIKITEXT, 256, 2), source="wiki.test.raw")
    ref = reference(lm.model, data)
    base = ExpansionConfig(w_granularity="per_channel", a_granularity="per_token", fold_bn=False)
    rows = []
    for w, a, k, grid in ROWS:
        t = time.perf_counter()
        r = evaluate_lm(lm.model, base.replace(w_bits=w, a_bits=a, w_terms=k, a_terms=k, a_grid=grid), data, ref)
        rows.append({"config": f"W{w}A{a} x{k}", "a_grid": grid, "ppl": round(r["ppl"], 3),
                     "fp_ppl": round(r["fp_ppl"], 3), "agreement": round(r["agreement"], 4),
                     "bops_vs_fp": r["cost"]["bops_vs_fp"], "seconds": round(time.perf_counter() - t, 1)})
        print(rows[-1], flush=True)
    if opts.json:
        import json
        write_files([(opts.json, json.dumps({"machine": machine_info(), "rows": rows}, indent=1))])


if __name__ == "__main__":
    main()
