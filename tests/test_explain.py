"""fpxint.explain and fpxint.plots_explain: the Explain page's numbers against independent references."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn as nn

from fpxint import ExpansionConfig, analysis, cost, explain, plots_explain as pe
from fpxint.data import ImageData
from fpxint.model import fold_batchnorm
from fpxint.quant import contraction, grid_range
from fpxint.series import expand_tensor
from fpxint.zoo import load_model


@pytest.fixture(scope="module")
def digits():
    from fpxint.data import load_data

    lm = load_model("digits_cnn")
    return lm, load_data("digits", lm.spec, limit=120)


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ----- step 1 and 2: a tensor ---------------------------------------------------------------------------
@pytest.mark.parametrize("bits,grid", [(1, "symmetric"), (2, "symmetric"), (4, "symmetric"), (3, "full"),
                                       (8, "full"), (4, "asymmetric")])
def test_tensor_terms_rebuild_the_weight_and_obey_the_bound(digits, bits, grid):
    lm, _ = digits
    cfg = ExpansionConfig(w_bits=bits, a_bits=bits, w_grid=grid)
    before = _state(lm.model)
    t = explain.tensor_terms(lm.model, cfg, "features.1.0")
    assert _same(before, _state(lm.model))  # the caller's model is untouched
    w = fold_batchnorm(lm.model).get_submodule("features.1.0").weight.detach()
    assert np.array_equal(t["weight"], w.numpy()) and t["shape"] == (32, 16, 3, 3) and not t["cropped"]
    lo, hi = grid_range(bits, grid)
    scale_shape = (-1, 1, 1, 1)
    acc = np.zeros_like(t["weight"], dtype=np.float64)
    for k, (q, s) in enumerate(zip(t["terms"], t["scales"])):
        assert q.dtype == np.int16 and np.issubdtype(q.dtype, np.integer)
        if grid != "asymmetric":  # centered asymmetric terms are shifted by their zero points
            assert lo <= q.min() and q.max() <= hi
        acc += q.astype(np.float64) * s.reshape(scale_shape)
        # the partial sum is the sum of the integer terms times their scales; the residual is what is left
        np.testing.assert_allclose(t["partials"][k], acc, rtol=0, atol=1e-6)
        np.testing.assert_allclose(t["residuals"][k], t["weight"] - t["partials"][k], rtol=0, atol=0)
    norms = t["norms"]
    assert t["contraction"] == contraction(bits, grid)
    assert (norms["max_abs"] <= norms["bound"] * (1 + 1e-5) + 1e-7).all()
    assert norms["max_abs"].is_monotonic_decreasing
    for k in range(len(t["residuals"])):
        assert np.abs(t["residuals"][k]).max() == pytest.approx(norms["max_abs"].iloc[k], rel=1e-5, abs=1e-9)


def test_large_weights_are_cropped_for_the_maps_but_measured_whole():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(40, 48, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(10))
    model(torch.zeros(1, 40, 5, 5))
    cfg = ExpansionConfig(fold_bn=False)
    t = explain.tensor_terms(model, cfg, "0", n=3)
    assert t["cropped"] and t["weight"].shape == (32, 16, 3, 3) and t["shape"] == (48, 40, 3, 3)
    whole = expand_tensor(model[0].weight.detach(), 4, 3, "per_channel").residual_norms()
    assert np.allclose(t["norms"]["max_abs"], whole["max_abs"]) and np.allclose(t["norms"]["bound"], whole["bound"])
    lin = explain.tensor_terms(model, cfg, "3", n=2)
    assert lin["weight"].shape == (10, 128) and lin["cropped"]


def test_all_layer_residuals_stay_within_the_bound(digits):
    lm, _ = digits
    df = explain.all_layer_residuals(lm.model, ExpansionConfig(w_bits=2, a_bits=2))
    assert sorted(df["layer"].unique()) == sorted(explain.layer_names(lm.model, ExpansionConfig()))
    assert set(df["term"]) == {1, 2, 3, 4} and (df["max_abs"] <= df["bound"] * (1 + 1e-5) + 1e-7).all()


def test_layer_names_follow_the_first_last_policy(digits):
    lm, _ = digits
    assert explain.layer_names(lm.model, ExpansionConfig()) == ["features.0.0", "features.1.0", "features.3.0",
                                                                 "classifier"]
    assert explain.layer_names(lm.model, ExpansionConfig(first_last="fp")) == ["features.1.0", "features.3.0"]
    assert explain.default_layer(lm.model, ExpansionConfig()) == "features.0.0"
    assert explain.default_layer(lm.model, ExpansionConfig(first_last="fp")) == "features.1.0"
    with pytest.raises(ValueError, match="stays in FP"):
        explain.tensor_terms(lm.model, ExpansionConfig(first_last="fp"), "classifier")
    with pytest.raises(ValueError, match="not an expandable layer"):
        explain.tensor_terms(lm.model, ExpansionConfig(), "features.2")


@pytest.mark.parametrize("shape", [(16, 1, 3, 3), (16, 3, 3, 3), (32, 16, 3, 3), (5, 2, 1, 4), (7, 1, 5, 5)])
def test_mosaic_places_every_kernel_once(shape):
    o, i, kh, kw = shape
    a = np.random.default_rng(0).normal(size=shape)
    m = explain.mosaic(a)
    assert np.isnan(m).sum() == m.size - a.size  # every value once, NaN elsewhere
    bw = i * (kw + 1) - 1
    cols = (m.shape[1] + 2) // (bw + 2)
    assert m.shape == (-(-o // cols) * (kh + 2) - 2, cols * (bw + 2) - 2)
    for f in range(o):
        r, c = divmod(f, cols)
        for j in range(i):
            x = c * (bw + 2) + j * (kw + 1)
            assert np.array_equal(m[r * (kh + 2): r * (kh + 2) + kh, x: x + kw], a[f, j])


def test_mosaic_keeps_matrices_and_is_near_the_aspect():
    assert explain.mosaic(np.ones((5, 7, 1, 1))).shape == (5, 7) and explain.mosaic(np.ones((5, 7))).shape == (5, 7)
    assert explain.mosaic(np.ones((4, 2, 3))).shape[0] >= 1  # conv1d: a block is a row of kernels
    h, w = explain.mosaic(np.ones((64, 1, 3, 3))).shape
    assert 0.8 < w / h < 2.0


@pytest.mark.parametrize("bits,grid", [(b, g) for g in ("symmetric", "full") for b in range(1, 9) if (b, g) != (1, "full")])
def test_contraction_text_states_the_factor(bits, grid):
    text = explain.contraction_text(bits, grid)
    denom = 2 if bits == 1 and grid == "symmetric" else 2**bits - (2 if grid == "symmetric" else 1)
    assert f"1/{denom}" in text and 1 / denom == pytest.approx(contraction(bits, grid))


# ----- step 3: a layer ------------------------------------------------------------------------------------
def test_layer_story_outputs_and_errors(digits):
    lm, data = digits
    cfg = ExpansionConfig()
    before = _state(lm.model)
    s = explain.layer_story(lm.model, data, lm.spec, cfg, "features.1.0")
    assert _same(before, _state(lm.model))
    assert len(s["indices"]) == explain.N_IMAGES and s["images"][0].dtype == np.uint8 and s["images"][0].shape == (8, 8, 3)
    assert s["labels"] == data.labels[s["indices"]].tolist()
    # the FP output is the folded FP model's own, captured independently here
    ref, got = fold_batchnorm(lm.model), {}
    ref.features[1][0].register_forward_hook(lambda m, i, o: got.update(y=o))
    ref(data.images[s["indices"]])
    np.testing.assert_allclose(s["fp"][3], got["y"][3, :explain.OUT_CHANNELS].detach().numpy(), rtol=0, atol=1e-6)
    e = s["errors"]
    for kind in ("isolated", "end to end"):
        mean = e[e.kind == kind].groupby("terms")["rel_l2"].mean()
        assert mean.is_monotonic_decreasing and mean.iloc[-1] < 1e-3, (kind, mean)
    # the shown maps are the isolated outputs: their error is the table's
    iso = e[(e.kind == "isolated") & (e.image == 3) & (e.terms == 2)].iloc[0]
    d = s["expanded"][1][3] - s["fp"][3]
    assert np.abs(d).max() <= iso["max_abs"] + 1e-6  # the maps are the first channels of 32
    first = explain.layer_story(lm.model, data, lm.spec, cfg, "features.0.0", n=2)["errors"]
    a, b = first[first.kind == "isolated"], first[first.kind == "end to end"]
    assert np.allclose(a["rel_l2"].values, b["rel_l2"].values)  # the first layer's input is the image itself


# ----- step 4 and 5: the model, the cost ---------------------------------------------------------------------
def test_model_story_matches_evaluate_and_flips_are_real(digits):
    lm, data = digits
    cfg = ExpansionConfig(w_bits=2, a_bits=2, w_terms=2, a_terms=2)
    before = _state(lm.model)
    m = explain.model_story(lm.model, data, lm.spec, cfg, n=3)
    assert _same(before, _state(lm.model))
    xy = (data.images, data.labels)
    for k in (1, 3):
        ref = analysis.evaluate(lm.model, cfg.with_terms(k), xy)
        assert m["grid"].set_index("terms").loc[k, "top1"] == pytest.approx(ref["top1"], abs=1e-9)
    fp_pred = lm.model(data.images).argmax(1)
    assert m["fp_top1"] == pytest.approx(100 * (fp_pred == data.labels).float().mean().item())
    assert m["flips"], "2-bit round-to-nearest changes some predictions that more terms bring back"
    for f in m["flips"]:
        assert f["fp"] == int(fp_pred[f["index"]]) and f["preds"][0] != f["fp"]
        assert all(p == f["fp"] for p in f["preds"][f["settles_at"] - 1:])
        assert f["settles_at"] == 1 + max(i for i, p in enumerate(f["preds"]) if p != f["fp"]) + 1
    b = m["budget"]
    assert list(b["label"]) == ["W2x2 A2x2", "W4x1 A4x1"] and m["budget_k"] == 2
    eq = analysis.evaluate(lm.model, ExpansionConfig(w_bits=4, a_bits=4, w_terms=1, a_terms=1), xy)
    assert b.iloc[1]["top1"] == pytest.approx(eq["top1"]) and b.iloc[0]["top1"] == m["grid"].iloc[1]["top1"]
    assert "W2x2 A2x2" in explain.budget_sentence(m, cfg) and "W4x1 A4x1" in explain.budget_sentence(m, cfg)


def test_equal_budget_pairs():
    c = ExpansionConfig(w_bits=4, w_terms=3, a_bits=4, a_terms=3)
    assert explain.budget_terms(c) == 2 and explain.equal_budget_config(c, 3) is None
    assert explain.equal_budget_config(c, 2).label() == "W8x1 A8x1 layer"
    assert explain.budget_terms(ExpansionConfig(w_bits=2, w_terms=4)) == 4
    assert explain.budget_terms(ExpansionConfig(w_bits=5)) is None
    story = {"budget": __import__("pandas").DataFrame(), "labeled": True, "fp_top1": 90.0}
    assert "no equal-budget single term" in explain.budget_sentence(story, ExpansionConfig(w_bits=5))


def test_cost_story_is_cost_summary_per_term(digits):
    lm, _ = digits
    df = explain.cost_story(lm.model, lm.spec, ExpansionConfig())
    assert df["int_gemms"].tolist() == [4 * k * k for k in (1, 2, 3, 4)]  # 4 layers x k^2 cross terms
    ref = cost.cost_summary(lm.model, ExpansionConfig().with_terms(3), lm.spec.input_size)
    assert df.iloc[2]["bits_per_weight"] == ref["effective_bits"] and df.iloc[2]["bops"] == ref["bops"]


def test_compute_dispatches_and_refuses_what_it_cannot_do(digits):
    lm, data = digits
    names, default = explain.compute("layers", lm, None, ExpansionConfig())
    assert default in names
    with pytest.raises(ValueError, match="part='nope'"):
        explain.compute("nope", lm, data, ExpansionConfig())
    with pytest.raises(ValueError, match="needs images"):
        explain.compute("model", lm, None, ExpansionConfig())


def test_unlabeled_images_report_agreement(digits):
    lm, data = digits
    unl = ImageData(data.images[:40], None, None, "unlabeled", 0)
    m = explain.model_story(lm.model, unl, lm.spec, ExpansionConfig(), n=2)
    assert not m["labeled"] and m["fp_top1"] is None and m["grid"]["top1"].isna().all()
    assert "agreement with FP" in explain.budget_sentence(m, ExpansionConfig())


# ----- figures -----------------------------------------------------------------------------------------------
def test_figures_show_what_the_numbers_say(digits):
    lm, data = digits
    cfg = ExpansionConfig()
    t = explain.tensor_terms(lm.model, cfg, "features.0.0")
    fig = pe.tensor_terms(t, 2)
    panels = [np.asarray(fig.data[i].z, dtype=float)[:h, c: c + wd] for i, c, h, wd in fig.layout.meta["panels"]]
    assert len(panels) == 6 and [d.type for d in fig.data] == ["heatmap", "heatmap"]  # one trace per row of maps
    np.testing.assert_array_equal(panels[3], explain.mosaic(t["weight"]))
    for q, term in zip(panels[:3], t["terms"]):
        np.testing.assert_array_equal(q, explain.mosaic(term.astype(float)))
    w, part, res = panels[3:]
    np.testing.assert_allclose(np.nan_to_num(res), np.nan_to_num(w - part), atol=1e-6)  # residual = W - sum
    assert fig.layout.coloraxis.cmin == -fig.layout.coloraxis.cmax  # one symmetric scale for W, sum, residual
    bound = pe.residual_vs_bound(explain.all_layer_residuals(lm.model, cfg), t)
    assert bound.layout.yaxis.type == "log" and any("bound" in d.name for d in bound.data)
    s = explain.layer_story(lm.model, data, lm.spec, cfg, "features.0.0", n=2)
    io = pe.layer_io(s["images"][0], s["fp"][0], s["expanded"][1][0], 2, "input")
    assert [d.type for d in io.data] == ["image", "heatmap"]
    fp, exp, diff = (np.asarray(io.data[i].z, dtype=float)[:h, c: c + wd] for i, c, h, wd in io.layout.meta["panels"])
    np.testing.assert_allclose(np.nan_to_num(diff), np.nan_to_num(exp - fp), atol=1e-6)
    np.testing.assert_array_equal(fp, explain.mosaic(s["fp"][0][:, None], aspect=0.6))
    vec = pe.layer_io(s["images"][0], np.arange(10.0), np.arange(10.0) + 0.1, 1, "input")
    assert [d.type for d in vec.data] == ["image", "bar", "bar"]
    assert pe.layer_errors(s["errors"], 0, 1).layout.yaxis.type == "log"
    m = explain.model_story(lm.model, data, lm.spec, ExpansionConfig(w_bits=2, a_bits=2), n=3)
    assert len(pe.flips(m["flips"], data.classes).data) == len(m["flips"])
    budget = pe.equal_budget(m["budget"], m["fp_top1"])
    assert [list(d.y)[0] for d in budget.data] == list(m["budget"]["top1"])
    bars = pe.cost_bars(explain.cost_story(lm.model, lm.spec, cfg), 4)
    assert list(bars.data[1].y) == [4, 16, 36, 64]
    for f in (fig, bound, io, bars, budget):
        assert f.layout.template.layout.paper_bgcolor in ("white", "#ffffff", "#FFFFFF") or f.layout.paper_bgcolor == "white"


def test_explain_modules_do_not_import_streamlit():
    import subprocess
    import sys
    from pathlib import Path

    code = "import sys, fpxint.explain, fpxint.plots_explain; print('streamlit' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "False"
