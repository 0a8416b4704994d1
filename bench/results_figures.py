"""Figures and markdown tables for docs/RESULTS.md from the raw CSVs in docs/results/.

    BROWSER_PATH=/usr/bin/chromium python -m bench.results_figures
    python -m bench.results_figures --tables     # the accuracy tables' markdown only

Reads docs/results/grid_<model>*.csv (written by `python -m fpxint sweep`; for the CIFAR ResNets
the all-10,000-image sweep `_10k` where present, else the 1,000-image `_1k`) and
docs/results/peers_<model>_10k.csv (else `_1k`; written by `python -m bench.peers`), draws with the app's own
plotly code (fpxint.plots.accuracy_recovery / equal_budget, peers added as extra traces) and writes
PNG (kaleido, a local Chromium) to docs/figures/, HTML where PNG export fails. Prints the tables.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from fpxint import plots

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
FIGURES = ROOT / "docs" / "figures"
_CANDIDATES = {"digits_cnn": ["grid_digits_cnn"], "resnet20": ["grid_resnet20_10k", "grid_resnet20_1k"],
               "resnet32": ["grid_resnet32_10k", "grid_resnet32_1k"]}
GRIDS = {m: next((c for c in cs if (RESULTS / f"{c}.csv").is_file()), cs[-1]) for m, cs in _CANDIDATES.items()}
FP_BITS = 32


def fp_bops(model: str) -> float:
    from fpxint.cost import layer_macs
    from fpxint.zoo import find_shared, load_model

    lm = load_model(model, shared_dir=find_shared())
    shape = (1, 8, 8) if model.startswith("digits") else (3, 32, 32)
    return float(sum(layer_macs(lm.model, shape).values())) * FP_BITS * FP_BITS


def grid(model: str) -> pd.DataFrame:
    """All rows of <prefix>.csv and <prefix>_*.csv (a second sweep's rows), one per configuration."""
    files = [RESULTS / f"{GRIDS[model]}.csv", *sorted(RESULTS.glob(f"{GRIDS[model]}_*.csv"))]
    df = pd.concat([pd.read_csv(f) for f in files if f.is_file()], ignore_index=True)
    df = df.drop_duplicates("config", keep="first").reset_index(drop=True)
    df["a"] = df.apply(lambda r: "FP" if r["truncation"] == "weight_only" else str(int(r["a_bits"])), axis=1)
    return df


def pivot(df: pd.DataFrame, truncation: str) -> str:
    """W x A rows, terms columns: top-1 (delta vs FP)."""
    part = df[df["truncation"] == truncation]
    if truncation == "total_order":  # one term keeps the one pair (1, 1): sweeps run that model once, as full
        ones = df[(df.truncation == "full") & (df.terms == 1)]
        have = set(zip(part.w_bits, part.a, part.terms))
        part = pd.concat([ones[[(w, a, 1) not in have for w, a in zip(ones.w_bits, ones.a)]], part])
        part = part.sort_values(["w_bits", "a_bits", "terms"], kind="stable")
    lines = ["| W bits | A bits | " + " | ".join(f"{k} term{'s' if k > 1 else ''}" for k in sorted(part.terms.unique())) + " |",
             "|---|---|" + "---|" * part.terms.nunique()]
    for (w, a), g in part.groupby(["w_bits", "a"], sort=False):
        g = g.sort_values("terms")
        cells = [f"{t:.2f} ({d:+.2f})" for t, d in zip(g.top1, g.delta)]
        lines.append(f"| {w} | {a} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def first_within(df: pd.DataFrame, tol: float = 1.0) -> str:
    """Per W bits (A = W, full truncation, and A FP): the fewest terms within `tol` points of FP."""
    out = []
    for w in sorted(df.w_bits.unique()):
        parts = []
        for a in (str(w), "FP"):
            g = df[(df.w_bits == w) & (df.a == a) & (df.truncation.isin(["full", "weight_only"]))].sort_values("terms")
            if not len(g):
                continue
            hit = g[g.delta >= -tol]
            parts.append(f"A{a}: {int(hit.terms.iloc[0])} term(s)" if len(hit) else f"A{a}: not within {tol:g} pt by {g.terms.max()} terms")
        out.append(f"W{w}: " + ", ".join(parts))
    return "; ".join(out)


TITLES = {"full": "full grid (all n x n cross terms)", "total_order": "total-order truncation (i + j <= n + 1)",
          "weight_only": "weights only (A = FP)"}


def section(model: str) -> str:
    """The markdown of one model's accuracy tables, as docs/RESULTS.md shows them."""
    df = grid(model)
    out = [f"#### {model}: {int(df.n_images.iloc[0]):,} images, FP top-1 {df.fp_top1.iloc[0]:.2f} % "
           f"({len(df)} configurations run)", ""]
    for trunc in ("full", "total_order", "weight_only"):
        if (df.truncation == trunc).any():
            out += [f"{TITLES[trunc]}: top-1 % (pt vs FP)", "", pivot(df, trunc), ""]
    out += ["Fewest terms within 1 pt of FP (full truncation, A = W; and A = FP): " + first_within(df), ""]
    return "\n".join(out)


def _save(fig, name: str) -> str:
    FIGURES.mkdir(parents=True, exist_ok=True)
    try:
        fig.write_image(str(FIGURES / f"{name}.png"), width=1000, height=520, scale=1)
        return f"docs/figures/{name}.png"
    except Exception as exc:  # no Chromium / kaleido: HTML instead
        print(f"PNG export failed ({type(exc).__name__}: {exc}); writing HTML", file=sys.stderr)
        fig.write_html(str(FIGURES / f"{name}.html"), include_plotlyjs="cdn")
        return f"docs/figures/{name}.html"


PEER_STYLE = {"rtn": ("x", "#444444"), "quanto": ("triangle-up", "#d62728"), "torchao": ("square-open", "#9467bd")}


def _peer_points(peers: pd.DataFrame, fpb: float, macs_fc_share: float, weight_only: bool) -> pd.DataFrame:
    p = peers[~peers.peer.str.startswith(("fpxint", "FP")) & peers.top1.notna()].copy()
    p = p[(p.acts == "FP") == weight_only]
    p["family"] = p.peer.str.split().str[0]
    a_bits = p.acts.map(lambda s: FP_BITS if s == "FP" else int(s.split()[0].split("x")[0]))
    full = fpb / FP_BITS / FP_BITS
    # torchao touches the final Linear only here: its BOPs are FP's except for the fc share
    share = p.peer.str.startswith("torchao").map({True: macs_fc_share, False: 1.0})
    p["bops"] = full * (share * p.w_bits * a_bits + (1 - share) * FP_BITS * FP_BITS)
    p["bits_per_weight"] = p.w_bits
    return p


def add_peers(fig, p: pd.DataFrame, x: str):
    for fam, g in p.groupby("family"):
        sym, color = PEER_STYLE.get(fam, ("circle", "black"))
        fig.add_scatter(x=g[x], y=g.top1, mode="markers+text", name=f"{fam} (peer)", text=g.peer.str.replace(fam + " ", ""),
                        textposition="middle right", textfont={"size": 9},
                        marker={"symbol": sym, "size": 11, "color": color, "line": {"width": 2}})
    return fig


def main() -> int:
    if "--tables" in sys.argv:  # markdown only, no figures
        print("\n\n".join(section(m) for m in GRIDS if (RESULTS / f"{GRIDS[m]}.csv").is_file()))
        return 0
    made = []
    for model in GRIDS:
        if not (RESULTS / f"{GRIDS[model]}.csv").is_file():
            continue
        df = grid(model)
        fp = float(df.fp_top1.iloc[0])
        fpb = fp_bops(model)
        df["bops"] = df.bops_vs_fp * fpb
        df["bits_per_weight"] = df.effective_bits
        print(f"\n### {model}: {int(df.n_images.iloc[0])} images, FP {fp:.2f} %  ({len(df)} rows)")
        for trunc in ("full", "total_order", "weight_only"):
            if (df.truncation == trunc).any():
                print(f"\n{trunc}:\n{pivot(df, trunc)}")
        print("\nwithin 1 pt of FP:", first_within(df))
        peers_csv = next((f for f in (RESULTS / f"peers_{model}_10k.csv", RESULTS / f"peers_{model}_1k.csv")
                          if f.is_file()), None)
        peers = pd.read_csv(peers_csv) if peers_csv is not None else None
        print("peers:", peers_csv.name if peers_csv is not None else "none")
        fc_share = 64 * 10 / (fpb / FP_BITS / FP_BITS)  # CIFAR ResNets: fc is 64 x 10 MACs
        # 1) weights only (A FP): top-1 vs effective bits per weight, the weight-only peers on top;
        # 2) A = W bits, full truncation: top-1 vs BOPs, the peers with quantized activations on top
        wo = df[df.truncation == "weight_only"]
        for part, x, weight_only, name, title in (
                (wo, "bits_per_weight", True, "weight_only_bits", "weights only (activations FP), top-1 vs bits per weight"),
                (df[(df.truncation == "full") & (df.w_bits == df.a_bits)], "bops", False, "wa_bops",
                 "W = A bits, full truncation, top-1 vs BOPs per image")):
            if len(part):
                fig = plots.accuracy_recovery(part, fp, x=x)
                if peers is not None:
                    add_peers(fig, _peer_points(peers, fpb, fc_share, weight_only), x)
                fig.update_layout(title=f"{model}: {title}")
                made.append(_save(fig, f"{model}_{name}"))
        # 3) equal budget: n terms of b bits vs one term of n*b bits (weights only)
        rows = []
        for (b, n), nb in (((4, 2), 8), ((2, 2), 4), ((2, 4), 8)):
            s = wo[(wo.w_bits == b) & (wo.terms == n)]
            o = wo[(wo.w_bits == nb) & (wo.terms == 1)]
            if len(s) and len(o):
                pair = f"W{b}x{n} vs W{nb}x1"
                rows += [{"pair": pair, "label": f"W{b}x{n}", "kind": "series", "w_bits": b, "top1": s.top1.iloc[0]},
                         {"pair": pair, "label": f"W{nb}x1", "kind": "single term", "w_bits": nb, "top1": o.top1.iloc[0]}]
        if rows:
            fig = plots.equal_budget(pd.DataFrame(rows), fp)
            fig.update_layout(title=f"{model}: equal weight storage, series vs one term (activations FP)")
            made.append(_save(fig, f"{model}_equal_budget"))
    print("\nfigures:", *made, sep="\n  ")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
