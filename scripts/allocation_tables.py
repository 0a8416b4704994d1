"""Regenerates the allocation tables of docs/RESULTS.md ("Per-layer term allocation") and their raw data.

Each block (model, bit setting) is one process-level run of the public API, on the images
`python -m fpxint allocate` uses (its own calibration / evaluation split: 256 stratified calibration
images, seed 0; evaluation on all the others): the sensitivity table is measured once per block
(it does not depend on the term count), each budget row is `fpxint.allocation.allocate` with
mode "labeled", and uniform, allocated and per-side control configs are evaluated together by
`cost_accuracy_curve` (FP run once). Rows of the blocks run replace those blocks' rows in
docs/results/allocation.csv (written atomically); the Markdown tables are printed.

    python scripts/allocation_tables.py --only digits_cnn      # minutes on one core
    python scripts/allocation_tables.py                        # all blocks (the ResNets: hours on 2 cores)

The per-block rows with other calibration modes or targets (ResNet-20 W3A3: weights-only and
synthetic calibration, SQNR and top-1 targets) are single commands in RESULTS, not part of this script.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "docs" / "results" / "allocation.csv"

# model, setting, (w_bits, a_bits), max_terms, uniform term counts, budgets [(base terms, GEMMs factor)],
# per-side uniform controls [(w_terms, a_terms)]
BLOCKS = [
    ("resnet20", "W3A3", (3, 3), 5, (2, 3, 4), [(3, 0.75), (4, 0.75), (3, 0.6)], [(2, 3), (3, 2)]),
    ("resnet20", "W2A4", (2, 4), 8, (3, 4, 5, 6), [(5, 0.75), (5, 0.5), (4, 0.75), (6, 0.75)], [(6, 2)]),
    ("resnet32", "W3A3", (3, 3), 5, (2, 3, 4), [(3, 0.75), (4, 0.75), (3, 0.6)], [(2, 3)]),
    ("resnet32", "W2A4", (2, 4), 8, (4, 5, 6), [(5, 0.75), (6, 0.75), (5, 0.5)], [(6, 2)]),
    ("digits_cnn", "W2A2", (2, 2), 8, (3, 4, 5, 6), [(4, 0.75), (5, 0.75), (6, 0.75)], []),
    ("digits_cnn", "W3A3", (3, 3), 8, (1, 2, 3, 4), [(2, 0.75), (3, 0.75), (4, 0.75)], []),
    ("digits_cnn", "W2A4", (2, 4), 8, (3, 4, 5, 6), [(4, 0.75), (5, 0.75), (6, 0.75)], [(6, 2)]),
]
COLUMNS = ["model", "setting", "kind", "label", "chosen_by", "int_gemms", "bops", "bops_vs_fp", "weight_bits",
           "top1", "fp_top1", "agreement", "sqnr_db", "n_images", "images", "config"]


def run_block(model: str, setting: str, bits, max_terms: int, uniform, budgets, controls) -> pd.DataFrame:
    from fpxint import ExpansionConfig
    from fpxint.allocation import Budget, allocate, cost_accuracy_curve
    from fpxint.cli.allocate import split_images  # the CLI's split: the same images as `fpxint allocate`
    from fpxint.zoo import find_shared, load_model

    shared = find_shared()
    lm = load_model(model, shared_dir=shared)
    args = SimpleNamespace(data=None, limit=None, seed=0, calib=256, eval="all", no_cache=False, download=False,
                           shared=None)
    (cx, cy), (ex, ey), which = split_images(args, lm.spec, shared)
    base = ExpansionConfig(w_bits=bits[0], a_bits=bits[1])
    sens, extra = None, []
    for k, f in budgets:
        t0 = time.perf_counter()
        a = allocate(lm.model, base.with_terms(k), Budget.parse(f"int_gemms={f}x"), cx, cy, mode="labeled",
                     max_terms=max_terms, sensitivity=sens)
        sens = a.sensitivity  # per layer, side and k: independent of the base term count
        extra.append((f"allocated, GEMMs <= {f:g}x of uniform {k}", a.solver, a.config))
        print(f"  {model} {setting} uniform {k} x {f:g}: {a.solver}, {a.cost['int_gemms']} GEMMs "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    extra += [(f"uniform w{w} a{a_} (control)", None, base.replace(w_terms=w, a_terms=a_)) for w, a_ in controls]
    curve = cost_accuracy_curve(lm.model, base, ex, ey, [(label, c) for label, _, c in extra], uniform)
    chosen = {label: by for label, by, _ in extra}
    curve["kind"] = [("per-side uniform" if label.endswith("(control)") else kind) for kind, label
                     in zip(curve.kind, curve.label)]
    curve["label"] = [("FP" if kind == "fp" else label) for kind, label in zip(curve.kind, curve.label)]
    curve["chosen_by"] = [chosen.get(label) if kind == "allocated" else None for kind, label
                          in zip(curve.kind, curve.label)]
    curve["model"], curve["setting"], curve["images"] = model, setting, which
    return curve[COLUMNS]


def markdown(rows: pd.DataFrame) -> str:
    """The RESULTS table of one block."""
    fp = rows[rows.kind == "fp"].iloc[0]
    head = (f"**{fp.model} {fp.setting}** (FP top-1 {fp.top1:.2f} % on {int(fp.n_images)} images)\n\n"
            "| configuration | chosen by | int GEMMs | BOPs (% of FP) | weight storage (kbit) | top-1 (%) | Δ FP | "
            "agreement (%) | logit SQNR (dB) |\n|---|---|---:|---:|---:|---:|---:|---:|---:|")
    lines = [head]
    for r in rows[rows.kind != "fp"].itertuples():
        lines.append(f"| {r.label} | {'' if pd.isna(r.chosen_by) else r.chosen_by} | {int(r.int_gemms)} | "
                     f"{100 * r.bops_vs_fp:.2f} | {r.weight_bits / 1000:.0f} | {r.top1:.2f} | "
                     f"{r.top1 - r.fp_top1:+.2f} | {r.agreement:.2f} | {r.sqnr_db:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", help="comma-separated models (default: every block)")
    p.add_argument("--out", type=Path, default=OUT, help=f"CSV to update (default {OUT.relative_to(ROOT)})")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)  # as the published runs: one thread on the shared 2-core machine
    only = set(args.only.split(",")) if args.only else None
    old = pd.read_csv(args.out) if args.out.is_file() else pd.DataFrame(columns=COLUMNS)
    for block in BLOCKS:
        if only and block[0] not in only:
            continue
        print(f"{block[0]} {block[1]} (load average {os.getloadavg()[0]:.1f})", flush=True)
        rows = run_block(*block)
        keep = ~((old.model == block[0]) & (old.setting == block[1]) & ~old.kind.str.startswith("allocated ("))
        old = pd.concat([old[keep], rows], ignore_index=True)
        tmp = args.out.with_name(args.out.name + ".tmp")
        old.to_csv(tmp, index=False)
        os.replace(tmp, args.out)  # after each block: a long run keeps what it finished
        print(markdown(rows) + "\n", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
