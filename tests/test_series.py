"""Tensor level: integrality, grids, the proven bounds, monotone convergence, exact reconstruction."""
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from fpxint import expand_tensor
from fpxint.quant import contraction, grid_range, group_view
from fpxint.series import _series_steps

EPS = 2.0**-23  # float32 rounding of each residual update, relative to ||T||_inf

shapes = st.lists(st.integers(1, 9), min_size=1, max_size=4).map(tuple)
options = st.sampled_from([("symmetric", b) for b in range(1, 9)] + [("full", b) for b in range(2, 9)]
                          + [("asymmetric", b) for b in range(1, 9)])
granularities = st.sampled_from(["per_tensor", "per_channel", "per_sample", "per_token"])


def _tensor(shape, seed, spread):
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(shape, generator=g) * torch.exp(torch.randn(shape, generator=g) * spread)
    return t


@settings(max_examples=150, deadline=None)
@given(shape=shapes, opt=options, gran=granularities, terms=st.integers(1, 6), seed=st.integers(0, 10**6),
       spread=st.sampled_from([0.0, 1.0, 3.0]))
def test_terms_integral_on_grid_and_bound_holds(shape, opt, gran, terms, seed, spread):
    grid, bits = opt
    t = _tensor(shape, seed, spread)
    s = expand_tensor(t, bits=bits, terms=terms, granularity=gran, grid=grid)
    qmin, qmax = grid_range(bits, grid)
    assert s.q.dtype == (torch.uint8 if grid == "asymmetric" else torch.int8)
    q = s.q.to(torch.int32)
    assert int(q.min()) >= qmin and int(q.max()) <= qmax
    if grid == "symmetric" and bits == 1:
        assert set(q.unique().tolist()) <= {-1, 1}
    f = contraction(bits, grid)
    t_inf = t.abs().max().item()
    prev = math.inf
    for k in range(1, terms + 1):
        r = (t - s.partial(k)).abs().max().item()
        # ||R_k||_inf <= ||T||_inf f^k, up to float32 rounding of k residual updates
        assert r <= t_inf * f**k + 4 * k * EPS * t_inf + 1e-30, (k, r, t_inf * f**k)
        assert r <= prev + 4 * EPS * t_inf  # non-increasing
        prev = r
    # the bound reported by the series is the same formula
    assert s.bound(terms) == pytest.approx(t_inf * f**terms)


@settings(max_examples=60, deadline=None)
@given(shape=shapes, gran=st.sampled_from(["per_tensor", "per_channel"]), seed=st.integers(0, 10**6))
def test_per_group_bound(shape, gran, seed):
    """Each scale group obeys its own bound: ||R_n,g|| <= ||T_g|| / (2^b - 2)^n."""
    t = _tensor(shape, seed, 2.0)
    s = expand_tensor(t, bits=3, terms=3, granularity=gran)
    rows = t.reshape(t.shape[0], -1) if gran == "per_channel" else t.reshape(1, -1)
    res = (t - s.partial(3)).reshape(rows.shape)
    bound = rows.abs().amax(dim=1) / 6**3
    assert (res.abs().amax(dim=1) <= bound * (1 + 1e-5) + 12 * EPS * rows.abs().amax(dim=1)).all()


@pytest.mark.parametrize("bits,grid", [(3, "symmetric"), (3, "full"), (4, "symmetric"), (8, "symmetric"),
                                       (2, "asymmetric"), (2, "full")])
def test_many_terms_reconstruct_to_float_precision(bits, grid):
    """f^16 < 2^-24 for these grids (2-bit symmetric and binary, f = 1/2, need 24 terms)."""
    t = torch.randn(32, 75, generator=torch.Generator().manual_seed(1))
    s = expand_tensor(t, bits=bits, terms=16, granularity="per_channel", grid=grid)
    err = (t - s.partial(16)).abs().max().item()
    assert err <= 8 * EPS * t.abs().max().item()


def test_fixed_rule_matches_max_bound_and_one_reduction():
    t = torch.randn(64, 128, generator=torch.Generator().manual_seed(2))
    fixed = expand_tensor(t, bits=4, terms=4, granularity="per_channel", scale_rule="fixed")
    assert torch.allclose(fixed.scales[1:], fixed.scales[:-1] / 14)  # s_k = s_{k-1} / (2^b - 2)
    for k in range(1, 5):
        assert (t - fixed.partial(k)).abs().max() <= fixed.bound(k) * (1 + 1e-5)


def test_mse_rule_lowers_first_term_error_and_converges():
    g = torch.Generator().manual_seed(3)
    t = torch.randn(16, 4096, generator=g)
    t[:, 0] = 40.0  # outliers: MSE clipping pays off
    mx = expand_tensor(t, bits=3, terms=4, granularity="per_channel", scale_rule="max")
    ms = expand_tensor(t, bits=3, terms=4, granularity="per_channel", scale_rule="mse")
    mse = lambda s, k: (t - s.partial(k)).square().mean().item()
    assert mse(ms, 1) < 0.5 * mse(mx, 1)
    for k in range(2, 5):  # later terms follow the max rule from ||R_1||
        assert (t - ms.partial(k)).abs().max() <= ms.bound(k) * (1 + 1e-5) + 1e-6


def test_residual_norms_table():
    s = expand_tensor(torch.randn(64, 128), bits=4, terms=3, granularity="per_channel")
    df = s.residual_norms()
    assert list(df.columns) == ["term", "max_abs", "rel_l2", "sqnr_db", "bound"]
    assert (df.max_abs <= df.bound * (1 + 1e-5)).all()
    assert df.sqnr_db.is_monotonic_increasing and (df.sqnr_db.diff().dropna() > 15).all()  # ~23 dB per 4-bit term
    assert len(s.terms) == 3 and s.terms[0][0].dtype == torch.int8


def test_zero_tensor_and_zero_rows():
    t = torch.zeros(4, 8)
    t[1] = torch.randn(8)
    for grid, bits in [("symmetric", 1), ("symmetric", 4), ("full", 2), ("asymmetric", 3)]:
        s = expand_tensor(t, bits=bits, terms=3, granularity="per_channel", grid=grid)
        assert torch.isfinite(s.partial(3)).all()
        assert s.partial(3)[0].abs().max() == 0  # all-zero rows stay exactly zero


@pytest.mark.parametrize("kwargs,match", [
    (dict(bits=0), "bits=0"), (dict(bits=9), "1..8"), (dict(terms=0), "terms=0"), (dict(terms=17), "1..16"),
    (dict(grid="weird"), "symmetric, full, asymmetric"), (dict(granularity="per_row"), "per_tensor"),
    (dict(grid="full", bits=1), "bits >= 2"), (dict(scale_rule="median"), "max, mse, fixed"),
])
def test_bad_options_raise_value_error_naming_allowed_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        expand_tensor(torch.randn(4, 4), **kwargs)


@pytest.mark.parametrize("t,match", [
    (torch.empty(0, 3), "empty"), (torch.tensor([1.0, float("nan")]), "NaN"),
    (torch.tensor([1.0, float("inf")]), "NaN or Inf"),
])
def test_bad_tensors(t, match):
    with pytest.raises(ValueError, match=match):
        expand_tensor(t)


def test_fixed_rule_is_a_finer_uniform_quantizer():
    """Symmetric grid + fixed ratio: s_1 Q_1 + ... + s_n Q_n = s_n round(T / s_n) (docs/method.md)."""
    t = torch.randn(8, 300, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    s = expand_tensor(t, bits=3, terms=3, granularity="per_channel", scale_rule="fixed")
    sn = s.scales[-1].unsqueeze(1)
    direct = sn * torch.round(t / sn)
    assert torch.allclose(s.partial(3).double(), direct, atol=1e-12)


@pytest.mark.parametrize("bits", [7, 8])
@pytest.mark.parametrize("rule", ["max", "fixed"])
def test_terms_stay_on_the_grid_when_the_residual_is_subnormal(bits, rule):
    """Tiny rows reach subnormal residuals by the 3rd-6th term, where s = amax / qmax loses precision:
    without a clamp, 8-bit terms reached 136 (stored as -128 after int8 wrap-around) and 7-bit ones 94."""
    from fpxint.series import expand_tensor_fused

    t = torch.randn(500, 64, generator=torch.Generator().manual_seed(0)) * 1e-32
    lo, hi = grid_range(bits, "symmetric")
    for r in (t, t * 1e-3):
        s = expand_tensor(r, bits, 6, "per_channel", "symmetric", rule)
        assert lo <= int(s.q.min()) and int(s.q.max()) <= hi
        assert torch.equal(s.q, expand_tensor_fused(r, bits, 6, "per_channel", "symmetric", rule).q)
        steps = _series_steps(group_view(r, "per_channel"), bits, 6, "symmetric", rule)
        assert all(float(q.abs().max()) <= hi for q, *_ in steps)  # before the int8 cast, too
