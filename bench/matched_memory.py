"""Matched weight memory, paired: fpxint's two 4-bit terms against the 8-bit peers, image by image.

Top-1 differences of a few images out of 10,000 say little on their own. Here every model runs on
the same images and the comparison is paired:
  - top-1, agreement with FP, and the logit SQNR against FP (dB, over all images): the closer a
    quantized model stays to FP, the higher;
  - McNemar's exact test between fpxint and each peer: of the images exactly one of the two gets
    right, is the split further from 50/50 than chance would make it? (two-sided p-value)

    python -m bench.matched_memory [resnet20,resnet32] [n_images] [out.csv]
"""
from __future__ import annotations

import copy
import math
import sys
import warnings

import pandas as pd
import torch

from bench.common import table
from bench.peers import fpxint_q, model_and_images, quanto_q, rtn_q

CANDIDATES = [
    ("fpxint W4x2 (A FP)", fpxint_q(w_bits=4, w_terms=2, truncation="weight_only")),
    ("fpxint W4x2 full grid (A FP)", fpxint_q(w_bits=4, w_terms=2, w_grid="full", truncation="weight_only")),
    ("fpxint W4x3 (A FP)", fpxint_q(w_bits=4, w_terms=3, truncation="weight_only")),  # 12 bits: the next step
    ("quanto qint8 weights", quanto_q("qint8")),
    ("rtn W8 (A FP)", rtn_q(8, None)),
]


def mcnemar_p(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: b, c = images only the first / only the second gets right.

    The exact test is a two-sided binomial test of b successes in b + c trials at p = 1/2
    (scipy's binomtest; equal to the doubled binomial tail to ~1e-15 on 0 <= b, c < 60)."""
    from scipy.stats import binomtest

    return 1.0 if b + c == 0 else float(binomtest(b, b + c, 0.5).pvalue)


def _logits(model, images, batch=250) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(images[i:i + batch]).float() for i in range(0, len(images), batch)])


def compare(name: str, n_images: int, candidates=CANDIDATES) -> list[dict]:
    warnings.filterwarnings("ignore")
    lm, data = model_and_images(name, n_images)
    x, y = data.images, data.labels
    fp = _logits(lm.model.eval(), x)
    out = {label: _logits(q(copy.deepcopy(lm.model)).eval(), x) for label, q in candidates}
    right = {k: v.argmax(1) == y for k, v in out.items()}
    rows = []
    for label, logits in out.items():
        noise = (logits - fp).pow(2).sum().item()
        row = {"model": name, "images": len(y), "config": label, "top1": 100 * right[label].float().mean().item(),
               "fp_top1": 100 * (fp.argmax(1) == y).float().mean().item(),
               "agree": 100 * (logits.argmax(1) == fp.argmax(1)).float().mean().item(),
               "logit_sqnr_db": 10 * math.log10(fp.pow(2).sum().item() / noise) if noise else math.inf}
        rows.append(row)
    ref = "fpxint W4x2 (A FP)"
    for row in rows:
        if row["config"] != ref:
            b = int((right[ref] & ~right[row["config"]]).sum())  # only fpxint W4x2 right
            c = int((~right[ref] & right[row["config"]]).sum())  # only this one right
            row.update(only_w4x2=b, only_this=c, mcnemar_p=mcnemar_p(b, c))
    return rows


COLUMNS = [("model", "model", ""), ("config", "config", ""), ("top1", "top-1 %", ".2f"), ("fp_top1", "FP %", ".2f"),
           ("agree", "agree w/ FP %", ".2f"), ("logit_sqnr_db", "logit SQNR dB", ".1f"),
           ("only_w4x2", "only W4x2 right", "d"), ("only_this", "only this right", "d"), ("mcnemar_p", "McNemar p", ".2f")]


def main(argv: list[str]) -> int:
    models = (argv[0] if argv else "resnet20,resnet32").split(",")
    n = int(argv[1]) if len(argv) > 1 else 10000
    rows = [r for m in models for r in compare(m, n)]
    print(table(rows, COLUMNS))
    if len(argv) > 2:
        pd.DataFrame(rows).to_csv(argv[2], index=False, float_format="%.4g")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
