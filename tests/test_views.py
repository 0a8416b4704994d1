"""views.integer_timing: what the Expand page shows beside FP for the current config."""
import torch
import torch.nn as nn

from fpxint import ExpansionConfig, views


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                         nn.Linear(8 * 8 * 8, 10)).eval()


def test_integer_timing_measures_both_and_checks_exactness():
    net, x = _net(), torch.randn(4, 3, 8, 8)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    r = views.integer_timing(net, ExpansionConfig(w_bits=3, w_terms=2, a_bits=4, a_terms=2), x, "cpu")
    assert r["int_ms"] > 0 and r["fp_ms"] > 0 and r["batch"] == 4 and r["exact"] is True and r["layer"] == "0"
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())  # the caller's model is untouched


def test_integer_timing_says_why_when_activations_stay_fp():
    for cfg in (ExpansionConfig(level="tensor"), ExpansionConfig(truncation="weight_only")):
        r = views.integer_timing(_net(), cfg, torch.randn(2, 3, 8, 8), "cpu")
        assert "int_ms" not in r and "FP" in r["reason"]
