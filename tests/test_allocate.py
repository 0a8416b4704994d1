"""Per-layer term allocation: budgets hold, the result is an ordinary config (the solvers: test_knapsack.py),
and on a real ResNet-20 it matches or beats uniform terms at equal cost."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fpxint import ExpansionConfig, expand
from fpxint.allocation import (Budget, allocate, calibration_split, cost_accuracy_curve, layer_sensitivity,
                               sensitivity_ranking)
from fpxint.cost import cost_summary, cost_table
from fpxint.data import load_data, stratified_indices
from fpxint.zoo import load_model

W2A2 = ExpansionConfig(w_bits=2, a_bits=2, w_terms=3, a_terms=3)


@pytest.fixture(scope="module")
def digits():
    lm = load_model("digits_cnn")
    train = load_data("digits", lm.spec, split="train")
    idx = stratified_indices(train.labels, 96, 0)
    return lm.model, train.images[idx], train.labels[idx]


@pytest.fixture(scope="module")
def digits_sens(digits):
    model, x, y = digits
    return allocate(model, W2A2, "gemms=1x", x, y, max_terms=5).sensitivity


def _sqnr(ref: torch.Tensor, out: torch.Tensor) -> float:
    return 10 * math.log10(ref.double().square().sum().item() / (out - ref).double().square().sum().item())


# ----- budgets -----------------------------------------------------------------------------------
def test_budget_parse_and_errors():
    assert Budget.parse("gemms=0.75x") == Budget("int_gemms", 0.75, True)
    assert Budget.parse("bops=2e8") == Budget("bops", 2e8, False)
    assert Budget.parse("sqnr=30", metric="bops") == Budget("sqnr_db", 30.0, False, "bops")
    for bad in ("gemms", "flops=1", "gemms=abc", "sqnr=30x"):
        with pytest.raises(ValueError, match="gemms|sqnr|target|number"):
            Budget.parse(bad)
    with pytest.raises(ValueError, match="int_gemms, bops, weight_bits"):
        Budget("area", 1.0)


@pytest.mark.parametrize("metric", ["int_gemms", "bops", "weight_bits"])
@pytest.mark.parametrize("solver", ["dp", "greedy"])
def test_allocation_never_exceeds_its_budget(digits, digits_sens, metric, solver):
    model, x, y = digits
    for frac in (0.4, 0.75, 1.0, 1.6):
        a = allocate(model, W2A2, Budget(metric, frac, relative=True), x, y, max_terms=5, solver=solver,
                     sensitivity=digits_sens)
        engine = cost_summary(model, a.config, x.shape[1:])  # the engine's own count, not the allocator's
        used = (engine[metric] if metric != "weight_bits"
                else int(cost_table(model, a.config, x.shape[1:]).weight_bits.sum()))
        assert used <= a.cap + 1e-6 and a.cap == pytest.approx(frac * a.uniform_cost[metric])
        if metric == "weight_bits":  # storage does not depend on activation terms: they stay as configured
            assert (a.layers.a_terms == W2A2.a_terms).all()


def test_the_best_measured_candidate_is_chosen(digits, digits_sens):
    """The solver's choice and the best per-side uniform configs are measured; the best one wins."""
    model, x, y = digits
    a = allocate(model, W2A2, "gemms=0.75x", x, y, max_terms=5, sensitivity=digits_sens)
    c = a.candidates
    assert c.chosen.sum() == 1 and len(c) >= 2 and "dp" in set(c.candidate)
    assert c[c.chosen].measured_sqnr_db.iloc[0] == c.measured_sqnr_db.max() == a.measured_sqnr_db
    assert (c.int_gemms <= a.cap).all()


def test_budget_below_the_cheapest_allocation_is_explained(digits, digits_sens):
    model, x, y = digits
    with pytest.raises(ValueError, match="below the cheapest allocation"):
        allocate(model, W2A2, "gemms=3", x, y, max_terms=5, sensitivity=digits_sens)


# ----- sensitivity ------------------------------------------------------------------------------------
def test_sensitivity_table_and_ranking(digits):
    model, x, y = digits
    s = layer_sensitivity(model, W2A2, x, y, terms=[1, 3])
    assert len(s) == 4 * 2 and {"layer", "side", "terms", "noise", "sqnr_db", "top1", "fp_top1"} <= set(s.columns)
    wide = s.pivot_table(index="layer", columns="terms", values="sqnr_db")
    assert (wide[3] > wide[1]).all()  # more terms, less error, for every layer
    r = sensitivity_ranking(s, terms=1)
    assert list(r["rank"]) == [1, 2, 3, 4] and r.sqnr_db.is_monotonic_increasing
    with pytest.raises(ValueError, match="sides"):
        layer_sensitivity(model, W2A2, x, sides=["bias"])


# ----- the result is an ordinary config; the caller's model is untouched --------------------------------
def test_allocation_is_an_ordinary_config_and_model_untouched(digits):
    model, x, y = digits
    before = {k: v.clone() for k, v in model.state_dict().items()}
    a = allocate(model, W2A2, "bops=0.8x", x, y, max_terms=4)
    cfg = ExpansionConfig.from_json(a.config.to_json())
    assert cfg == a.config and len(cfg.overrides) == 4
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    q = expand(model, cfg)
    got = {n: (m.w_terms, m.a_terms) for n, m in q.named_modules() if hasattr(m, "w_terms")}
    assert got == {r.layer: (r.w_terms, r.a_terms) for r in a.layers.itertuples()}
    with torch.no_grad():
        assert a.measured_sqnr_db == pytest.approx(_sqnr(model(x), q(x)), abs=1e-3)


@pytest.mark.parametrize("mode", ["weights", "synthetic"])
def test_calibration_free_modes(digits, mode):
    model, x, _ = digits
    a = allocate(model, W2A2, "gemms=0.75x", None if mode == "weights" else x, mode=mode, input_shape=x.shape[1:],
                 max_terms=5)
    assert a.cost["int_gemms"] <= 0.75 * a.uniform_cost["int_gemms"] and a.mode == mode
    assert ("no forward pass" in a.data) if mode == "weights" else ("Gaussian" in a.data)
    assert (a.measured_sqnr_db is None) == (mode == "weights")


def test_targets_hold_on_the_calibration_images(digits, digits_sens):
    model, x, y = digits
    a = allocate(model, W2A2, "sqnr=12", x, y, max_terms=5, sensitivity=digits_sens)
    assert a.measured_sqnr_db >= 12
    b = allocate(model, W2A2, "top1_drop=1", x, y, max_terms=5, sensitivity=digits_sens)
    assert b.top1 >= b.fp_top1 - 1
    with pytest.raises(ValueError, match="labeled"):
        allocate(model, W2A2, "top1_drop=1", x, max_terms=5)
    with pytest.raises(ValueError, match="not reached"):
        allocate(model, W2A2, "sqnr=90", x, y, max_terms=5, sensitivity=digits_sens)
    with pytest.raises(ValueError, match="no integer GEMMs"):
        allocate(model, W2A2.replace(truncation="weight_only"), "gemms=1x", x, y, max_terms=3)


def test_cost_accuracy_curve(digits):
    model, x, y = digits
    a = allocate(model, W2A2, "gemms=0.75x", x, y, max_terms=4)
    c = cost_accuracy_curve(model, W2A2, x[:48], y[:48], [("alloc", a.config)], terms=[1, 3])
    assert list(c.kind) == ["fp", "uniform", "uniform", "allocated"]
    assert list(c.int_gemms) == [0, 4, 36, a.cost["int_gemms"]] and c.top1.notna().all()
    from fpxint.allocation.plots import cost_curve, sensitivity_heatmap, term_map

    fig = cost_curve(c)
    assert [t.name for t in fig.data] == ["uniform terms", "allocated"] and list(fig.data[1].y) == [c.top1.iloc[3]]
    bars = term_map(a.layers, (3, 3)).data
    assert [list(b.y) for b in bars] == [list(a.layers.w_terms), list(a.layers.a_terms)]
    assert list(bars[0].x) == list(a.layers.layer)  # network order
    assert len(sensitivity_heatmap(a.sensitivity).data) == 2  # weight and activation panels


def _fpxint(*argv: str) -> subprocess.CompletedProcess:
    """`python -m fpxint ...` as a user runs it: a real process, from the checkout's root."""
    return subprocess.run([sys.executable, "-m", "fpxint", *argv], capture_output=True, text=True, timeout=600,
                          cwd=Path(__file__).resolve().parents[1])


def test_cli_writes_a_config_within_budget(tmp_path):
    out = tmp_path / "alloc.json"
    p = _fpxint("allocate", "digits_cnn", "--bits", "2", "--terms", "3", "--budget-gemms", "0.75x", "--calib", "64",
                "--max-terms", "4", "--eval", "64", "--uniform-terms", "3", "--out", str(out), "--save",
                str(tmp_path / "r"), "-q")
    assert p.returncode == 0, p.stderr
    cfg = ExpansionConfig.from_json(out.read_text())
    assert cost_summary(load_model("digits_cnn").model, cfg, (1, 8, 8))["int_gemms"] <= 27  # 0.75 x 36
    summary = json.loads((tmp_path / "r.json").read_text())
    assert "disjoint" in summary["images"] and (tmp_path / "r.curve.csv").is_file()
    assert summary["config"] == json.loads(cfg.to_json())
    assert f"int GEMMs    {summary['int_gemms']} vs uniform 36" in p.stdout  # the human summary
    p = _fpxint("allocate", "digits_cnn", "--bits", "2")  # no budget: one-line usage error
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "--budget-gemms" in p.stderr, p.stderr


# ----- a real checkpoint --------------------------------------------------------------------------------
def test_resnet20_allocation_matches_or_beats_uniform_at_equal_cost(shared_dir, cifar_test_dir):
    """Equal integer-GEMM budget (uniform W3A3 x 2 terms: 80 GEMMs); the output error is measured on
    images the allocation never saw. (Measured when written: uniform 11.9 dB, allocated 14.7 dB.)"""
    lm = load_model("resnet20", shared_dir=shared_dir)
    data = load_data(cifar_test_dir, lm.spec, limit=80, seed=0)
    calib, probe = data.images[:32], data.images[32:]  # one stratified set split into two disjoint parts
    cfg = ExpansionConfig(w_bits=3, a_bits=3, w_terms=2, a_terms=2)
    a = allocate(lm.model, cfg, "gemms=1x", calib, mode="unlabeled", max_terms=3)
    assert a.cost["int_gemms"] <= a.uniform_cost["int_gemms"] == 80
    with torch.no_grad():
        ref = lm.model(probe)
        uniform, alloc = _sqnr(ref, expand(lm.model, cfg)(probe)), _sqnr(ref, expand(lm.model, a.config)(probe))
    assert alloc >= uniform, (alloc, uniform)


# ----- calibration and evaluation images ---------------------------------------------------------------
@pytest.mark.parametrize("labeled", [True, False])
def test_calibration_split_is_disjoint_stratified_and_seeded(labeled):
    labels = torch.arange(10).repeat_interleave(30)[torch.randperm(300, generator=torch.Generator().manual_seed(1))]
    lab = labels if labeled else None
    cal, ev = calibration_split(lab, 300, 50, seed=3)
    assert len(cal) == 50 and len(ev) == 250 and not set(cal.tolist()) & set(ev.tolist())
    assert torch.equal(torch.cat([cal, ev]).sort().values, torch.arange(300))
    assert torch.equal(cal, stratified_indices(lab, 50, 3, n=300))  # the same choice as the data subsets
    if labeled:
        assert labels[cal].bincount(minlength=10).tolist() == [5] * 10
    cal2, ev2 = calibration_split(lab, 300, 50, seed=3, n_eval=40)
    assert torch.equal(cal2, cal) and len(ev2) == 40 and set(ev2.tolist()) <= set(ev.tolist())
    if labeled:
        assert labels[ev2].bincount(minlength=10).tolist() == [4] * 10
    assert len(calibration_split(lab, 300, 50, n_eval=0)[1]) == 0
    with pytest.raises(ValueError, match="300 calibration images leave none of the 300 images"):
        calibration_split(lab, 300, 300)


# ----- the app page -------------------------------------------------------------------------------------
def test_page_allocates_and_applies_the_config(tmp_path, monkeypatch):
    """The page under the shared sidebar (the app's own navigation): Allocate, then Apply."""
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from fpxint import app as ui

    monkeypatch.setenv("FPXINT_CACHE", str(tmp_path / "cache"))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=120).run()
    at.switch_page("fpxint/app/pages/8_allocate.py").run()
    at.number_input(key="alloc_calib").set_value(64)
    at.number_input(key="alloc_max_terms").set_value(3)
    at.button(key="run_allocate").click().run()
    assert not at.exception and not at.error, [e.value for e in at.exception] + [e.value for e in at.error]
    metrics = {m.label: m.value for m in at.metric}
    assert int(metrics["Integer GEMMs"]) <= 0.75 * 4 * 4  # digits: 4 layers x W4x2 A4x2 = 16 uniform
    assert len(at.get("plotly_chart")) >= 2
    at.button(key="alloc_apply").click().run()
    cfg = ExpansionConfig.from_json(at.session_state[ui.ALLOCATION_KEY])
    assert len(cfg.overrides) == 4 and any("Applied" in s.value for s in at.success)
