"""The `auto` grid: unsigned rows where the actual values are >= 0, symmetric rows elsewhere."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from fpxint import ExpansionConfig
from fpxint.layers import expand_layer
from fpxint.series import expand_tensor


def _rows(grid, x, bits, terms):
    s = expand_tensor(x, bits, terms, "per_channel", grid)
    return s.q.to(torch.int32), s.scales


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_auto_is_asymmetric_on_nonnegative_rows_and_symmetric_on_signed_rows(bits):
    g = torch.Generator().manual_seed(bits)
    x = torch.randn(6, 50, generator=g)
    x[::2] = x[::2].relu()  # rows 0, 2, 4 cannot be negative, as after a ReLU
    qa, sa = _rows("auto", x, bits, 3)
    for rows, grid in ((slice(0, None, 2), "asymmetric"), (slice(1, None, 2), "symmetric")):
        q, s = _rows(grid, x[rows], bits, 1)
        assert torch.equal(qa[0, rows], q[0]) and torch.equal(sa[0, rows], s[0])  # the first term
    assert qa[0, ::2].min() >= 0 and qa[0, ::2].max() == 2**bits - 1  # every level of [0, 2^b - 1] used


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 8), st.integers(1, 5), st.integers(0, 2**31 - 1), st.booleans())
def test_auto_grid_meets_the_proven_bound(bits, terms, seed, relu):
    x = torch.randn(5, 40, generator=torch.Generator().manual_seed(seed)) * 3
    x = x.relu() if relu else x
    s = expand_tensor(x, bits, terms, "per_channel", "auto")
    for k in range(1, terms + 1):
        # float32 rounding aside: a few ulps of the largest value
        assert (x - s.partial(k)).abs().max().item() <= s.bound(k) + 8 * torch.finfo(torch.float32).eps * x.abs().max().item()


def test_auto_halves_the_first_term_error_after_relu():
    x = torch.rand(8, 1000, generator=torch.Generator().manual_seed(0))  # >= 0, like post-ReLU inputs
    err = {g: (x - expand_tensor(x, 4, 1, "per_channel", g).partial(1)).abs().max(1).values
           for g in ("symmetric", "auto")}
    # half a step: max/15/2 unsigned against max/7/2 symmetric
    assert torch.all(err["auto"] <= x.max(1).values / 30 * (1 + 1e-6))
    assert torch.all(err["symmetric"] > err["auto"] * 1.5)


def test_auto_grid_integer_mode_is_exact_and_equals_simulate():
    conv = nn.Conv2d(4, 6, 3, padding=1)
    x = torch.randn(3, 4, 8, 8).relu()
    x[1] -= 0.5  # one sample has negative values: a symmetric row among unsigned ones
    layer = expand_layer(conv, ExpansionConfig(w_bits=4, w_terms=2, a_bits=8, a_terms=2, a_grid="auto"))
    with torch.no_grad():
        for acc, _ in layer.integer_accumulators(x).values():
            assert torch.equal(acc, acc.round())
        y_sim = layer(x)
        layer.mode = "integer"
        y_int = layer(x)
    assert torch.equal(y_sim, y_int)


def test_auto_grid_needs_two_bits():
    with pytest.raises(ValueError, match="a_grid='auto' needs a_bits >= 2"):
        ExpansionConfig(a_bits=1, a_grid="auto")
    assert ExpansionConfig.from_json(ExpansionConfig(a_grid="auto").to_json()).a_grid == "auto"
