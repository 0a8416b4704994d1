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
TITLE_FONT = {"size": 16, "color": "#111111"}  # panel titles
_AXIS = {"gridcolor": "#E5E5E5", "zerolinecolor": "#C8C8C8", "linecolor": "#C8C8C8"}
# A small template of our own instead of "plotly_white" (whose validation costs ~40 ms per figure, and the
# terms sliders redraw figures on every move); it also keeps Streamlit's template out of the slides.
TEMPLATE = {"layout": {"xaxis": _AXIS, "yaxis": _AXIS, "hoverlabel": {"font": {"size": 15}},
                       "colorway": ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9"]}}
DIVERGING = "RdBu_r"  # red positive, blue negative, white 0: readable on projectors and in print
SHOWN = "#0072B2"     # the highlighted layer / the expanded model
OTHER = "#BBBBBB"     # every other layer


def _style(title: str, height: int) -> dict:
    return {"template": TEMPLATE, "font": FONT, "title": {"text": title, "font": {"size": 19}, "x": 0.01},
            "height": height, "margin": {"t": 64, "r": 20, "b": 55, "l": 70}, "paper_bgcolor": "white",
            "plot_bgcolor": "white", "legend": {"font": {"size": 15}}}


def slide(fig: go.Figure, title: str, height: int = 360) -> go.Figure:
    """Projector styling: white background, large dark type, room for the title (one layout update: plotly's
    per-call validation is most of a figure's build time)."""
    fig.update_layout(**_style(title, height), annotations=[{**a.to_plotly_json(), "font": TITLE_FONT}
                                                            for a in fig.layout.annotations])
    return fig


def _rows_of_maps(rows: Sequence[tuple[Sequence[np.ndarray], str, str]], titles: Sequence[str], aspect: float,
                  axes: str = "") -> tuple[list[dict], list[dict], list[list[int]]]:
    """Map panels (heatmaps) laid out in rows on ONE pair of axes: each row is one heatmap trace, its maps side
    by side, NaN columns apart; the rows are stacked with room for the panels' titles (annotations in data
    coordinates, so they follow the square-pixel scaling).

    One trace per row because the browser draws every heatmap trace on a canvas of its own and a slider move
    redraws the whole figure: six panels as two traces draw in about half the time of six traces on six
    subplots (measured in Chromium). `rows`: (maps, coloraxis, hovertemplate) per row; `aspect`: about the
    plot area's width / height, which the gaps widen the rows to (narrow maps then spread out, leaving their
    titles room, as panels on subplots of their own would). Returns the traces,
    the title annotations and, per panel in order, [trace index, first column, rows, columns] of its block in
    that trace's z (the figure's layout.meta keeps them, so that a panel can be read back).
    """
    h = max(m.shape[0] for maps, _, _ in rows for m in maps)
    wd = max(m.shape[1] for maps, _, _ in rows for m in maps)
    vgap = max(2, round(0.3 * h))  # a title line between the rows
    n = max(len(maps) for maps, _, _ in rows)
    height = len(rows) * h + (len(rows) - 1) * vgap
    gap = max(2, round(0.35 * wd), round((aspect * height - n * wd) / max(1, n - 1)))
    traces, notes, panels, y0 = [], [], [], 0
    for r, (maps, coloraxis, hover) in enumerate(rows):
        z = np.full((h, len(maps) * (wd + gap) - gap), np.nan)
        for i, m in enumerate(maps):
            x = i * (wd + gap)
            z[: m.shape[0], x: x + m.shape[1]] = m
            panels.append([r, x, m.shape[0], m.shape[1]])
            notes.append({"text": titles[len(panels) - 1], "x": x + (m.shape[1] - 1) / 2, "y": y0 - 0.5,
                          "xref": f"x{axes}", "yref": f"y{axes}", "xanchor": "center", "yanchor": "bottom",
                          "showarrow": False, "font": TITLE_FONT})
        traces.append({"type": "heatmap", "z": z, "y0": y0, "coloraxis": coloraxis, "hoverongaps": False,
                       "hovertemplate": hover, "xaxis": f"x{axes}", "yaxis": f"y{axes}"})
        y0 += h + vgap
    return traces, notes, panels


def _map_axes(n: str = "", domain: Sequence[float] = (0.0, 1.0)) -> dict:
    """Axes for map panels: square pixels, rows top to bottom, no ticks or grid."""
    off = {"showticklabels": False, "showgrid": False, "zeroline": False, "ticks": "", "constrain": "domain"}
    return {f"xaxis{n}": {**off, "domain": list(domain), "anchor": f"y{n}"},
            f"yaxis{n}": {**off, "anchor": f"x{n}", "autorange": "reversed", "scaleanchor": f"x{n}"}}


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
    titles += ["weight W (FP)", sum_text, f"residual W − sum: max {max_r:.2g}"]
    traces, notes, panels = _rows_of_maps(
        [(qs, "coloraxis2", "integer term: %{z}<extra></extra>"),
         ([w, part, res], "coloraxis", "%{z:.3g}<extra></extra>")], titles, aspect=2.4)
    layout = {**_map_axes(), "annotations": notes, "meta": {"panels": panels},
              "coloraxis": {"colorscale": DIVERGING, "cmin": -w_lim, "cmax": w_lim,
                            "colorbar": {"title": {"text": "weight"}, "thickness": 14, "len": 0.45, "y": 0.22}},
              "coloraxis2": {"colorscale": DIVERGING, "cmin": -q_lim, "cmax": q_lim,
                             "colorbar": {"title": {"text": "integer"}, "thickness": 14, "len": 0.45, "y": 0.78}}}
    cut = ", first channels" if t["cropped"] else ""
    title = f"{t['layer']}{cut}: {t['bits']}-bit integer terms, and the sum of the first {k}"
    return go.Figure(data=traces, layout={**_style(title, 400), **layout})


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
    titles = ["FP output", f"{k} term{'s' if k > 1 else ''}",  # two lines: the panels are narrow
              f"difference<br>max {float(np.nanmax(np.abs(maps[2]))):.2g}"]
    traces, notes, panels = _rows_of_maps([(maps, "coloraxis", "%{z:.3g}<extra></extra>")], titles, aspect=1.3,
                                          axes="2")
    img = {"type": "image", "z": image, "hoverinfo": "skip"}
    notes.append({"text": caption, "x": (image.shape[1] - 1) / 2, "y": -0.5, "xref": "x", "yref": "y",
                  "xanchor": "center", "yanchor": "bottom", "showarrow": False, "font": TITLE_FONT})
    layout = {**_map_axes("", (0.0, 0.19)), **_map_axes("2", (0.23, 1.0)), "annotations": notes,
              "meta": {"panels": [[p[0] + 1, *p[1:]] for p in panels]},  # trace 0 is the image
              "coloraxis": {"colorscale": DIVERGING, "cmin": -lim, "cmax": lim,
                            "colorbar": {"title": {"text": "output"}, "thickness": 14}}}
    return go.Figure(data=[img, *traces], layout={**_style("FP output, expanded output, difference (first channels)",
                                                            400), **layout})


def layer_errors(errors: pd.DataFrame, image: int, k: int | None = None) -> go.Figure:
    """Relative error of the layer's output per number of terms (log): the layer alone, and inside the model.

    `k` marks that number of terms; the Explain page leaves it out, so the figure is the same for every k and the
    browser keeps it drawn while the terms slider moves. Built as one dict (plotly validates it once)."""
    part = errors[errors["image"] == image]
    data = []
    for kind, dash, color in (("isolated", "solid", SHOWN), ("end to end", "dot", "#D55E00")):
        d = part[part["kind"] == kind].sort_values("terms")
        name = "this layer alone (FP input)" if kind == "isolated" else "inside the expanded model"
        data.append({"type": "scatter", "x": d["terms"].to_numpy(), "y": d["rel_l2"].clip(lower=1e-12).to_numpy(),
                     "mode": "lines+markers", "name": name, "line": {"color": color, "dash": dash, "width": 3},
                     "marker": {"size": 10}, "hovertemplate": f"{name}<br>%{{x}} terms: %{{y:.3g}}<extra></extra>"})
    shapes = [] if k is None else [{"type": "line", "x0": k, "x1": k, "xref": "x", "y0": 0, "y1": 1, "yref": "paper",
                                    "line": {"color": FP_COLOR, "dash": "dash"}}]
    layout = {**_style("Output error per term", 400), "shapes": shapes,
              "legend": {"orientation": "h", "y": -0.32, "x": 0, "font": {"size": 15}},
              "xaxis": {"title": {"text": "number of terms"}, "dtick": 1},
              "yaxis": {"title": {"text": "‖Y − Y_FP‖ / ‖Y_FP‖ (log)"}, "type": "log", "exponentformat": "power",
                        "dtick": 1}}
    layout["margin"] = {**layout["margin"], "b": 110}
    return go.Figure(data=data, layout=layout)


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
