"""The fused series (fpxint.fused) against the eager oracle (fpxint.series), bit for bit.

Every test compares with `series.expand_tensor(backend="torch")` / `series.expanded_sum` through torch.equal: the
kernel mirrors each float operation, so no tolerance is needed. The fallback path (no compiler,
backend="torch", float64, non-CPU) must give the same results.
"""
import functools
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

import fpxint
import fpxint.layers as layers
from fpxint import fused
from fpxint.quant import group_view
from fpxint import series
from fpxint.series import _series_steps, expanded_sum

expand_tensor = functools.partial(series.expand_tensor, backend="torch")  # the eager oracle

COMBOS = [(g, r) for g in ("symmetric", "full", "asymmetric") for r in ("max", "fixed", "mse")
          if not (g == "asymmetric" and r == "fixed")]
ODD_SHAPES = [(64, 3, 3, 3), (32, 1, 3, 3), (7, 1), (1, 5), (1, 1), (33, 129), (5,), (), (2, 3, 4)]

@pytest.fixture(scope="module")
def _kernel():
    """Skips when the kernel does not build; a fixture, so nothing is compiled at collection time."""
    info = fused.kernel_info()
    if info["backend"] != "c":
        pytest.skip(f"fused C kernel unavailable: {info['reason']}")


needs_kernel = pytest.mark.usefixtures("_kernel")


def bits_for(grid, rule="max"):
    """All bit widths; the MSE rule (16 eager candidate passes per call) on a spread of them."""
    bits = range(2, 9) if grid == "full" else range(1, 9)
    return [b for b in bits if b in (1, 2, 5, 8)] if rule == "mse" else bits


def assert_same_series(a, b):
    assert torch.equal(a.q, b.q) and a.q.dtype == b.q.dtype and a.q.shape == b.q.shape
    assert torch.equal(a.scales, b.scales) and a.scales.dtype == b.scales.dtype
    if a.zero_points is None:
        assert b.zero_points is None
    else:
        assert torch.equal(a.zero_points, b.zero_points) and a.zero_points.dtype == b.zero_points.dtype
    assert (a.bits, a.grid, a.granularity, a.scale_rule) == (b.bits, b.grid, b.granularity, b.scale_rule)
    assert b.source is not None and b.source.dtype == a.source.dtype and torch.equal(a.source, b.source)


def weight(shape, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g) * scale


@needs_kernel
@pytest.mark.parametrize("grid,rule", COMBOS)
@pytest.mark.parametrize("granularity", ["per_channel", "per_tensor"])
def test_expand_weights_equals_expand_tensor(grid, rule, granularity):
    ws = [weight(s, i) for i, s in enumerate(ODD_SHAPES)]
    for bits in bits_for(grid, rule):
        got = series.expand_weights(ws, bits, 5, granularity, grid, rule, backend="c")
        for w, g in zip(ws, got):
            assert_same_series(expand_tensor(w, bits, 5, granularity, grid, rule), g)


@needs_kernel
@pytest.mark.parametrize("terms", [1, 2, 3, 8, 16])
def test_many_terms_reach_the_float_floor(terms):
    w = weight((48, 200), 1)
    for grid in ("symmetric", "asymmetric"):
        assert_same_series(expand_tensor(w, 3, terms, "per_channel", grid),
                           series.expand_tensor_fused(w, 3, terms, "per_channel", grid, backend="c"))


@needs_kernel
def test_long_rows_split_over_threads_and_per_token():
    w = weight((150_001,), 2)                          # one long row: split path
    wide = weight((3, 70_000), 3)                      # few long rows: split path, several rows
    tok = weight((4, 6, 10), 4)
    for grid, rule in COMBOS[:2] + [("full", "fixed"), ("asymmetric", "max")]:  # long mse: slow tier
        bits = 3
        assert_same_series(expand_tensor(w, bits, 4, "per_tensor", grid, rule),
                           series.expand_tensor_fused(w, bits, 4, "per_tensor", grid, rule, backend="c"))
        assert_same_series(expand_tensor(wide, bits, 3, "per_channel", grid, rule),
                           series.expand_tensor_fused(wide, bits, 3, "per_channel", grid, rule, backend="c"))
        assert_same_series(expand_tensor(tok, bits, 3, "per_token", grid, rule),
                           series.expand_tensor_fused(tok, bits, 3, "per_token", grid, rule, backend="c"))


@needs_kernel
def test_special_values_all_zero_rows_constants_and_ties():
    w = torch.zeros(6, 17)
    w[1] = 1.0                                         # constant row
    w[2, 3] = -2.5                                     # one value
    w[3] = torch.arange(17) * 0.5 - 4                  # exact half steps: rounding ties
    w[4] = torch.tensor([1e-30, -1e-38, 3e-39] + [0.0] * 14)   # tiny and subnormal
    w[5] = torch.tensor([1.5e38, -1.5e38] + [1.0] * 15)  # near the float32 maximum (range still finite)
    for grid, rule in COMBOS:
        for bits in bits_for(grid, rule):
            assert_same_series(expand_tensor(w, bits, 4, "per_channel", grid, rule),
                               series.expand_tensor_fused(w, bits, 4, "per_channel", grid, rule, backend="c"))


@needs_kernel
@pytest.mark.slow
@pytest.mark.parametrize("grid,rule", COMBOS)
def test_long_rows_every_combo(grid, rule):
    w, x = weight((300_001,), 18), weight((2, 100_000), 19)
    for bits in (1, 4, 8) if grid != "full" else (2, 4, 8):
        assert_same_series(expand_tensor(w, bits, 6, "per_tensor", grid, rule),
                           series.expand_tensor_fused(w, bits, 6, "per_tensor", grid, rule, backend="c"))
        for gran in ("per_tensor", "per_sample"):
            assert torch.equal(expanded_sum(x, bits, 4, gran, grid, rule),
                               series.expanded_sum_fused(x, bits, 4, gran, grid, rule, backend="c"))


@needs_kernel
def test_dtypes_follow_expand_tensor():
    w = weight((8, 9), 5)
    for t in (w.half(), w.bfloat16(), w.double(), (w * 10).to(torch.int32), w.t()):  # last: non-contiguous
        assert_same_series(expand_tensor(t, 4, 3, "per_channel"), series.expand_tensor_fused(t, 4, 3, "per_channel"))


@needs_kernel
def test_thread_count_does_not_change_results():
    ws = [weight((64, 576), 6), weight((200_000,), 7)]
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = series.expand_weights(ws, 4, 4, "per_tensor", backend="c")
        torch.set_num_threads(max(2, before))
        many = series.expand_weights(ws, 4, 4, "per_tensor", backend="c")
    finally:
        torch.set_num_threads(before)
    for a, b in zip(one, many):
        assert_same_series(a, b)


@needs_kernel
@pytest.mark.parametrize("grid,rule", COMBOS)
@pytest.mark.parametrize("granularity", ["per_sample", "per_tensor", "per_token"])
def test_expanded_sum_fused_equals_expanded_sum(grid, rule, granularity):
    xs = [weight((4, 3, 5, 5), 8).relu(), weight((2, 7), 9), weight((1, 1), 10)]
    for bits in [b for b in bits_for(grid, rule) if b in (1, 2, 3, 4, 8)]:
        for x in xs:
            for coeffs in (None, (1, 0, 1)) if rule == "mse" else (None, (1, 0, 1), (0, 1), (1, 1, 0), (0, 0, 0),
                                                                   (2, -1, 0.5)):
                want = expanded_sum(x, bits, 3, granularity, grid, rule, coeffs=coeffs)
                got = series.expanded_sum_fused(x, bits, 3, granularity, grid, rule, coeffs=coeffs, backend="c")
                assert torch.equal(want, got), (bits, tuple(x.shape), coeffs)


@needs_kernel
def test_expanded_sum_fused_long_rows():
    x = weight((3, 70_000), 11)
    for grid, rule in COMBOS[:2] + [("full", "fixed"), ("asymmetric", "max")]:
        for gran in ("per_tensor", "per_sample"):
            for coeffs in (None, (1, 0, 1)):
                want = expanded_sum(x, 4, 3, gran, grid, rule, coeffs=coeffs)
                assert torch.equal(want, series.expanded_sum_fused(x, 4, 3, gran, grid, rule, coeffs=coeffs, backend="c"))


@needs_kernel
def test_coefficient_rows_match_the_multi_group_sum_in_layers():
    """total_order keeps prefix rows of C; layers.py sums dequantized activation terms per row."""
    x = weight((3, 4, 6, 6), 20).relu()
    for grid in ("symmetric", "asymmetric"):
        steps = list(_series_steps(group_view(x, "per_sample"), 4, 4, grid, "max"))
        xs = [((q - z) if z is not None else q).reshape(x.shape) * s.reshape(-1, 1, 1, 1) for q, s, z, _ in steps]
        for row in ((1, 1, 1, 1), (1, 1, 1, 0), (1, 1, 0, 0), (1, 0, 0, 0), (0, 1, 1, 0)):
            want = sum(c * xj for c, xj in zip(row, xs) if c)
            for backend in ("c", "torch"):
                got = series.expanded_sum_fused(x, 4, 4, "per_sample", grid, "max", coeffs=row, backend=backend,
                                               accumulate=True)
                assert torch.equal(want, got), (row, backend)


def test_autograd_inputs_take_the_eager_path():
    w = weight((6, 5), 21).requires_grad_()
    s = series.expand_tensor_fused(w, 4, 2, "per_channel")
    assert s.scales.requires_grad == expand_tensor(w, 4, 2, "per_channel").scales.requires_grad
    y = series.expanded_sum_fused(w, 4, 2)
    assert y.requires_grad and torch.equal(y, expanded_sum(w, 4, 2))


def test_non_finite_and_bad_arguments_raise_like_eager():
    bad = weight((4, 4), 12)
    bad[2, 1] = float("nan")
    inf = weight((4, 4), 13)
    inf[0, 0] = float("inf")
    for t in (bad, inf):
        with pytest.raises(ValueError, match="NaN or Inf"):
            series.expand_weights([weight((3, 3)), t])
    with pytest.raises(ValueError, match="empty"):
        series.expand_weights([torch.empty(0, 3)])
    with pytest.raises(ValueError, match="torch.Tensor"):
        series.expand_weights([[1.0, 2.0]])
    with pytest.raises(ValueError, match="bits per term"):
        series.expand_weights([bad], bits=9)
    with pytest.raises(ValueError, match="scale_rule='fixed'"):
        series.expand_weights([bad], grid="asymmetric", scale_rule="fixed")
    with pytest.raises(ValueError, match="backend="):
        series.expand_weights([bad], backend="gpu")
    x = weight((2, 5), 14)
    x[1, 1] = float("nan")                             # the activation path hands NaN to the eager code
    assert torch.equal(torch.isnan(series.expanded_sum_fused(x, 4, 2)), torch.isnan(expanded_sum(x, 4, 2)))


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 40), cols=st.integers(1, 300), bits=st.integers(1, 8), terms=st.integers(1, 6),
       combo=st.sampled_from(COMBOS), gran=st.sampled_from(["per_channel", "per_tensor"]),
       scale=st.floats(1e-6, 1e6), seed=st.integers(0, 2**31 - 1))
def test_property_random_shapes(rows, cols, bits, terms, combo, gran, scale, seed):
    grid, rule = combo
    bits = max(bits, 2) if grid == "full" else bits
    w = weight((rows, cols), seed, scale)
    assert_same_series(expand_tensor(w, bits, terms, gran, grid, rule),
                       series.expand_tensor_fused(w, bits, terms, gran, grid, rule))
    x = w.reshape(1, rows, cols)
    assert torch.equal(expanded_sum(x, bits, terms, "per_sample", grid, rule),
                       series.expanded_sum_fused(x, bits, terms, "per_sample", grid, rule))


def test_torch_backend_and_missing_compiler_fall_back(monkeypatch):
    ws = [weight((16, 3, 3, 3), 15), weight((10, 16), 16)]
    want = [expand_tensor(w, 4, 3, "per_channel") for w in ws]
    for got in series.expand_weights(ws, 4, 3, "per_channel", backend="torch"), series.expand_weights(ws, 4, 3):
        for a, b in zip(want, got):
            assert_same_series(a, b)
    monkeypatch.setattr(fused.shutil, "which", lambda name: None)
    fused._load_once.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="eager path"):
            info = fused.kernel_info()
        assert info["backend"] == "torch" and "compiler" in info["reason"]
        for a, b in zip(want, series.expand_weights(ws, 4, 3, "per_channel")):
            assert_same_series(a, b)
        x = weight((2, 4, 3, 3), 17)
        assert torch.equal(series.expanded_sum_fused(x, 4, 2), expanded_sum(x, 4, 2))
        with pytest.raises(RuntimeError, match="not available"):
            series.expand_weights(ws, backend="c")
    finally:
        monkeypatch.undo()
        fused._load_once.cache_clear()


def _uid():
    return os.getuid()


@needs_kernel
def test_kernel_cache_is_private_and_built_atomically(tmp_path):
    folder = tmp_path / "cache" / "kernels"
    lib, info = fused._load_from(folder, _uid())
    assert lib is not None and info["backend"] == "c" and Path(info["path"]).parent == folder
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert [p.name for p in folder.iterdir()] == [Path(info["path"]).name]  # no temporary left behind
    assert fused._load_from(folder, _uid())[1]["cached"] is True


def _refused(folder, uid, match):
    lib, info = fused._load_from(folder, uid)
    assert lib is None and info["backend"] == "torch" and "refused" in info["reason"], info
    assert match in info["reason"], info["reason"]


@needs_kernel
def test_kernel_cache_refuses_open_folders_foreign_files_and_links(tmp_path):
    folder = tmp_path / "kernels"
    lib, info = fused._load_from(folder, _uid())
    built = Path(info["path"])
    os.chmod(folder, 0o755)  # others may read
    _refused(folder, _uid(), "mode 755")
    os.chmod(folder, 0o700)
    _refused(folder, _uid() + 1, "belongs to uid")  # the folder is someone else's
    os.chmod(built, 0o722)  # a library others can write
    _refused(folder, _uid(), "mode 722")
    os.chmod(built, 0o700)
    if _uid() == 0:  # as root: a really foreign-owned (planted) library
        os.chown(built, 65534, 65534)
        _refused(folder, 0, "uid 65534")
        os.chown(built, 0, 0)
    planted = tmp_path / "planted.so"
    built.rename(planted)
    built.symlink_to(planted)  # a link in place of the library
    _refused(folder, _uid(), "a link")
    link = tmp_path / "link"
    link.symlink_to(folder)
    _refused(link, _uid(), "not a folder")


def test_refused_cache_falls_back_with_equal_results(tmp_path, monkeypatch):
    folder = tmp_path / "kernels"
    folder.mkdir(mode=0o777)
    os.chmod(folder, 0o777)
    refused = fused._load_from(folder, _uid())
    assert refused[0] is None and "refused" in refused[1]["reason"]
    ws = [weight((16, 3, 3, 3), 21), weight((10, 16), 22)]
    monkeypatch.setattr(fused, "_load", lambda: refused)
    for a, b in zip(series.expand_weights(ws, 4, 3, "per_channel"), [expand_tensor(w, 4, 3, "per_channel") for w in ws]):
        assert_same_series(a, b)
    x = weight((2, 4, 3, 3), 23)
    assert torch.equal(series.expanded_sum_fused(x, 4, 2), expanded_sum(x, 4, 2))
    assert list(folder.iterdir()) == []  # nothing was built in a folder that was refused


def test_import_does_not_build_the_kernel():
    code = "import fpxint, fpxint.fused as f; print(f._load_once.cache_info().currsize)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "0"


@needs_kernel
def test_expanded_model_forward_is_unchanged_with_the_fused_activation_path(monkeypatch):
    """The wiring in layers.py: the fused activation path gives the eager path's outputs, bit for bit."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, groups=8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 10)).eval()
    x = torch.randn(5, 3, 8, 8)
    for cfg in (fpxint.ExpansionConfig(w_bits=4, w_terms=2, a_bits=4, a_terms=2),
                fpxint.ExpansionConfig(w_bits=3, w_terms=3, a_bits=3, a_terms=3, truncation="total_order"),
                fpxint.ExpansionConfig(a_grid="asymmetric", a_granularity="per_tensor", scale_rule="mse")):
        q = fpxint.expand(model, cfg, device="cpu")
        with torch.no_grad():
            got = q(x)  # layers.py calls expand_tensor_fused
            monkeypatch.setattr(layers, "expand_tensor_fused", functools.partial(series.expand_tensor_fused,
                                                                                backend="torch"))
            want = q(x)  # the eager series
            monkeypatch.undo()
        assert torch.equal(want, got), cfg.label()


@needs_kernel
def test_public_expand_tensor_takes_the_fused_path_with_the_same_bits(monkeypatch):
    """`fpxint.expand_tensor` (default backend) runs the kernel and equals the eager loop."""
    for shape, gran in [((64, 3, 3, 3), "per_channel"), ((5, 300), "per_tensor"), ((4, 7, 9), "per_token")]:
        for grid, rule in COMBOS:
            w = weight(shape, 31)
            assert_same_series(expand_tensor(w, 4, 4, gran, grid, rule), fpxint.expand_tensor(w, 4, 4, gran, grid, rule))
    calls, real = [], fused.run_kernel
    monkeypatch.setattr(fused, "run_kernel", lambda *a, **k: calls.append(1) or real(*a, **k))
    fpxint.expand_tensor(weight((8, 8), 32), 4, 2, "per_channel")
    assert calls, "expand_tensor did not reach the fused kernel"
