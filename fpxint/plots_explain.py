"""Figures of the Explain page: pure functions from arrays and DataFrames (fpxint.explain) to plotly figures.

Made for a projector and for slides: white background, dark text, large type, one idea per figure.
Weights, partial sums and residuals share one diverging colour scale centred on 0 (so the residual
visibly fades as terms are added); integer terms use their own integer scale. Nothing here knows
about Streamlit.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .explain import mosaic
from .plots import FP_COLOR, _tidy_log_axes, bit_color

FONT = {"size": 17, "color": "#111111", "family": "Arial, Helvetica, sans-serif"}
DIVERGING = "RdBu_r"  # red positive, blue negative, white 0: readable on projectors and in print
SHOWN = "#0072B2"     # the highlighted layer / the expanded model
OTHER = "#BBBBBB"     # every other layer


def slide(fig: go.Figure, title: str, height: int = 360) -> go.Figure:
    """Projector styling: white template, large dark type, room for the title."""
    fig.update_layout(template="plotly_white", font=FONT, title={"text": title, "font": {"size": 19}, "x": 0.01},
                      height=height, margin={"t": 64, "r": 20, "b": 55, "l": 70}, paper_bgcolor="white",
                      plot_bgcolor="white", legend={"font": {"size": 15}})
    fig.update_annotations(font={"size": 16, "color": "#111111"})
    return fig


def _heat(fig, z: np.ndarray, row: int, col: int, hover: str) -> None:
    fig.add_heatmap(z=z, row=row, col=col, coloraxis="coloraxis", hoverongaps=False, hovertemplate=hover)


def _axes_off(fig: go.Figure) -> None:
    """Map panels: no ticks, first row on top, square pixels (each y axis locked to its own x axis)."""
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False, constrain="domain")
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False, autorange="reversed", constrain="domain")
    fig.for_each_yaxis(lambda ax: ax.update(scaleanchor=ax.anchor) if ax.anchor else None)


def _scale_text(s: np.ndarray) -> str:
    s = np.asarray(s).ravel()
    return f"s = {s[0]:.2g}" if len(s) == 1 else f"s ≈ {np.median(s):.2g}"  # per channel: the median scale


def tensor_terms(t: dict, k: int, shown: int = 3) -> go.Figure:
    """Top: the first `shown` integer terms Q_k, each titled with its integer range and scale. Bottom: the
    weight, the sum of its first k terms and the residual W - sum, all three on the weight's colour scale.

    `t` is `explain.tensor_terms(...)`.
    """
    n = min(shown, len(t["terms"]))
    qs = [mosaic(q.astype(np.float64)) for q in t["terms"][:n]]
    w, part, res = (mosaic(a) for a in (t["weight"], t["partials"][k - 1], t["residuals"][k - 1]))
    q_lim = max(1.0, max(float(np.nanmax(np.abs(q))) for q in qs))
    w_lim = float(np.nanmax(np.abs(w))) or 1.0
    max_r = float(t["norms"]["max_abs"].iloc[k - 1])
    sum_text = " + ".join(f"s{i + 1}·Q{i + 1}" for i in range(k)) if k <= 3 else f"s1·Q1 + … + s{k}·Q{k}"
    titles = [f"Q{i + 1}: {int(np.nanmin(q))}…{int(np.nanmax(q))}, {_scale_text(t['scales'][i])}" for i, q in enumerate(qs)]
    titles += [""] * (3 - n) + ["weight W (FP)", sum_text, f"residual W − sum: max {max_r:.2g}"]
    fig = make_subplots(rows=2, cols=3, subplot_titles=titles, horizontal_spacing=0.03, vertical_spacing=0.1)
    for i, q in enumerate(qs):
        fig.add_heatmap(z=q, row=1, col=i + 1, coloraxis="coloraxis2", hoverongaps=False,
                        hovertemplate=f"Q{i + 1} = %{{z}}<extra></extra>")
    for c, z, name in ((1, w, "W"), (2, part, "sum"), (3, res, "residual")):
        _heat(fig, z, 2, c, f"{name} = %{{z:.3g}}<extra></extra>")
    fig.update_layout(
        coloraxis={"colorscale": DIVERGING, "cmin": -w_lim, "cmax": w_lim,
                   "colorbar": {"title": {"text": "weight"}, "thickness": 14, "len": 0.45, "y": 0.22}},
        coloraxis2={"colorscale": DIVERGING, "cmin": -q_lim, "cmax": q_lim,
                    "colorbar": {"title": {"text": "integer"}, "thickness": 14, "len": 0.45, "y": 0.78}})
    _axes_off(fig)
    cut = ", first channels" if t["cropped"] else ""
    return slide(fig, f"{t['layer']}{cut}: {t['bits']}-bit integer terms, and the sum of the first {k}", height=400)


def residual_vs_bound(all_layers: pd.DataFrame, t: dict) -> go.Figure:
    """max |residual| per term on a log axis for every layer (grey), the shown layer (blue) and its bound (dashed)."""
    fig = go.Figure()
    others = [(name, part) for name, part in all_layers.groupby("layer", sort=False) if name != t["layer"]]
    for i, (name, part) in enumerate(others):
        fig.add_scatter(x=part["term"], y=part["max_abs"].clip(lower=1e-12), mode="lines", name="other layers",
                        line={"color": OTHER, "width": 2}, legendgroup="other", showlegend=i == 0,
                        hovertemplate=f"{name}<br>%{{x}} terms: %{{y:.3g}}<extra></extra>")
    norms = t["norms"]
    fig.add_scatter(x=norms["term"], y=norms["bound"], mode="lines", name="proven bound f^k · max|W|",
                    line={"color": "#111111", "dash": "dash", "width": 3},
                    hovertemplate="bound after %{x} terms: %{y:.3g}<extra></extra>")
    fig.add_scatter(x=norms["term"], y=norms["max_abs"].clip(lower=1e-12), mode="lines+markers",
                    name=f"{t['layer']} (measured)", line={"color": SHOWN, "width": 4}, marker={"size": 11},
                    hovertemplate="measured after %{x} terms: %{y:.3g}<extra></extra>")
    slide(fig, f"max |residual| falls by at least {t['contraction_text'].split('=')[-1].strip()} per term",
          height=420)
    fig.update_xaxes(title_text="number of terms k", dtick=1)
    fig.update_yaxes(title_text="max |W − sum of k terms| (log)", type="log")
    return _tidy_log_axes(fig)


def _image_trace(fig, img: np.ndarray, row: int, col: int) -> None:
    fig.add_trace(go.Image(z=img, hoverinfo="skip"), row=row, col=col)


def layer_io(image: np.ndarray, fp: np.ndarray, exp: np.ndarray, k: int, caption: str) -> go.Figure:
    """The input image, then the layer's FP output, its output with k terms, and the difference (one colour scale).

    Conv outputs [C, H, W] show their channels as a grid of maps; vectors (a linear layer) show as bars.
    """
    if fp.ndim == 1:
        fig = make_subplots(rows=1, cols=2, column_widths=[0.25, 0.75], horizontal_spacing=0.06,
                            subplot_titles=[caption, f"outputs: FP and {k} term{'s' if k > 1 else ''}"])
        _image_trace(fig, image, 1, 1)
        x = np.arange(len(fp))
        fig.add_bar(x=x, y=fp, name="FP", marker={"color": FP_COLOR}, row=1, col=2)
        fig.add_bar(x=x, y=exp, name=f"{k} terms", marker={"color": SHOWN}, row=1, col=2)
        fig.update_layout(barmode="group")
        fig.update_xaxes(title_text="output", row=1, col=2)
        fig.update_xaxes(showticklabels=False, row=1, col=1)
        fig.update_yaxes(showticklabels=False, row=1, col=1)
        return slide(fig, "The layer's output on one real input", height=400)
    maps = [mosaic(a[:, None], aspect=0.6) for a in (fp, exp, exp - fp)]  # tall, narrow panels
    lim = float(np.nanmax(np.abs(maps[0]))) or 1.0
    fig = make_subplots(rows=1, cols=4, horizontal_spacing=0.03, column_widths=[0.19, 0.27, 0.27, 0.27],
                        subplot_titles=[caption, "FP output", f"{k} term{'s' if k > 1 else ''}",
                                        f"difference: max {float(np.nanmax(np.abs(maps[2]))):.2g}"])
    _image_trace(fig, image, 1, 1)
    for c, z, name in ((2, maps[0], "FP"), (3, maps[1], "expanded"), (4, maps[2], "difference")):
        _heat(fig, z, 1, c, f"{name} = %{{z:.3g}}<extra></extra>")
    fig.update_layout(coloraxis={"colorscale": DIVERGING, "cmin": -lim, "cmax": lim,
                                 "colorbar": {"title": {"text": "output"}, "thickness": 14}})
    _axes_off(fig)
    return slide(fig, "FP output, expanded output, difference (first channels)", height=400)


def layer_errors(errors: pd.DataFrame, image: int, k: int | None = None) -> go.Figure:
    """Relative error of the layer's output per number of terms (log): the layer alone, and inside the model."""
    fig = go.Figure()
    part = errors[errors["image"] == image]
    for kind, dash in (("isolated", "solid"), ("end to end", "dot")):
        d = part[part["kind"] == kind].sort_values("terms")
        name = "this layer alone (FP input)" if kind == "isolated" else "inside the expanded model"
        fig.add_scatter(x=d["terms"], y=d["rel_l2"].clip(lower=1e-12), mode="lines+markers", name=name,
                        line={"color": SHOWN if kind == "isolated" else "#D55E00", "dash": dash, "width": 3},
                        marker={"size": 10}, hovertemplate=f"{name}<br>%{{x}} terms: %{{y:.3g}}<extra></extra>")
    if k is not None:
        fig.add_vline(x=k, line={"color": FP_COLOR, "dash": "dash"})
    slide(fig, "Output error per term", height=400)
    fig.update_layout(legend={"orientation": "h", "y": -0.25, "x": 0})
    fig.update_xaxes(title_text="number of terms", dtick=1)
    fig.update_yaxes(title_text="‖Y − Y_FP‖ / ‖Y_FP‖ (log)", type="log")
    return _tidy_log_axes(fig)


def flips(items: Sequence[dict], classes: Sequence[str] | None) -> go.Figure:
    """Images whose prediction comes back to the FP model's as terms are added; each titled with its
    label and FP's answer, then the prediction with 1, 2, ... terms up to where it stays at FP's."""
    name = (lambda c: classes[c] if classes and c < len(classes) and len(classes[c]) <= 10 else str(c))
    cols = min(3, max(1, len(items)))
    rows = max(1, -(-len(items) // cols))
    titles = []
    for it in items:
        truth = f"label {name(it['label'])}, " if it["label"] is not None else ""
        titles.append(f"{truth}FP {name(it['fp'])}<br><b>{' → '.join(name(p) for p in it['preds'][: it['settles_at']])}</b>")
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles or [""], horizontal_spacing=0.04,
                        vertical_spacing=0.2)
    for i, it in enumerate(items):
        _image_trace(fig, it["image"], i // cols + 1, i % cols + 1)
    fig.update_xaxes(showticklabels=False, showgrid=False)
    fig.update_yaxes(showticklabels=False, showgrid=False)
    slide(fig, "Back to FP's answer, term by term", height=440)
    fig.update_annotations(font={"size": 15})
    fig.update_layout(margin={"t": 110, "l": 10, "r": 10, "b": 10})
    return fig


def equal_budget(budget: pd.DataFrame, fp_value: float | None, y: str = "top1") -> go.Figure:
    """The series against one term of the same storage: one marker each, labelled, on a zoomed axis, FP dashed.

    `budget` is `explain.model_story(...)["budget"]` (two rows: series, single term).
    """
    ylabel = "top-1 (%)" if y == "top1" else "agreement with FP (%)"
    fig = go.Figure()
    for (_, r), color in zip(budget.iterrows(), (bit_color(budget["w_bits"].iloc[0]), "#882255")):
        x = f"{r['label']}<br>({'series' if r['kind'] == 'series' else 'one term'})"
        fig.add_scatter(x=[x], y=[r[y]], mode="markers+text", marker={"size": 26, "color": color},
                        text=[f"{r[y]:.2f} %"], textposition="middle right", showlegend=False,
                        hovertemplate=(f"{r['label']}: %{{y:.2f}} %<br>{r['bits_per_weight']:.2f} bits/weight, "
                                       f"{r['int_gemms']} integer GEMMs, {r['bops']:.3g} BOPs<extra></extra>"))
    values = list(budget[y]) + ([fp_value] if fp_value is not None else [])
    lo, hi = min(values), max(values)
    pad = max(0.5, 0.3 * (hi - lo))
    if fp_value is not None:
        fig.add_hline(y=fp_value, line={"color": FP_COLOR, "dash": "dash", "width": 2},
                      annotation_text=f"FP {fp_value:.2f} %", annotation_position="top left")
    slide(fig, f"Equal budget: {budget['bits_per_weight'].iloc[0]:.1f} bits / weight", height=330)
    fig.update_yaxes(title_text=ylabel + ", zoomed", range=[lo - pad, min(100.5, hi + pad)])
    fig.update_xaxes(range=[-0.5, 1.9])
    fig.update_layout(margin={"t": 50, "b": 60})
    return fig


def cost_bars(df: pd.DataFrame, bits: int) -> go.Figure:
    """Bits per weight, integer GEMMs and BOPs (% of FP) per number of terms, side by side."""
    panels = (("bits_per_weight", "bits / weight", "%{y:.2f}"), ("int_gemms", "integer GEMMs", "%{y}"),
              ("bops_vs_fp", "BOPs, % of FP", "%{y:.2f} %"))
    fig = make_subplots(rows=1, cols=3, subplot_titles=[p[1] for p in panels], horizontal_spacing=0.08)
    for c, (col, label, fmt) in enumerate(panels, start=1):
        y = df[col] * (100 if col == "bops_vs_fp" else 1)
        fig.add_bar(x=df["terms"], y=y, marker={"color": bit_color(bits)}, showlegend=False, row=1, col=c,
                    text=[f"{v:.3g}" for v in y], textposition="outside", textfont={"size": 15}, cliponaxis=False,
                    hovertemplate=f"%{{x}} terms: {fmt}<extra></extra>")
        fig.update_xaxes(title_text="terms" if c == 2 else None, dtick=1, row=1, col=c)
        fig.update_yaxes(range=[0, 1.2 * float(y.max())], row=1, col=c)
    slide(fig, f"What each {bits}-bit term costs", height=330)
    fig.update_layout(margin={"t": 64, "b": 45})
    return fig
