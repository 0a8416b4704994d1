"""Plots are pure functions: DataFrames in, plotly figures out, with titles, axis labels and log axes."""
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from fpxint import plots

LAYERS = ["conv1", "conv2", "conv3", "conv4", "fc"]


def _weight_df(bits=(4,), terms=3):
    rows = []
    for b in bits:
        for i, layer in enumerate(LAYERS):
            for t in range(1, terms + 1):
                err = (0.1 + 0.01 * i) / (2**b - 2) ** (t - 1)
                rows.append(dict(layer=layer, index=i, term=t, bits=b, max_abs=err, rel_l2=err * 1.5,
                                 sqnr_db=-20 * np.log10(err * 1.5), bound=err * 2, params=100))
    return pd.DataFrame(rows)


def _output_df(bits=(2, 3, 4), terms=4):
    return pd.DataFrame([dict(terms=t, bits=b, rel_l2=0.3 / (2**b) ** (t - 1), sqnr_db=10.0 * t, cosine=1.0,
                              agreement=1.0, kl=0.01) for b in bits for t in range(1, terms + 1)])


def _grid_df(bits=(2, 3, 4), terms=3):
    return pd.DataFrame([dict(w_bits=b, a_bits=b, terms=t, top1=90 - 30 / (b * t), fp_top1=90.0, agreement=95.0,
                              kl=0.1, n_images=100, seconds=0.1, config="{}", bits_per_weight=b * t + 0.3,
                              bops=1e6 * b * b * t * t) for b in bits for t in range(1, terms + 1)])


def _titles(fig: go.Figure) -> tuple[str, str, str]:
    return fig.layout.title.text, fig.layout.xaxis.title.text, fig.layout.yaxis.title.text


def _check_labelled(fig: go.Figure) -> None:
    assert isinstance(fig, go.Figure)
    title, x, y = _titles(fig)
    assert title and x and y, (title, x, y)
    assert all(t.hovertemplate for t in fig.data if t.x is not None and len([v for v in t.x if v is not None])), \
        "every data trace has hover text"


def test_palette_is_one_colour_per_bit_width():
    assert len(set(plots.BIT_COLORS.values())) == 8
    assert plots.bit_color(4) == plots.BIT_COLORS[4]


@pytest.mark.parametrize("metric,log", [("rel_l2", True), ("sqnr_db", False)])
def test_residual_heatmap(metric, log):
    df = _weight_df()
    worst = plots.worst_layers(df, metric, "term")
    assert worst == ["fc"]  # 5 layers: a quarter, at least 1
    fig = plots.residual_heatmap(df, metric, "weight", worst)
    _check_labelled(fig)
    assert len(fig.data) == 1 and fig.data[0].type == "heatmap"
    assert fig.data[0].z.shape == (len(LAYERS), 3)
    assert any(y.startswith("⚠") and "fc" in y for y in fig.data[0].y)
    if log:  # log10 of the error, ticks labelled with the error itself
        assert fig.data[0].z.max() < 0 and fig.data[0].colorbar.ticktext


def test_residual_bars_log_axis_and_highlight():
    df = _weight_df()
    fig = plots.residual_bars(df, "rel_l2", "weight", ["fc"])
    _check_labelled(fig)
    assert len(fig.data) == 3 and fig.layout.yaxis.type == "log"
    assert plots.residual_bars(df, "sqnr_db").layout.yaxis.type == "linear"


def test_output_space_frames_use_terms_column():
    df = _weight_df().rename(columns={"term": "terms"}).drop(columns=["bits", "bound", "max_abs", "params"])
    fig = plots.residual_heatmap(df, "rel_l2", "output")
    assert "layer outputs" in fig.layout.title.text
    assert len(plots.layer_detail(df, "conv2", "rel_l2", "output").data) == 1


def test_layer_detail_draws_bound_in_weight_space():
    fig = plots.layer_detail(_weight_df(), "conv2", "rel_l2", "weight")
    _check_labelled(fig)
    assert any(t.name.startswith("proven bound") for t in fig.data) and fig.layout.yaxis.type == "log"


def test_weight_convergence_one_measured_and_one_bound_per_bit_width():
    fig = plots.weight_convergence(_weight_df(bits=(2, 3, 4)), None)
    _check_labelled(fig)
    assert len(fig.data) == 6 and fig.layout.yaxis.type == "log"
    assert {t.line.color for t in fig.data} == {plots.bit_color(b) for b in (2, 3, 4)}
    assert sum(t.line.dash == "dash" for t in fig.data) == 3
    assert len(plots.weight_convergence(_weight_df(bits=(4,)), "conv1").data) == 2


def test_output_convergence():
    fig = plots.output_convergence(_output_df())
    _check_labelled(fig)
    assert len(fig.data) == 3 and fig.layout.yaxis.type == "log"
    assert plots.output_convergence(_output_df(), "sqnr_db").layout.yaxis.type == "linear"


@pytest.mark.parametrize("x", ["terms", "bits_per_weight", "bops"])
def test_accuracy_recovery_axes(x):
    fig = plots.accuracy_recovery(_grid_df(), 90.0, x)
    _check_labelled(fig)
    assert fig.layout.xaxis.title.text == plots.X_AXES[x]
    assert fig.layout.xaxis.type == ("log" if x == "bops" else None)
    names = [t.name for t in fig.data]
    assert sum("RTN" in n for n in names) == 3 and "FP model" in names  # one-term baselines and the FP line
    assert len(fig.layout.shapes) == 1  # the FP hline


def test_accuracy_recovery_fidelity_without_fp_line():
    fig = plots.accuracy_recovery(_grid_df(), None, "terms", "agreement")
    assert "agreement" in fig.layout.yaxis.title.text and not fig.layout.shapes


def test_equal_budget():
    df = pd.DataFrame([dict(pair="W4x2 vs W8x1", label="W4x2", kind="series", w_bits=4, top1=89.0),
                       dict(pair="W4x2 vs W8x1", label="W8x1", kind="single term", w_bits=8, top1=89.5),
                       dict(pair="W2x4 vs W8x1", label="W2x4", kind="series", w_bits=2, top1=80.0),
                       dict(pair="W2x4 vs W8x1", label="W8x1", kind="single term", w_bits=8, top1=89.5)])
    fig = plots.equal_budget(df, 90.0)
    _check_labelled(fig)
    assert len(fig.data) == 2 and fig.layout.barmode == "group"
    assert list(fig.data[0].x) == ["W4x2 vs W8x1", "W2x4 vs W8x1"]  # one category per pair: bars never stack


def test_basis_term_figures():
    q = [np.random.default_rng(k).integers(-7, 8, size=(8, 3, 3, 3)) for k in range(2)]
    hist = plots.term_histograms(q, 4)
    assert len(hist.data) == 2 and hist.layout.title.text and hist.layout.yaxis.title.text
    maps = plots.term_heatmaps([x.reshape(8, -1) for x in q], 4)
    assert [t.type for t in maps.data] == ["heatmap", "heatmap"] and maps.layout.yaxis.title.text == "output channel"
    scales = plots.term_scales([np.full(8, 0.1), np.full(8, 0.007)], 4)
    _check_labelled(scales)
    assert scales.layout.yaxis.type == "log"


def test_difference_bars_marks_exact_zero():
    fig = plots.difference_bars(pd.DataFrame({"method": ["a", "b"], "max_abs_diff": [0.0, 3.2]}))
    _check_labelled(fig)
    assert fig.data[0].text[0] == "0 (exact)" and fig.layout.yaxis.type == "log"
    assert fig.layout.yaxis.dtick == 3  # 18 decades: a label every third one


def test_law_bars_group_levels_and_mark_exact_zero():
    laws = pd.DataFrame({"level": ["network", "network", "one layer: c", "one layer: c"],
                         "law": ["lockstep", "separate", "separate", "inverse"], "rel_diff": [0.0, 0.6, 6e-8, 7e-8]})
    fig = plots.law_bars(laws)
    _check_labelled(fig)
    assert [t.name for t in fig.data] == ["network", "one layer: c"] and fig.layout.barmode == "group"
    assert fig.data[0].text[0] == "0 (exact)" and fig.layout.yaxis.type == "log"
    assert list(fig.data[1].x) == ["separate", "inverse"]


def test_log_ticks_follow_the_data_span():
    narrow = plots.residual_bars(_weight_df(terms=1))  # one term: errors within a decade
    assert narrow.layout.yaxis.dtick == "D2"
    wide = plots.output_convergence(_output_df(bits=(8,), terms=4))  # 0.3 .. 1e-8
    assert wide.layout.yaxis.dtick == 1 and wide.layout.yaxis.exponentformat == "power"


def test_compare_figures():
    curves = {"A": _output_df(bits=(4,)), "B": _output_df(bits=(3,))}
    fig = plots.compare_output_curves(curves)
    _check_labelled(fig)
    assert [t.name for t in fig.data] == ["A", "B"]
    bars = plots.compare_layer_bars({"A": _weight_df(), "B": _weight_df(bits=(3,), terms=2)})
    _check_labelled(bars)
    assert len(bars.data) == 2 and len(bars.data[0].x) == len(LAYERS)

