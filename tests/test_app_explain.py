"""The Explain page (talk mode) driven headless with AppTest: each step, its URL, its buttons, its numbers."""
from __future__ import annotations

import numpy as np
import pytest

from fpxint import ExpansionConfig, analysis, explain
from test_app import _app, _charts, _isolated_env, _ok, _values  # noqa: F401 - _isolated_env is an autouse fixture

PAGE = "fpxint/app/pages/9_explain.py"
CHARTS = {1: 1, 2: 1, 3: 2, 4: 2, 5: 2}


def _explain(query: dict | None = None):
    at = _app(query)
    at.switch_page(PAGE).run()
    return _ok(at)


def _step(at) -> int:
    return int(at.title[0].value.split(".")[0])


def _grid(z) -> np.ndarray:
    """A heatmap's z as a 2-D float array (plotly packs arrays as {"dtype", "bdata", "shape"})."""
    if isinstance(z, dict) and "bdata" in z:
        return _values(z).astype(float).reshape([int(v) for v in str(z["shape"]).split(",")])
    return np.array(z, dtype=float)


def _panels(fig) -> list[np.ndarray]:
    """The map panels of a figure from fpxint.plots_explain, in order (layout.meta says where each one lies)."""
    return [_grid(fig.data[i].z)[:h, c: c + w] for i, c, h, w in fig.layout.meta["panels"]]


def _text(at) -> str:
    return " ".join(m.value for m in at.markdown)


@pytest.mark.parametrize("step", [1, 2, 3, 4, 5])
def test_each_step_has_its_own_url_and_charts(step):
    at = _explain({"step": str(step), "w_bits": "3"})
    assert at.title[0].value == f"{step}. {explain.STEPS[step - 1]}"
    assert len(_charts(at)) == CHARTS[step] and not at.error
    assert at.query_params["step"] == str(step) and at.query_params["w_bits"] == "3"  # both survive the sidebar
    assert at.button(key="explain_prev").disabled == (step == 1)
    assert at.button(key="explain_next").disabled == (step == 5)


def test_next_and_previous_walk_the_steps_and_write_the_url():
    at = _explain()
    assert _step(at) == 1 and at.query_params["step"] == "1"
    for step in range(2, 6):
        at.button(key="explain_next").click().run()
        assert _step(_ok(at)) == step and at.query_params["step"] == str(step)
    at.button(key="explain_prev").click().run()
    assert _step(_ok(at)) == 4 and at.query_params["step"] == "4"
    at.segmented_control(key="explain_step").set_value(2).run()
    assert _step(_ok(at)) == 2 and at.query_params["step"] == "2"


def test_a_bad_step_in_the_link_is_named_and_ignored():
    at = _explain({"step": "9"})
    assert _step(at) == 1 and any("step='9'" in w.value for w in at.warning)


def test_step1_residual_is_weight_minus_the_sum_and_shrinks_with_terms():
    at = _explain({"step": "1"})
    maxima = []
    for k in (1, 2, 3):
        at.slider(key="explain_k1").set_value(k).run()
        (fig,) = _charts(_ok(at))
        w, part, res = _panels(fig)[3:]
        np.testing.assert_allclose(np.nan_to_num(res), np.nan_to_num(w - part), atol=1e-6)
        maxima.append(np.nanmax(np.abs(res)))
    f = 1 / 14  # 4-bit symmetric grid, max rule
    assert maxima[1] <= f * maxima[0] * (1 + 1e-5) and maxima[2] <= f * maxima[1] * (1 + 1e-5)  # per term, per channel
    assert maxima[0] > maxima[1] > maxima[2]
    # the layer choice survives a step that does not show it
    at.selectbox(key="explain_layer_1").set_value("features.1.0").run()
    at.button(key="explain_next").click().run()
    assert at.selectbox(key="explain_layer_2").value == "features.1.0"
    at.button(key="explain_next").click().run()
    at.button(key="explain_next").click().run()  # step 4 has no layer choice
    at.button(key="explain_prev").click().run()
    assert at.selectbox(key="explain_layer_3").value == "features.1.0"


def test_step2_measured_residuals_sit_under_the_bound():
    at = _explain({"step": "2", "w_bits": "2", "a_bits": "2"})
    (fig,) = _charts(at)
    measured = next(d for d in fig.data if "measured" in d.name)
    bound = next(d for d in fig.data if "bound" in d.name)
    assert np.all(_values(measured.y) <= _values(bound.y) * (1 + 1e-6))
    assert fig.layout.yaxis.type == "log"
    assert "f = 1/(2^2 − 2) = 1/2" in _text(at) and "Every layer stays within its proven bound" in _text(at)


def test_step3_one_layer_on_one_image():
    at = _explain({"step": "3"})
    at.selectbox(key="explain_image").set_value(at.selectbox(key="explain_image").options[2])
    at.slider(key="explain_k3").set_value(3).run()
    io, err = _charts(_ok(at))
    assert io.data[0].type == "image" and "3 terms" in " ".join(a.text for a in io.layout.annotations)
    iso = next(d for d in err.data if "alone" in d.name)
    assert np.all(np.diff(_values(iso.y)) < 0)  # each term shrinks the layer's output error


def test_step4_accuracy_matches_evaluate_and_marks_fp_and_rtn():
    at = _explain({"step": "4"})
    acc, flips = _charts(at)
    names = [d.name for d in acc.data]
    assert "FP model" in names and "4-bit one term (RTN)" in names
    ctx = at.session_state["_ctx"]
    one = analysis.evaluate(ctx.loaded.model, ctx.cfg.with_terms(1), (ctx.data.images, ctx.data.labels))
    assert f"**{one['top1']:.2f} %**" in _text(at)
    assert all(d.type == "image" for d in flips.data) and flips.data


def test_step5_cost_and_equal_budget():
    at = _explain({"step": "5"})
    bars, budget = _charts(at)
    assert list(_values(bars.data[1].y)) == [4, 16, 36, 64]  # integer GEMMs: 4 layers x k^2
    text = _text(at)
    assert "**W4x2 A4x2**" in text and "**W8x1 A8x1**" in text and "16 integer GEMMs" in text
    assert len(budget.data) == 2
    at5 = _explain({"step": "5", "w_bits": "5"})
    assert "no equal-budget single term" in _text(at5) and len(_charts(at5)) == 1


def test_unavailable_model_is_a_message_not_a_crash():
    at = _explain({"step": "3"})
    at.selectbox(key="model").set_value("resnet56").run()
    assert "resnet56 is unavailable" in " ".join(e.value for e in _ok(at).error)
    at.selectbox(key="model").set_value("digits_cnn").run()
    assert not _ok(at).error and len(_charts(at)) == 2


def test_config_that_keeps_every_layer_in_fp_is_explained():
    # a single-layer model with first_last="fp" has nothing to expand
    cfg = ExpansionConfig(first_last="fp")
    import torch.nn as nn

    with pytest.raises(ValueError, match="keeps every layer in FP"):
        explain.default_layer(nn.Sequential(nn.Linear(3, 2)), cfg)


def test_cifar_model_prepares_every_step_with_the_shared_images(shared_file):
    shared_file("models/cifar10/resnet20-12fca82f.th", "the ResNet-20 checkpoint")
    at = _explain({"model": "resnet20", "n_images": "40", "step": "3"})
    at.button(key="explain_prepare").click().run()
    assert not _ok(at).error and len(_charts(at)) == 2
    for step in (4, 5, 1):
        at.segmented_control(key="explain_step").set_value(step).run()
        assert not _ok(at).error and len(_charts(at)) == CHARTS[step]
    assert at.selectbox(key="explain_layer_1").value == "conv1"
