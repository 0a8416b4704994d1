"""The block replay of `layer_sensitivity` (blocks before the expanded layer's block return their FP-pass
outputs instead of running) measures exactly what the whole-model pass measures: the tables are equal
number for number on tiny transformers (GPT-2, Llama with rotary embeddings), and the replay really ran."""
import pytest
import torch
import torch.nn as nn

from fpxint.allocation.sensitivity import BlockReplay, layer_sensitivity, plan_layers
from fpxint.config import ExpansionConfig
from tests.test_lm import _need

CFG = ExpansionConfig(w_bits=4, a_bits=4, w_terms=2, a_terms=2, a_granularity="per_token", fold_bn=False)


def _tiny(kind: str) -> nn.Module:
    _need("transformers")
    import transformers as tf

    from fpxint.zoo.hf import CausalLMLogits, _conv1d_to_linear_

    torch.manual_seed(0)
    if kind == "gpt2":
        hf = tf.GPT2LMHeadModel(tf.GPT2Config(n_layer=3, n_embd=32, n_head=2, vocab_size=300))
        _conv1d_to_linear_(hf)
    else:
        hf = tf.LlamaForCausalLM(tf.LlamaConfig(num_hidden_layers=3, hidden_size=32, intermediate_size=64,
                                                num_attention_heads=4, num_key_value_heads=2, vocab_size=300))
    return CausalLMLogits(hf.eval())


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_replayed_sensitivity_equals_the_whole_model_pass(kind):
    model = _tiny(kind)
    ids = torch.randint(0, 300, (2, 24), generator=torch.Generator().manual_seed(1))
    calls = {}
    blocks = model.lm.transformer.h if kind == "gpt2" else model.lm.model.layers
    for i, b in enumerate(blocks):  # counts the real blocks' runs (the private copy's blocks are copies of these)
        b.register_forward_pre_hook(lambda m, a, i=i: calls.__setitem__(i, calls.get(i, 0) + 1))
    kw = dict(terms=[1, 2], sides=["weight", "activation"])
    whole = layer_sensitivity(model, CFG, ids, replay=False, **kw)
    replayed = layer_sensitivity(model, CFG, ids, **kw)
    assert whole.noise.tolist() == replayed.noise.tolist()  # exact float equality, every layer, side, k
    assert whole.drop(columns="noise").equals(replayed.drop(columns="noise"))
    assert whole.noise.min() > 1e-12  # a real perturbation was measured, not FP against FP
    # the replay really skipped blocks: the hooks are deep-copied with the model, so count on the copy instead
    fm, plan = plan_layers(model, CFG)
    r = BlockReplay(fm, plan)
    assert sorted(set(r.block.values())) == [0, 1, 2] and len(r.block) == len(plan) - 1  # all but the LM head
    r.capture(lambda: fm(ids))
    assert r.outs is not None and r.start(plan[-2][1]) == 2 and r.start("lm.lm_head") == 0


def test_replay_blocks_run_only_from_the_layers_block():
    model = _tiny("llama")
    fm, plan = plan_layers(model, CFG)
    ids = torch.randint(0, 300, (1, 16))
    r = BlockReplay(fm, plan)
    y = r.capture(lambda: fm(ids))
    ran = []
    hooks = [b.register_forward_pre_hook(lambda m, a, i=i: ran.append(i)) for i, b in enumerate(r.blocks)]
    orig = r.swap(2)
    try:
        y2 = fm(ids)
    finally:
        r.restore(orig)
    for h in hooks:
        h.remove()
    assert ran == [2] and torch.equal(y, y2)  # only block 2 computed; the logits are the FP pass's bits
    assert all(a is b for a, b in zip(r.blocks, orig + [r.blocks[2]]))  # the originals are back


def test_models_without_a_block_list_run_whole():
    cnn = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.Sequential(nn.Conv2d(4, 4, 3), nn.ReLU()),
                        nn.Flatten(), nn.LazyLinear(5))
    cnn(torch.zeros(1, 3, 8, 8))
    fm, plan = plan_layers(cnn.eval(), CFG.replace(a_granularity="per_tensor", fold_bn=True))
    r = BlockReplay(fm, plan)
    assert r.prefix is None
    r.capture(lambda: fm(torch.zeros(1, 3, 8, 8)))
    assert all(r.start(n) == 0 for _, n, _, _ in plan)


def test_blocks_run_out_of_order_are_not_replayed():
    class Loop(nn.Module):  # a shared block list run twice (weight sharing): the replay would be wrong
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(8, 8)) for _ in range(2))

        def forward(self, x):
            for _ in range(2):
                for b in self.blocks:
                    x = torch.relu(b(x))
            return x

    fm, plan = plan_layers(Loop().eval(), CFG.replace(fold_bn=False))
    r = BlockReplay(fm, plan)
    assert r.prefix == "blocks"
    r.capture(lambda: fm(torch.randn(3, 8)))
    assert r.outs is None and r.start("blocks.1.0") == 0


def test_a_table_row_is_the_plain_measurement_of_that_layer():
    """Independent of `layer_sensitivity`'s loop (replay, cached reference power): expand one layer of
    block 2 by hand, run the whole model, measure with the plain `rel_noise`."""
    from fpxint.allocation.sensitivity import _side_spec, rel_noise
    from fpxint.layers import expand_layer

    model = _tiny("llama")
    ids = torch.randint(0, 300, (1, 20), generator=torch.Generator().manual_seed(2))
    name = "lm.model.layers.2.mlp.down_proj"
    table = layer_sensitivity(model, CFG, ids, terms=[1], sides=["activation"])
    fm, plan = plan_layers(model, CFG)
    spec = next(p[3] for p in plan if p[1] == name)
    with torch.no_grad():
        ref = fm(ids)
        c = CFG.replace(truncation="full", level="layer", mode="simulate")
        fm.set_submodule(name, expand_layer(fm.get_submodule(name), c, _side_spec(spec, "activation", 1)))
        y = fm(ids)
    assert table.set_index("layer").noise[name] == rel_noise(ref, y)
    assert rel_noise(ref.double(), y, ref.double().square().sum().item()) == rel_noise(ref, y)
