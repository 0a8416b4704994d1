"""Figures for language models (fpxint.lm.layer_report): pure functions DataFrame -> plotly Figure.

A transformer has hundreds of Linear layers (SmolLM2: 210 + the head), too many for one row each, so
the per-layer view is a block x kind map (q, k, v, o, gate, up, down), and the "why" view plots each
layer's one-term error against its activation outlier statistic.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from .plots import TEMPLATE

KIND_ORDER = ("q", "k", "v", "qkv", "o", "gate", "up", "down", "head", "other")


def _kinds(df: pd.DataFrame) -> list[str]:
    present = set(df["kind"])
    return [k for k in KIND_ORDER if k in present]


def block_kind_map(df: pd.DataFrame, terms: int, metric: str = "rel_l2") -> go.Figure:
    """Block x kind heatmap of one number of terms; colour log10 of the relative error (or SQNR dB)."""
    d = df[(df["terms"] == terms) & df["block"].notna()]
    kinds = _kinds(d)
    table = d.pivot_table(index="block", columns="kind", values=metric, aggfunc="first").reindex(columns=kinds)
    log = metric == "rel_l2"
    vals = table.to_numpy(float)
    z = np.log10(np.where(vals > 0, vals, np.nan)) if log else vals
    text = [[("" if math.isnan(v) else f"{v:.3g}") for v in row] for row in vals]
    colorbar = {"title": {"text": "log10 error" if log else "dB"}}
    fig = go.Figure(go.Heatmap(
        z=z, x=kinds, y=[int(b) for b in table.index], text=text, colorscale="Viridis", reversescale=not log,
        colorbar=colorbar, hovertemplate="block %{y}, %{x}<br>" + ("relative error" if log else "SQNR")
        + ": %{text}<extra></extra>"))
    fig.update_layout(template=TEMPLATE, height=max(360, 16 * len(table) + 140),
                      title={"text": f"{'Relative output error' if log else 'Output SQNR'} of every Linear layer "
                             f"(fed its FP input), {terms} term{'s' if terms > 1 else ''}"},
                      margin={"t": 60, "r": 20, "b": 50, "l": 60})
    fig.update_xaxes(title_text="kind of layer", type="category")
    fig.update_yaxes(title_text="block", autorange="reversed")
    return fig


def outlier_scatter(df: pd.DataFrame, terms: int = 1) -> go.Figure:
    """One-layer relative error against the input's outlier statistic, one marker per layer, coloured by kind."""
    d = df[df["terms"] == terms]
    fig = go.Figure()
    for kind in _kinds(d):
        k = d[d["kind"] == kind]
        fig.add_trace(go.Scatter(x=k["outlier"], y=k["rel_l2"], mode="markers", name=kind, text=k["layer"],
                                 hovertemplate="%{text}<br>outlier %{x:.1f}<br>error %{y:.3g}<extra></extra>"))
    fig.update_layout(template=TEMPLATE, height=440, legend={"title": {"text": "kind"}},
                      title={"text": f"Why one-term activations fail where they fail ({terms} term"
                             f"{'s' if terms > 1 else ''})"}, margin={"t": 60, "r": 20, "b": 50, "l": 60})
    fig.update_xaxes(title_text="input outlier statistic: max |x| / median channel max (log)", type="log")
    fig.update_yaxes(title_text="relative output error (log)", type="log")
    return fig


LM_X = {"terms": "number of terms", "effective_bits": "effective bits per weight (incl. scales)",
        "bops_vs_fp": "BOPs per token vs FP (log)"}


def quality_vs_terms(df: pd.DataFrame, fp_value: float, metric: str = "ppl", x: str = "terms") -> go.Figure:
    """Perplexity (log axis) or STS-B Spearman of `fpxint.lm.sweep_lm` rows against terms / bits / BOPs, one line
    per W/A bit pair, the FP model as a dotted line: the language-model side of the accuracy-recovery figure."""
    fig = go.Figure()
    for (wb, ab), part in df.groupby(["w_bits", "a_bits"]):
        part = part.sort_values(x)
        fig.add_trace(go.Scatter(x=part[x], y=part[metric], mode="lines+markers", name=f"W{wb}A{ab}",
                                 text=part["config"], hovertemplate="%{text}<br>%{y:.4g}<extra></extra>"))
    fig.add_hline(y=fp_value, line={"dash": "dot", "color": "black"}, annotation_text=f"FP {fp_value:.4g}",
                  annotation_position="top left")
    ppl = metric == "ppl"
    fig.update_layout(template=TEMPLATE, height=440, legend={"title": {"text": "bits"}},
                      title={"text": f"{'Perplexity' if ppl else 'STS-B Spearman'} as terms are added "
                             f"(FP dotted{'; lower is better' if ppl else ''})"},
                      margin={"t": 60, "r": 20, "b": 50, "l": 60})
    fig.update_xaxes(title_text=LM_X[x], type="log" if x == "bops_vs_fp" else "linear",
                     dtick=1 if x == "terms" else None)
    fig.update_yaxes(title_text="perplexity (log)" if ppl else "Spearman", type="log" if ppl else "linear")
    return fig
