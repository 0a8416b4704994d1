"""Figures for per-layer term allocation (fpxint.allocation): pure functions DataFrame -> plotly Figure.

- `term_map`: weight and activation terms of every layer, in network order, against the uniform count;
- `cost_curve`: accuracy (or fidelity) against cost, uniform terms as a line, allocations as stars;
- `sensitivity_heatmap`: output SQNR when only one layer (one side) is expanded, layer x terms.

Nothing here knows about Streamlit; colours come from `fpxint.plots` so every page agrees.
"""
from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..plots import COMPARE_COLORS, FP_COLOR, style

W_COLOR, A_COLOR = COMPARE_COLORS  # weights / activations, and uniform / allocated on the curve
COST_TITLES = {"int_gemms": "integer GEMMs per forward", "bops": "bit-operations per image (BOPs)",
               "bops_vs_fp": "BOPs, fraction of FP", "weight_bits": "weight storage (bits)"}


def term_map(layers: pd.DataFrame, uniform: tuple[int, int] | None = None) -> go.Figure:
    """Terms per layer in network order: grouped bars for weights and activations.

    Args:
        layers: `Allocation.layers` (layer, w_terms, a_terms, w_bits, a_bits, int_gemms, bops).
        uniform: the uniform (weight, activation) term counts, drawn as dashed reference lines.
    """
    share = 100 * layers.bops / max(float(layers.bops.sum()), 1.0)
    hover = [f"{r.layer}<br>W{r.w_bits} x {r.w_terms} terms, A{r.a_bits} x {r.a_terms} terms<br>"
             f"{int(r.int_gemms)} integer GEMMs, {s:.1f} % of the BOPs" for r, s in zip(layers.itertuples(), share)]
    fig = go.Figure()
    for col, name, color in (("w_terms", "weight terms", W_COLOR), ("a_terms", "activation terms", A_COLOR)):
        fig.add_bar(x=layers.layer, y=layers[col], name=name, marker_color=color, hovertext=hover,
                    hoverinfo="text+y")
    if uniform is not None:
        lines = ([(uniform[0], "uniform: {} terms", FP_COLOR)] if uniform[0] == uniform[1] else
                 [(uniform[0], "uniform weight terms: {}", W_COLOR),
                  (uniform[1], "uniform activation terms: {}", A_COLOR)])
        for k, text, color in lines:
            fig.add_hline(y=k, line_dash="dash", line_color=color, opacity=0.7, annotation_text=text.format(k),
                          annotation_position="top right")
    fig.update_layout(barmode="group")
    fig.update_xaxes(tickangle=-45, categoryorder="array", categoryarray=list(layers.layer))
    return style(fig, "Terms per layer (network order)", "layer", "terms", log_y=None)


def cost_curve(curve: pd.DataFrame, x: str = "int_gemms", y: str = "top1") -> go.Figure:
    """Accuracy against cost: uniform terms (line, labelled k), allocations (stars), FP (dashed).

    Args:
        curve: `allocate.cost_accuracy_curve` output.
        x: a cost column (int_gemms, bops, bops_vs_fp, weight_bits).
        y: top1, agreement (% same top-1 as FP) or sqnr_db.
    """
    y_title = {"top1": "top-1 (%)", "agreement": "agreement with FP (% same top-1)",
               "sqnr_db": "model-output SQNR (dB)"}.get(y, y)
    fig = go.Figure()
    fp = curve[curve.kind == "fp"]
    fp_y = fp[y].iloc[0] if len(fp) and fp[y].notna().all() else None
    if fp_y is not None and math.isfinite(fp_y):
        fig.add_hline(y=fp_y, line_dash="dash", line_color=FP_COLOR, annotation_text=f"FP {fp_y:.2f}",
                      annotation_position="bottom left")
    uni = curve[curve.kind == "uniform"].sort_values(x)
    fig.add_scatter(x=uni[x], y=uni[y], mode="lines+markers+text", name="uniform terms", line_color=W_COLOR,
                    text=[f"{int(k)}" for k in uni.terms], textposition="top left",
                    hovertext=uni.label, hoverinfo="text+x+y")
    alloc = curve[curve.kind == "allocated"].sort_values(x)
    fig.add_scatter(x=alloc[x], y=alloc[y], mode="markers", name="allocated", hovertext=alloc.label,
                    hoverinfo="text+x+y", marker={"symbol": "star", "size": 14, "color": A_COLOR})
    if x in ("bops", "weight_bits"):
        fig.update_xaxes(type="log")
    return style(fig, f"{y_title.split(' (')[0]} against cost: uniform vs allocated", COST_TITLES.get(x, x), y_title,
                 log_y=None)


def sensitivity_heatmap(sens: pd.DataFrame) -> go.Figure:
    """Output SQNR (dB) when only one layer is expanded, one panel per side, layers in network order."""
    sides = [s for s in ("weight", "activation", "both") if s in set(sens.side)]
    fig = make_subplots(rows=1, cols=len(sides), shared_yaxes=True, subplot_titles=[f"{s} terms" for s in sides],
                        horizontal_spacing=0.04)
    order = sens.drop_duplicates("layer").sort_values("index").layer.tolist()
    for i, side in enumerate(sides, start=1):
        t = sens[sens.side == side].pivot_table(index="layer", columns="terms", values="sqnr_db").reindex(order)
        z = t.clip(upper=120).to_numpy()
        fig.add_heatmap(z=z, x=[str(c) for c in t.columns], y=order, coloraxis="coloraxis",
                        hovertemplate="%{y}<br>%{x} terms<br>%{z:.1f} dB<extra>" + side + "</extra>", row=1, col=i)
        fig.update_xaxes(title_text="terms", row=1, col=i)
    fig.update_layout(coloraxis={"colorscale": "Viridis", "colorbar": {"title": {"text": "dB"}}})
    fig.update_yaxes(autorange="reversed")
    return style(fig, "Model-output SQNR with only one layer expanded (others FP)", "terms", "", log_y=None,
                 height=max(360, 18 * len(order) + 120))
