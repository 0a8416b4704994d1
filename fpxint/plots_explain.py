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
    fig.update_layout(template="plotly_white", font=FONT, title={"text": title, "font": {"size": 21}, "x": 0.01},
                      height=height, margin={"t": 70, "r": 20, "b": 55, "l": 70}, paper_bgcolor="white",
                      plot_bgcolor="white", legend={"font": {"size": 15}})
    fig.update_annotations(font={"size": 16, "color": "#111111"})
    return fig


def _heat(fig, z: np.ndarray, row: int, col: int, hover: str) -> None:
    fig.add_heatmap(z=z, row=row, col=col, coloraxis="coloraxis", hoverongaps=False, hovertemplate=hover)


def _axes_off(fig: go.Figure) -> None:
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False)
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False, autorange="reversed", scaleanchor=None)


def _scale_text(s: np.ndarray) -> str:
    s = np.asarray(s).ravel()
    return f"s = {s[0]:.3g}" if len(s) == 1 else f"s = {s.min():.2g}…{s.max():.2g}"


def integer_terms(t: dict, shown: int = 3) -> go.Figure:
    """The first `shown` integer terms Q_k of a weight as maps, each titled with its integer range and scale.

    `t` is `explain.tensor_terms(...)`.
    """
    n = min(shown, len(t["terms"]))
    qs = [mosaic(q.astype(np.float64)) for q in t["terms"][:n]]
    lim = max(1.0, max(float(np.nanmax(np.abs(q))) for q in qs))
    titles = [f"Q{k + 1}: {int(np.nanmin(q))}…{int(np.nanmax(q))}, {_scale_text(t['scales'][k])}"
              for k, q in enumerate(qs)]
    fig = make_subplots(rows=1, cols=n, subplot_titles=titles, horizontal_spacing=0.03)
    for k, q in enumerate(qs):
        _heat(fig, q, 1, k + 1, f"Q{k + 1} = %{{z}}<extra></extra>")
    fig.update_layout(coloraxis={"colorscale": DIVERGING, "cmin": -lim, "cmax": lim,
                                 "colorbar": {"title": {"text": "integer"}, "thickness": 14}})
    _axes_off(fig)
    cut = " (first channels)" if t["cropped"] else ""
    return slide(fig, f"{t['layer']}: the first {n} integer terms, {t['bits']}-bit each{cut}", height=300)


def reconstruction(t: dict, k: int) -> go.Figure:
    """The weight, the sum of its first k terms, and what is left (W minus the sum), on one colour scale."""
    w, part, res = (mosaic(a) for a in (t["weight"], t["partials"][k - 1], t["residuals"][k - 1]))
    lim = float(np.nanmax(np.abs(w))) or 1.0
    max_r = float(t["norms"]["max_abs"].iloc[k - 1])
    sum_text = " + ".join(f"s{i + 1}·Q{i + 1}" for i in range(k)) if k <= 3 else f"s1·Q1 + … + s{k}·Q{k}"
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.03, subplot_titles=[
        "weight W (FP)", f"{sum_text}", f"residual W − sum: max {max_r:.2g}"])
    for c, z, name in ((1, w, "W"), (2, part, "sum"), (3, res, "residual")):
        _heat(fig, z, 1, c, f"{name} = %{{z:.3g}}<extra></extra>")
    fig.update_layout(coloraxis={"colorscale": DIVERGING, "cmin": -lim, "cmax": lim,
                                 "colorbar": {"title": {"text": "weight"}, "thickness": 14}})
    _axes_off(fig)
    return slide(fig, f"{k} term{'s' if k > 1 else ''}: the residual on the weight's own colour scale", height=320)


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
        return slide(fig, "The layer's output on one real input", height=330)
    maps = [mosaic(a[:, None]) for a in (fp, exp, exp - fp)]
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
    return slide(fig, "The layer's output on one real input (first channels)", height=330)


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
    slide(fig, "Output error per number of terms", height=300)
    fig.update_xaxes(title_text="number of terms", dtick=1)
    fig.update_yaxes(title_text="‖Y − Y_FP‖ / ‖Y_FP‖ (log)", type="log")
    return _tidy_log_axes(fig)


def flips(items: Sequence[dict], classes: Sequence[str] | None) -> go.Figure:
    """Images whose prediction comes back to the FP model's as terms are added, each titled with its story."""
    name = (lambda c: classes[c] if classes and c < len(classes) else str(c))
    n = max(1, len(items))
    titles = []
    for it in items:
        path = " → ".join(name(p) for p in it["preds"][: it["settles_at"]])
        truth = f"label {name(it['label'])}, " if it["label"] is not None else ""
        titles.append(f"{truth}FP {name(it['fp'])}<br>terms 1…{it['settles_at']}: {path}")
    fig = make_subplots(rows=1, cols=n, subplot_titles=titles or [""], horizontal_spacing=0.02)
    for c, it in enumerate(items, start=1):
        _image_trace(fig, it["image"], 1, c)
    fig.update_xaxes(showticklabels=False, showgrid=False)
    fig.update_yaxes(showticklabels=False, showgrid=False)
    slide(fig, "Predictions that return to FP's as terms are added", height=290)
    fig.update_annotations(font={"size": 14})
    fig.update_layout(margin={"t": 110})
    return fig


def cost_bars(df: pd.DataFrame, bits: int) -> go.Figure:
    """Bits per weight, integer GEMMs and BOPs (% of FP) per number of terms, side by side."""
    panels = (("bits_per_weight", "bits / weight", "%{y:.2f}"), ("int_gemms", "integer GEMMs / forward", "%{y}"),
              ("bops_vs_fp", "BOPs, % of FP", "%{y:.2f} %"))
    fig = make_subplots(rows=1, cols=3, subplot_titles=[p[1] for p in panels], horizontal_spacing=0.08)
    for c, (col, label, fmt) in enumerate(panels, start=1):
        y = df[col] * (100 if col == "bops_vs_fp" else 1)
        fig.add_bar(x=df["terms"], y=y, marker={"color": bit_color(bits)}, showlegend=False, row=1, col=c,
                    text=[fmt.replace("%{y:.2f}", f"{v:.2f}").replace("%{y}", f"{v:g}") for v in y],
                    textposition="outside", cliponaxis=False, hovertemplate=f"%{{x}} terms: {fmt}<extra></extra>")
        fig.update_xaxes(title_text="terms", dtick=1, row=1, col=c)
        fig.update_yaxes(range=[0, 1.2 * float(y.max())], row=1, col=c)
    return slide(fig, f"What each {bits}-bit term costs", height=330)
