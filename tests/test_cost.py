"""Cost of an expansion (fpxint/cost.py): MACs, integer GEMMs, BOPs and weight bits of a small network,
every number computed by hand from the layer shapes."""
import copy

import pytest
import torch
import torch.nn as nn

from fpxint import ExpansionConfig, LayerOverride
from fpxint.cost import FP_BITS, cost_summary, cost_table, layer_macs

SHAPE = (3, 5, 5)
# per sample: conv "0": 4 x 5 x 5 outputs x (3 x 3 x 3) MACs; depthwise conv "3": 100 outputs x 9; linear "6": 6 x 100
MACS = {"0": 2700, "3": 900, "6": 600}
PARAMS = {"0": 108, "3": 36, "6": 600}
CHANNELS = {"0": 4, "3": 4, "6": 6}  # per-channel scales: one float32 per output channel and term


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.ReLU(), nn.Flatten(), nn.Linear(100, 6)).eval()


def wbits(name, bits, terms, groups=None):
    return PARAMS[name] * bits * terms + (CHANNELS[name] if groups is None else groups) * terms * FP_BITS


def test_layer_macs_by_hand_and_the_model_untouched():
    model = net()
    before = copy.deepcopy(model.state_dict())
    assert layer_macs(model, SHAPE) == MACS
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert isinstance(model[1], nn.BatchNorm2d)  # folded on a copy


def test_uniform_w4x2_a4x2():
    t = cost_table(net(), ExpansionConfig(w_bits=4, w_terms=2, a_bits=4, a_terms=2), SHAPE)
    assert t.layer.tolist() == ["0", "3", "6"] and not t.fp.any()
    assert t.int_gemms.tolist() == [4, 4, 4]  # 2 x 2 cross terms
    assert t.bops.tolist() == [MACS[n] * 4 * 4 * 4 for n in MACS]
    assert t.weight_bits.tolist() == [wbits(n, 4, 2) for n in MACS]
    assert t.equal_budget_bops.tolist() == [MACS[n] * 8 * 8 for n in MACS]  # one term of 8 bits each side
    s = cost_summary(net(), ExpansionConfig(), SHAPE)
    assert (s["macs"], s["params"], s["int_gemms"], s["layers"], s["expanded_layers"]) == (4200, 744, 12, 3, 3)
    assert s["bops"] == 4200 * 64 and s["fp_bops"] == 4200 * 32 * 32 and s["bops_vs_fp"] == pytest.approx(1 / 16)
    assert s["effective_bits"] == pytest.approx((1120 + 544 + 5184) / 744)
    assert s["weight_mb"] == pytest.approx(6848 / 8 / 2**20) and s["memory_vs_fp"] == pytest.approx(6848 / 744 / 32)
    assert (s["equal_budget_w_bits"], s["equal_budget_a_bits"]) == (8, 8)


def test_truncations():
    t = cost_table(net(), ExpansionConfig(truncation="total_order"), SHAPE)  # K = 3: (1,1), (1,2), (2,1)
    assert t.int_gemms.tolist() == [3, 3, 3] and t.bops.tolist() == [MACS[n] * 16 * 3 for n in MACS]
    t = cost_table(net(), ExpansionConfig(w_terms=3, a_terms=3, truncation="total_order", order=5), SHAPE)
    assert t.int_gemms.tolist() == [8, 8, 8]  # all 9 pairs but (3, 3)
    t = cost_table(net(), ExpansionConfig(truncation="weight_only"), SHAPE)  # activations FP: no integer GEMM
    assert t.int_gemms.tolist() == [0, 0, 0] and t.a_bits.tolist() == [FP_BITS] * 3
    assert t.bops.tolist() == [MACS[n] * 4 * FP_BITS * 2 for n in MACS]
    s = cost_summary(net(), ExpansionConfig(level="tensor"), SHAPE)
    assert s["int_gemms"] == 0 and s["equal_budget_a_bits"] == FP_BITS


def test_first_last_policies_overrides_and_granularity():
    t = cost_table(net(), ExpansionConfig(first_last="fp"), SHAPE).set_index("layer")
    assert t.fp.tolist() == [True, False, True] and t.int_gemms.tolist() == [0, 4, 0]
    assert t.bops.tolist() == [2700 * 32 * 32, 900 * 64, 600 * 32 * 32]
    assert t.weight_bits["0"] == 108 * 32 and t.weight_bits["6"] == 600 * 32
    t = cost_table(net(), ExpansionConfig(first_last="8bit"), SHAPE).set_index("layer")
    assert t.int_gemms.tolist() == [1, 4, 1] and t.bops["0"] == 2700 * 64 and t.weight_bits["0"] == wbits("0", 8, 1)
    cfg = ExpansionConfig(overrides={"3": LayerOverride(w_terms=3, a_bits=2), "6": LayerOverride(fp=True)})
    t = cost_table(net(), cfg, SHAPE).set_index("layer")
    assert t.int_gemms.tolist() == [4, 6, 0] and t.bops["3"] == 900 * 4 * 2 * 6
    assert t.weight_bits["3"] == wbits("3", 4, 3)
    t = cost_table(net(), ExpansionConfig(w_granularity="per_tensor"), SHAPE)
    assert t.weight_bits.tolist() == [wbits(n, 4, 2, groups=1) for n in MACS]


def test_given_macs_replace_the_measured_forward():
    t = cost_table(net(), ExpansionConfig(), None, macs={"0": 1, "3": 2, "6": 3})
    assert t.macs.tolist() == [1, 2, 3] and t.bops.tolist() == [64, 128, 192]
