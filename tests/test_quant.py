"""Quantization primitives (fpxint/quant.py): grid ranges and contraction factors by hand, one max-rule step
within f * ||r||_inf for every grid and bit width, integers on the grid, zero held exactly, MSE never worse."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

from fpxint.quant import (MSE_CANDIDATES, all_finite, contraction, dequantize, grid_range, group_view, max_rule_scale,
                          mse_scale, quantize, term_dtype)

GRID_BITS = [(g, b) for g in ("symmetric", "full", "asymmetric", "auto") for b in range(1, 9)
             if not (g in ("full", "auto") and b == 1)]


@pytest.mark.parametrize("grid,bits,expected", [
    ("symmetric", 1, (-1, 1)), ("symmetric", 2, (-1, 1)), ("symmetric", 4, (-7, 7)), ("symmetric", 8, (-127, 127)),
    ("full", 2, (-2, 1)), ("full", 4, (-8, 7)), ("full", 8, (-128, 127)),
    ("asymmetric", 1, (0, 1)), ("asymmetric", 4, (0, 15)), ("asymmetric", 8, (0, 255)),
    ("auto", 2, (-1, 3)), ("auto", 4, (-7, 15)), ("auto", 8, (-127, 255)),
])
def test_grid_ranges_by_hand(grid, bits, expected):
    assert grid_range(bits, grid) == expected
    lo, hi = expected  # the storage dtype holds the whole grid
    info = torch.iinfo(term_dtype(grid))
    assert info.min <= lo and hi <= info.max


@pytest.mark.parametrize("grid,bits,f", [("symmetric", 1, 1 / 2), ("symmetric", 2, 1 / 2), ("symmetric", 4, 1 / 14),
                                         ("symmetric", 8, 1 / 254), ("full", 4, 1 / 15), ("asymmetric", 8, 1 / 255),
                                         ("auto", 4, 1 / 14)])
def test_contraction_by_hand(grid, bits, f):
    assert contraction(bits, grid) == pytest.approx(f, rel=1e-15)


@pytest.mark.parametrize("bits,grid,match", [(1, "full", "bits >= 2"), (1, "auto", "bits >= 2"),
                                             (4, "ternary", "symmetric, full, asymmetric, auto"),
                                             (0, "symmetric", "1..8"), (9, "symmetric", "1..8")])
def test_bad_grids_and_bits_are_refused(bits, grid, match):
    with pytest.raises(ValueError, match=match):
        grid_range(bits, grid)


def test_group_view_rows_share_a_scale_and_alias_the_tensor():
    t = torch.arange(2 * 3 * 4.0).reshape(2, 3, 4)
    assert group_view(t, "per_tensor").shape == (1, 24)
    assert group_view(t, "per_channel").shape == (2, 12) and group_view(t, "per_sample").shape == (2, 12)
    assert group_view(t, "per_token").shape == (6, 4)
    assert torch.equal(group_view(t, "per_token")[5], t[1, 2])  # the last token of the last sample
    assert group_view(t, "per_channel").data_ptr() == t.data_ptr()  # a view: no copy of a weight
    assert group_view(torch.tensor(3.0), "per_tensor").shape == (1, 1)
    with pytest.raises(ValueError, match="per_tensor, per_channel, per_sample, per_token"):
        group_view(t, "per_row")


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(GRID_BITS), st.integers(1, 5), st.integers(1, 40), st.integers(0, 2**31 - 1),
       st.floats(1e-3, 1e3), st.booleans())
def test_one_max_rule_step_is_on_the_grid_and_within_the_bound(grid_bits, rows, cols, seed, magnitude, nonneg):
    """||r - s q||_inf <= f ||r||_inf per row (f = contraction), q integral and inside the grid."""
    grid, bits = grid_bits
    g = torch.Generator().manual_seed(seed)
    r = torch.randn(rows, cols, generator=g, dtype=torch.float64) * magnitude
    if nonneg:
        r = r.abs()  # post-ReLU rows: the auto grid takes its unsigned branch
    scale, zero = max_rule_scale(r, bits, grid)
    q = quantize(r, scale, zero, bits, grid)
    lo, hi = grid_range(bits, grid)
    assert torch.equal(q, q.round()) and q.min() >= lo and q.max() <= hi
    if zero is not None:
        assert torch.equal(zero, zero.round()) and zero.min() >= lo and zero.max() <= hi
    err = (r - dequantize(q, scale, zero)).abs().amax(dim=1)
    bound = contraction(bits, grid) * r.abs().amax(dim=1)
    assert (err <= bound * (1 + 1e-12)).all(), (err - bound).max()


def test_zero_rows_give_zero_and_the_asymmetric_grid_holds_zero_exactly():
    r = torch.tensor([[0.0, 0.0, 0.0], [0.3, 1.7, 2.9], [-0.5, 0.0, 0.25]])
    for grid in ("symmetric", "full", "asymmetric", "auto"):
        s, z = max_rule_scale(r, 4, grid)
        q = quantize(r, s, z, 4, grid)
        assert torch.equal(dequantize(q, s, z)[0], torch.zeros(3)), grid  # scale 0: no division by zero
    s, z = max_rule_scale(r, 4, "asymmetric")
    assert dequantize(quantize(r, s, z, 4, "asymmetric"), s, z)[2, 1] == 0.0  # zero padding stays exact
    assert torch.equal(quantize(torch.tensor([[0.0, -2.0, 3.0]]), torch.tensor([[2.0]]), None, 1, "symmetric"),
                       torch.tensor([[1.0, -1.0, 1.0]]))  # binary grid {-1, +1}: 0 goes up


def test_integer_multiples_of_a_power_of_two_scale_round_trip_exactly():
    k = torch.tensor([[-7.0, -3.0, 0.0, 5.0, 7.0]])
    scale = torch.tensor([[0.125]])
    assert torch.equal(quantize(k * 0.125, scale, None, 4, "symmetric"), k)
    assert torch.equal(dequantize(k, scale, None), k * 0.125)


@settings(max_examples=12, deadline=None)
@given(st.sampled_from([(g, b) for g, b in GRID_BITS if g != "auto"]), st.integers(0, 2**31 - 1))
def test_mse_scale_is_never_worse_than_the_max_rule(grid_bits, seed):
    """The max rule's scale is the first MSE candidate (ratio 1.0): the search can only lower the error."""
    grid, bits = grid_bits
    assert MSE_CANDIDATES[0] == 1.0
    r = torch.randn(4, 64, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    r[:, 0] *= 20  # one outlier per row: clipping it pays off at low bit widths

    def sse(s, z):
        return (r - dequantize(quantize(r, s, z, bits, grid), s, z)).square().sum(dim=1)

    assert (sse(*mse_scale(r, bits, grid)) <= sse(*max_rule_scale(r, bits, grid))).all()


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16]),
       st.integers(1, 5000), st.integers(0, 3), st.integers(0, 2**31 - 1))
def test_all_finite_agrees_with_isfinite_everywhere(dtype, n, n_bad, seed):
    """The min/max shortcut against the element-wise definition, with NaN / +Inf / -Inf anywhere
    (also in vectorized tails and alone among finite values)."""
    g = torch.Generator().manual_seed(seed)
    t = (torch.randn(n, generator=g) * 100).to(dtype)
    bad = torch.tensor([float("nan"), float("inf"), -float("inf")], dtype=dtype)
    for _ in range(n_bad):
        t[int(torch.randint(n, (1,), generator=g))] = bad[int(torch.randint(3, (1,), generator=g))]
    assert all_finite(t) == bool(torch.isfinite(t).all())
    assert all_finite(t.reshape(1, -1, 1).expand(2, -1, 3)) == bool(torch.isfinite(t).all())  # strided views


def test_all_finite_on_edge_cases():
    assert all_finite(torch.empty(0)) and all_finite(torch.arange(5))  # nothing to check / integers
    assert not all_finite(torch.tensor([float("nan")])) and not all_finite(torch.tensor([1.0, -float("inf")]))
