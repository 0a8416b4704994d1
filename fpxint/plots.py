"""Figures for the app, the CLI and notebooks: pure functions from tidy DataFrames to plotly figures.

Nothing here knows about Streamlit. Every figure has a title, labelled axes with units and hover
text; errors that span decades get a log axis. One palette (`BIT_COLORS`) gives each bit width the
same colour on every page. Figures use the plain "plotly" template so that Streamlit's theme
(light or dark) restyles them; colours that must survive the theme are set per trace.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import sample_colorscale
from plotly.subplots import make_subplots

# Okabe-Ito-style colour-blind-safe hues, readable on white and on Streamlit's dark background.
BIT_COLORS = {
    1: "#CC79A7", 2: "#D55E00", 3: "#E69F00", 4: "#009E73",
    5: "#56B4E9", 6: "#0072B2", 7: "#AA4499", 8: "#882255",
}
FP_COLOR = "#7F7F7F"  # the full-precision reference line
COMPARE_COLORS = ("#0072B2", "#D55E00")  # configuration A / B on the Compare page
TEMPLATE = "plotly"

METRICS = {  # column -> (axis title, log axis?)
    "rel_l2": ("relative L2 error (‖ΔW‖/‖W‖)", True),
    "sqnr_db": ("SQNR (dB, higher is better)", False),
    "max_abs": ("max |residual| (weight units)", True),
}


def bit_color(bits: int) -> str:
    """The colour of a bit width (the same on every page)."""
    return BIT_COLORS.get(int(bits), FP_COLOR)


def style(fig: go.Figure, title: str, x: str, y: str, *, log_y: bool | None = False, height: int = 420) -> go.Figure:
    """The house style of every figure here and in `fpxint.allocation.plots`: template, title, axis
    titles, margins. `log_y`: True / False set a log / linear y axis, None leaves its type alone
    (categorical axes, such as a heatmap's layer names)."""
    fig.update_layout(template=TEMPLATE, title={"text": title}, height=height, hovermode="closest",
                      legend={"title": {"text": ""}}, margin={"t": 60, "r": 20, "b": 50, "l": 60})
    fig.update_xaxes(title_text=x)
    fig.update_yaxes(title_text=y, **({} if log_y is None else {"type": "log" if log_y else "linear"}))
    return fig


def _tidy_log_axes(fig: go.Figure) -> go.Figure:
    """Log axes label every decade (or every few) when the data span several, else 1-2-5 ticks."""
    for axis, attr in (("yaxis", "y"), ("xaxis", "x")):
        layout_axis = fig.layout[axis]
        if layout_axis.type != "log":
            continue
        values = np.concatenate([np.asarray(getattr(t, attr), dtype=float).ravel() for t in fig.data
                                 if t.type in ("scatter", "bar") and getattr(t, attr) is not None
                                 and len(getattr(t, attr))] or [np.ones(1)])
        values = values[np.isfinite(values) & (values > 0)]
        span = np.log10(values.max() / values.min()) if len(values) else 0.0
        if span >= 2:
            layout_axis.update(exponentformat="power", dtick=max(1, int(span // 6)))
        else:  # within a decade or two: 1-2-5 ticks, each written out in full (no bare "2" or "5")
            layout_axis.update(dtick="D2", tickformat=".0e")
    return fig


def _metric_label(metric: str, space: str = "weight") -> tuple[str, bool]:
    title, log = METRICS[metric]
    if metric == "rel_l2" and space == "output":
        title = "relative L2 error (‖ΔY‖/‖Y‖)"
    return title, log


def _positive(values: pd.Series) -> pd.Series:
    """Exact zeros (a layer reproduced exactly) cannot sit on a log axis: clamp to a tiny floor."""
    return values.clip(lower=1e-12)


def worst_layers(df: pd.DataFrame, metric: str, term_col: str, n: int | None = None) -> list[str]:
    """The n layers with the largest error (lowest SQNR) at the largest number of terms.

    n defaults to a quarter of the layers, between 1 and 3.
    """
    last = df[df[term_col] == df[term_col].max()]
    n = n if n is not None else max(1, min(3, last["layer"].nunique() // 4))
    ordered = last.sort_values(metric, ascending=metric == "sqnr_db")
    return list(ordered["layer"].head(n))


def residual_heatmap(df: pd.DataFrame, metric: str = "rel_l2", space: str = "weight", highlight: Sequence[str] = ()) -> go.Figure:
    """Layer x term error map (weight_residuals or layer_output_errors output).

    The colour is log10 of the relative error (its ticks show the error itself), or SQNR in dB.
    `highlight` layers get a marker on the y axis labels (the worst layers).
    """
    term_col = "term" if "term" in df.columns else "terms"
    order = df.drop_duplicates("layer").sort_values("index")["layer"].tolist()
    table = df.pivot_table(index="layer", columns=term_col, values=metric, aggfunc="first").reindex(order)
    terms = [int(t) for t in table.columns]
    label, log = _metric_label(metric, space)
    z = np.log10(_positive(table.stack()).unstack().reindex(order).to_numpy(float)) if log else table.to_numpy(float)
    text = [[f"{v:.3g}" for v in row] for row in table.to_numpy(float)]
    ylabels = [f"⚠ {name}" if name in highlight else name for name in order]
    colorbar = {"title": {"text": "error" if log else "dB"}}
    if log:  # colour is log10(error): tick at 1, 2, 5 x 10^k inside the range (decades only when it is wide)
        zmin, zmax = np.nanmin(z), np.nanmax(z)
        steps = (1,) if zmax - zmin > 3 else (1, 2, 5)
        ticks = [math.log10(m) + k for k in range(math.floor(zmin), math.ceil(zmax) + 1) for m in steps
                 if zmin - 1e-9 <= math.log10(m) + k <= zmax + 1e-9]
        colorbar.update(tickvals=ticks, ticktext=[f"{10 ** t:.0e}" for t in ticks])
    fig = go.Figure(go.Heatmap(
        z=z, x=terms, y=ylabels, text=text, colorscale="Viridis", reversescale=not log, colorbar=colorbar,
        texttemplate="%{text}" if z.size <= 120 else None,
        hovertemplate=f"layer %{{y}}<br>terms %{{x}}<br>{label}: %{{text}}<extra></extra>"))
    space_name = "weights" if space == "weight" else "layer outputs"
    what = "Relative L2 error" if log else "SQNR"
    style(fig, f"{what} of {space_name}, per layer and number of terms",
            "number of terms", "layer", height=max(320, 26 * len(order) + 140))
    fig.update_xaxes(tickmode="array", tickvals=terms, type="category")
    fig.update_yaxes(autorange="reversed", type="category")
    return _tidy_log_axes(fig)


def residual_bars(df: pd.DataFrame, metric: str = "rel_l2", space: str = "weight", highlight: Sequence[str] = ()) -> go.Figure:
    """Grouped bars: each layer's error after each number of terms (log axis for relative errors)."""
    term_col = "term" if "term" in df.columns else "terms"
    label, log = _metric_label(metric, space)
    order = df.drop_duplicates("layer").sort_values("index")["layer"].tolist()
    terms = sorted(df[term_col].unique())
    ramp = sample_colorscale("Blues", list(np.linspace(0.4, 0.95, len(terms))))  # later terms: darker
    fig = go.Figure()
    for k, t in enumerate(terms):
        part = df[df[term_col] == t].set_index("layer").reindex(order)
        y = _positive(part[metric]) if log else part[metric]
        fig.add_bar(x=order, y=y, name=f"{t} term{'s' if t > 1 else ''}",
                    marker={"color": ramp[k],
                            "line": {"color": ["#D55E00" if n in highlight else "rgba(0,0,0,0)" for n in order],
                                     "width": 3}},
                    hovertemplate=f"%{{x}}<br>{t} terms: %{{y:.3g}}<extra></extra>")
    space_name = "weight" if space == "weight" else "output"
    style(fig, f"Per-layer {space_name} error by number of terms (worst layers outlined)", "layer", label, log_y=log)
    fig.update_layout(barmode="group")
    return _tidy_log_axes(fig)


def layer_detail(df: pd.DataFrame, layer: str, metric: str = "rel_l2", space: str = "weight") -> go.Figure:
    """One layer's error against the number of terms; in weight space also the proven max-abs bound."""
    term_col = "term" if "term" in df.columns else "terms"
    part = df[df["layer"] == layer].sort_values(term_col)
    label, log = _metric_label(metric, space)
    fig = go.Figure()
    color = bit_color(int(part["bits"].iloc[0])) if "bits" in part else COMPARE_COLORS[0]
    fig.add_scatter(x=part[term_col], y=_positive(part[metric]) if log else part[metric], mode="lines+markers",
                    name=f"measured {metric}", line={"color": color},
                    hovertemplate="terms %{x}<br>%{y:.3g}<extra></extra>")
    if space == "weight" and "bound" in part:
        fig.add_scatter(x=part[term_col], y=_positive(part["bound"]), mode="lines", name="proven bound on max |R|",
                        line={"color": FP_COLOR, "dash": "dash", "width": 5}, opacity=0.5,
                        hovertemplate="terms %{x}<br>bound %{y:.3g}<extra></extra>")
        fig.add_scatter(x=part[term_col], y=_positive(part["max_abs"]), mode="lines+markers", name="measured max |R|",
                        line={"color": color, "dash": "dot"}, hovertemplate="terms %{x}<br>max|R| %{y:.3g}<extra></extra>")
        log = True
        label = f"{label} / max |R| (weight units)" if metric != "sqnr_db" else label
    style(fig, f"Layer {layer}: error vs number of terms", "number of terms", label, log_y=log and metric != "sqnr_db")
    fig.update_xaxes(dtick=1)
    return _tidy_log_axes(fig)


def weight_convergence(df: pd.DataFrame, layer: str | None = None) -> go.Figure:
    """Measured max-abs weight residual vs terms, one colour per bit width, with the proven bound dashed.

    `df` holds weight_residuals rows for several bit widths (column `bits`); `layer=None` takes the
    largest residual over all layers at each term (the whole model's worst case).
    """
    fig = go.Figure()
    for bits, part in df.groupby("bits"):
        if layer is not None:
            part = part[part["layer"] == layer]
        agg = part.groupby("term").agg(max_abs=("max_abs", "max"), bound=("bound", "max")).reset_index()
        color = bit_color(bits)
        fig.add_scatter(x=agg["term"], y=_positive(agg["max_abs"]), mode="lines+markers", name=f"{bits}-bit measured",
                        line={"color": color}, legendgroup=str(bits),
                        hovertemplate=f"{bits}-bit, %{{x}} terms<br>max |R| %{{y:.3g}}<extra></extra>")
        fig.add_scatter(x=agg["term"], y=_positive(agg["bound"]), mode="lines", name=f"{bits}-bit bound",
                        line={"color": color, "dash": "dash", "width": 4}, opacity=0.6, legendgroup=str(bits),
                        hovertemplate=f"{bits}-bit, %{{x}} terms<br>bound %{{y:.3g}}<extra></extra>")
    where = f"layer {layer}" if layer else "worst layer"
    style(fig, f"Weight residual vs number of terms ({where}); dashed: proven bound",
            "number of terms", "max |residual| (weight units, log)", log_y=True)
    fig.update_xaxes(dtick=1)
    return _tidy_log_axes(fig)


def output_convergence(df: pd.DataFrame, metric: str = "rel_l2") -> go.Figure:
    """Network output error vs number of terms, one line per bit width (model_output_error rows + `bits`)."""
    label, log = _metric_label(metric, "output")
    fig = go.Figure()
    for bits, part in df.groupby("bits"):
        part = part.sort_values("terms")
        fig.add_scatter(x=part["terms"], y=_positive(part[metric]) if log else part[metric], mode="lines+markers",
                        name=f"W{bits}A{bits}", line={"color": bit_color(bits)},
                        hovertemplate=f"W{bits}A{bits}, %{{x}} terms<br>%{{y:.3g}}<extra></extra>")
    style(fig, "Model output vs FP, by number of terms", "number of terms", label.replace("ΔY‖/‖Y", "Δlogits‖/‖logits"),
            log_y=log)
    fig.update_xaxes(dtick=1)
    return _tidy_log_axes(fig)


X_AXES = {"terms": "number of terms", "bits_per_weight": "effective bits per weight (incl. scales)",
          "bops": "bit operations per image (BOPs, log)"}


def accuracy_recovery(df: pd.DataFrame, fp_value: float | None, x: str = "terms", y: str = "top1") -> go.Figure:
    """Top-1 (or agreement with FP) vs terms / bits per weight / BOPs, one line per bit width.

    The one-term points (plain round-to-nearest) are drawn as open diamonds; the FP model is a
    grey horizontal line.
    """
    ylabel = "top-1 accuracy (%)" if y == "top1" else "top-1 agreement with FP (%)"
    fig = go.Figure()
    for bits, part in df.groupby("w_bits"):
        part = part.sort_values("terms")
        color = bit_color(bits)
        custom = np.stack([part["terms"], part["bits_per_weight"], part["bops"]], axis=1)
        fig.add_scatter(x=part[x], y=part[y], mode="lines+markers", name=f"{bits}-bit terms",
                        line={"color": color}, customdata=custom, legendgroup=str(bits),
                        hovertemplate=(f"{bits}-bit x %{{customdata[0]}} terms<br>{ylabel}: %{{y:.2f}}"
                                       "<br>%{customdata[1]:.2f} bits/weight, %{customdata[2]:.3g} BOPs<extra></extra>"))
        one = part[part["terms"] == 1]
        if len(one):
            fig.add_scatter(x=one[x], y=one[y], mode="markers", name=f"{bits}-bit one term (RTN)", legendgroup=str(bits),
                            marker={"symbol": "diamond-open", "size": 13, "color": color, "line": {"width": 2}},
                            hovertemplate=f"{bits}-bit round-to-nearest (1 term)<br>%{{y:.2f}}<extra></extra>")
    if fp_value is not None:
        fig.add_hline(y=fp_value, line={"color": FP_COLOR, "dash": "dash"},
                      annotation_text=f"FP {fp_value:.2f} %", annotation_position="bottom right")
        fig.add_scatter(x=[None], y=[None], mode="lines", name="FP model", line={"color": FP_COLOR, "dash": "dash"})
    title = "Accuracy recovery" if y == "top1" else "Fidelity recovery (agreement with FP)"
    style(fig, f"{title} vs {X_AXES[x].split(' (')[0]}", X_AXES[x], ylabel, height=460)
    if x == "bops":
        fig.update_xaxes(type="log")
    elif x == "terms":
        fig.update_xaxes(dtick=1)
    return _tidy_log_axes(fig)


def equal_budget(df: pd.DataFrame, fp_value: float | None, y: str = "top1") -> go.Figure:
    """n terms of b bits against one term of n*b bits (same weight storage), grouped per budget.

    `df` columns: pair (x category, e.g. "W4x2 vs W8x1"), label ("W4x2", "W8x1"), kind ("series" /
    "single term"), w_bits, top1 / agreement.
    """
    ylabel = "top-1 accuracy (%)" if y == "top1" else "top-1 agreement with FP (%)"
    fig = go.Figure()
    for kind, pattern in (("series", ""), ("single term", "/")):
        part = df[df["kind"] == kind]
        fig.add_bar(x=part["pair"], y=part[y], name=f"{kind}", text=part["label"], textposition="outside",
                    marker={"color": [bit_color(b) for b in part["w_bits"]], "pattern": {"shape": pattern}},
                    hovertemplate="%{text}<br>" + ylabel + ": %{y:.2f}<extra></extra>")
    if fp_value is not None:
        fig.add_hline(y=fp_value, line={"color": FP_COLOR, "dash": "dash"}, annotation_text=f"FP {fp_value:.2f} %",
                      annotation_position="top left")
    style(fig, "Equal budget: n terms of b bits vs one term of n·b bits", "same weight storage (n·b bits per weight)",
            ylabel)
    fig.update_layout(barmode="group")
    fig.update_yaxes(range=[0, 1.12 * max(df[y].max(), fp_value or 0)])  # room for the labels above the bars
    return _tidy_log_axes(fig)


def term_histograms(terms: Sequence[np.ndarray], bits: int) -> go.Figure:
    """Histogram of the integers of each weight term Q_k (one panel per term)."""
    n = len(terms)
    fig = make_subplots(rows=1, cols=n, subplot_titles=[f"Q{k + 1}" for k in range(n)], shared_yaxes=True)
    for k, q in enumerate(terms):
        values, counts = np.unique(np.asarray(q).ravel(), return_counts=True)
        fig.add_bar(x=values, y=counts, name=f"Q{k + 1}", marker={"color": bit_color(bits)}, row=1, col=k + 1,
                    showlegend=False, hovertemplate=f"Q{k + 1} = %{{x}}: %{{y}} weights<extra></extra>")
        fig.update_xaxes(title_text="integer value", row=1, col=k + 1)
    style(fig, f"Integer values of each {bits}-bit weight term", "integer value", "", height=320)
    fig.update_yaxes(title_text="count (weights)", row=1, col=1)
    return _tidy_log_axes(fig)


def term_heatmaps(terms: Sequence[np.ndarray], bits: int) -> go.Figure:
    """Each weight term Q_k as a 2-D map (output channels x everything else)."""
    n = len(terms)
    fig = make_subplots(rows=1, cols=n, subplot_titles=[f"Q{k + 1}" for k in range(n)], horizontal_spacing=0.04)
    lim = 2 ** (bits - 1)
    for k, q in enumerate(terms):
        q2 = np.asarray(q).reshape(q.shape[0], -1)
        fig.add_heatmap(z=q2, zmin=-lim, zmax=lim, colorscale="RdBu", reversescale=True, row=1, col=k + 1,
                        showscale=k == n - 1, colorbar={"title": {"text": "integer"}},
                        hovertemplate=f"Q{k + 1}<br>out %{{y}}, in %{{x}}<br>value %{{z}}<extra></extra>")
        fig.update_xaxes(title_text="input x kernel position", row=1, col=k + 1)
    style(fig, "Weight terms as integer maps", "input x kernel position", "", height=380)
    fig.update_yaxes(title_text="output channel", row=1, col=1)
    fig.update_yaxes(autorange="reversed")
    return _tidy_log_axes(fig)


def term_scales(scales: Sequence[np.ndarray], bits: int) -> go.Figure:
    """Scale s_k of each term per output channel (per-tensor scales: one point per term); log axis."""
    fig = go.Figure()
    for k, s in enumerate(scales):
        s = np.asarray(s).ravel()
        shade = 1.0 - 0.6 * k / max(1, len(scales) - 1)
        fig.add_scatter(x=np.arange(len(s)), y=np.clip(s, 1e-30, None), mode="lines+markers" if len(s) > 1 else "markers",
                        name=f"s{k + 1}", line={"color": bit_color(bits)}, opacity=shade,
                        hovertemplate=f"s{k + 1}, channel %{{x}}: %{{y:.3g}}<extra></extra>")
    style(fig, "Scale of each term (each term's scale shrinks by about 2^b)", "output channel",
            "scale (weight units per integer step, log)", log_y=True, height=340)
    return _tidy_log_axes(fig)


def difference_bars(rows: pd.DataFrame) -> go.Figure:
    """max |difference| to the expanded model for each way of combining basis models (log axis).

    `rows` columns: method, max_abs_diff.
    """
    floor = 1e-18  # an exact 0 (integer mode) is drawn at this floor and labelled "0"
    y = rows["max_abs_diff"].clip(lower=floor)
    text = ["0 (exact)" if v == 0 else f"{v:.3g}" for v in rows["max_abs_diff"]]
    colors = [COMPARE_COLORS[0] if v < 1e-3 else COMPARE_COLORS[1] for v in rows["max_abs_diff"]]
    fig = go.Figure(go.Bar(x=rows["method"], y=y, text=text, textposition="outside", marker={"color": colors},
                           hovertemplate="%{x}<br>max |Δ| = %{text}<extra></extra>"))
    style(fig, "Max |output difference| to the expanded model", "how the basis models are combined",
            "max |Δ logits| (log)", log_y=True, height=360)
    return _tidy_log_axes(fig)


def law_bars(laws: pd.DataFrame) -> go.Figure:
    """Relative gap of each Abelian law on outputs, the whole network beside one layer alone (log axis).

    `laws` columns: level, law, rel_diff (`views.basis_laws`). An exact 0 is drawn at a floor, labelled "0".
    """
    floor = 1e-18
    fig = go.Figure()
    for k, (level, df) in enumerate(laws.groupby("level", sort=False)):
        text = ["0 (exact)" if v == 0 else f"{v:.2g}" for v in df["rel_diff"]]
        fig.add_bar(x=df["law"], y=df["rel_diff"].clip(lower=floor), name=level, text=text, textposition="outside",
                    marker={"color": COMPARE_COLORS[k % 2]},
                    hovertemplate=f"{level}<br>%{{x}}<br>relative gap %{{text}}<extra></extra>")
    style(fig, "Group laws on outputs: one layer holds them, a deep network does not",
            "law (left side vs right side)", "relative gap ‖lhs − rhs‖ / ‖rhs‖ (log)", log_y=True, height=400)
    fig.update_layout(barmode="group")
    return _tidy_log_axes(fig)


def compare_output_curves(curves: dict[str, pd.DataFrame], metric: str = "rel_l2") -> go.Figure:
    """Overlaid model-output error vs terms for several configurations ({label: model_output_error df})."""
    label, log = _metric_label(metric, "output")
    fig = go.Figure()
    for k, (name, df) in enumerate(curves.items()):
        df = df.sort_values("terms")
        fig.add_scatter(x=df["terms"], y=_positive(df[metric]) if log else df[metric], mode="lines+markers", name=name,
                        line={"color": COMPARE_COLORS[k % 2], "dash": "solid" if k == 0 else "dash"},
                        hovertemplate=f"{name}<br>%{{x}} terms: %{{y:.3g}}<extra></extra>")
    style(fig, "Model output error vs number of terms", "number of terms", label, log_y=log)
    fig.update_xaxes(dtick=1)
    return _tidy_log_axes(fig)


def compare_layer_bars(frames: dict[str, pd.DataFrame], metric: str = "rel_l2") -> go.Figure:
    """Per-layer weight error at each configuration's own number of terms, side by side."""
    label, log = _metric_label(metric, "weight")
    fig = go.Figure()
    for k, (name, df) in enumerate(frames.items()):
        last = df[df["term"] == df.groupby("layer")["term"].transform("max")].sort_values("index")
        fig.add_bar(x=last["layer"], y=_positive(last[metric]) if log else last[metric], name=name,
                    marker={"color": COMPARE_COLORS[k % 2]}, hovertemplate=f"{name}<br>%{{x}}: %{{y:.3g}}<extra></extra>")
    style(fig, "Per-layer weight error (all terms of each configuration)", "layer", label, log_y=log)
    fig.update_layout(barmode="group")
    return _tidy_log_axes(fig)
