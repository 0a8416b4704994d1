"""oneDNN's int8 convolution: the probe and the fallback when it fails (the path's accumulators against
every other kernel are in tests/test_intops.py, its epilogue's rescale in tests/test_exact_forward.py)."""
import pytest
import torch
from torch import nn

from fpxint import ExpansionConfig, expand, onednn, set_mode
from fpxint.layers import set_int_kernel
from fpxint.intops import conv_terms


def test_onednn_probe_and_fallback(monkeypatch):
    """The probe runs (True on a VNNI CPU, where the path is taken); when it fails, 'onednn' falls back
    to _int_mm with the same integers."""
    g = torch.Generator().manual_seed(4)
    xq = torch.randint(-8, 8, (2, 2, 16, 7, 7), generator=g, dtype=torch.int8)
    wq = torch.randint(-8, 8, (2, 24, 16, 3, 3), generator=g, dtype=torch.int8)
    want = conv_terms(xq, wq, 2, 1, 1, 1, 1, 8, 8, "float64")
    got = conv_terms(xq, wq, 2, 1, 1, 1, 1, 8, 8, "onednn")
    assert got.dtype == (torch.float32 if onednn.onednn_exact() else torch.int32) and torch.equal(got.long(), want)
    monkeypatch.setattr(onednn, "onednn_exact", lambda: False)
    got = conv_terms(xq, wq, 2, 1, 1, 1, 1, 8, 8, "onednn")
    assert got.dtype == torch.int32 and torch.equal(got.long(), want)
    assert not onednn.onednn_ok(1024, 128, 128)  # 1024 * 2**14 = 2**24: past float32's exact integers


def test_grouped_convolutions_leave_onednn_and_stay_exact():
    """oneDNN's int8 grouped convolution gives wrong accumulators for some shapes (24 input channels per
    group: RegNetY's group width): `onednn_ok` refuses grouped (non-depthwise) convolutions, and
    conv_terms with kernel 'onednn' equals the float64 integers on exactly those shapes."""
    g = torch.Generator().manual_seed(5)
    assert not onednn.onednn_ok(24 * 9, 8, 8, groups=9, in_per_group=24)
    assert onednn.onednn_ok(9, 8, 8, groups=72, in_per_group=1) == onednn.onednn_exact()
    for cin, groups, stride, hw in [(216, 9, 2, 16), (48, 2, 1, 8), (8, 4, 2, 5)]:
        xq = torch.randint(-8, 8, (2, 1, cin, hw, hw), generator=g, dtype=torch.int8)
        wq = torch.randint(-8, 8, (2, cin, cin // groups, 3, 3), generator=g, dtype=torch.int8)
        want = conv_terms(xq, wq, 2, stride, 1, 1, groups, 8, 8, "float64")
        assert torch.equal(conv_terms(xq, wq, 2, stride, 1, 1, groups, 8, 8, "onednn").long(), want)


def test_onednn_plain_and_depthwise_shapes_match_int64():
    """The shapes oneDNN is trusted with (groups 1, depthwise), varied in channels, kernel, stride,
    padding and size, against the int64 reference: a later oneDNN that breaks one fails here."""
    if not onednn.onednn_exact():
        pytest.skip("oneDNN's int8 convolution is not exact on this CPU: the path is never taken")
    from fpxint.intref import int64_conv_reference

    g = torch.Generator().manual_seed(6)
    shapes = [(24, 48, 1, 3, 2, 1, 8), (40, 24, 1, 1, 1, 0, 9), (3, 16, 1, 7, 2, 3, 17), (72, 72, 72, 3, 2, 1, 16),
              (24, 48, 24, 5, 1, 2, 7), (144, 144, 144, 3, 1, 1, 14)]
    for cin, cout, groups, k, stride, pad, hw in shapes:
        x = torch.randint(-128, 128, (1, 1, cin, hw, hw), generator=g, dtype=torch.int8)
        w = torch.randint(-127, 128, (1, cout, cin // groups, k, k), generator=g, dtype=torch.int8)
        got = onednn.onednn_conv(x, w, 2, stride, pad, 1, groups, {})[0, 0]
        assert torch.equal(got.long(), int64_conv_reference(x[0], w[0], 2, stride, pad, 1, groups)), (cin, cout, groups)


def test_a_grouped_layer_gives_the_same_bits_on_every_kernel():
    """RegNetY-3.2GF's failing layer (216 channels, 9 groups, stride 2) expanded: simulate and integer mode
    on the default kernel give the float64 kernel's output bit for bit (a batch of 1 was off by 40 dB)."""
    torch.manual_seed(0)
    conv = nn.Conv2d(216, 216, 3, stride=2, padding=1, groups=9)
    q = expand(nn.Sequential(conv), ExpansionConfig(w_bits=4, w_terms=3, a_bits=4, a_terms=3), device="cpu")
    with torch.no_grad():
        for x in (torch.rand(1, 216, 16, 16), torch.rand(2, 216, 16, 16)):  # oneDNN failed on the batch of 1
            for mode in ("simulate", "integer"):
                set_mode(q, mode)
                want = set_int_kernel(q, "float64")(x)
                assert torch.equal(set_int_kernel(q, "auto")(x), want), (mode, len(x))


@pytest.mark.parametrize("grid", ["asymmetric", "auto"])
def test_8bit_asymmetric_terms_take_the_fused_int8_path_with_the_same_bits(grid):
    """8-bit asymmetric / auto activations (terms up to 255) run on oneDNN's fused int8 path, their zero
    points given to oneDNN per run of images: post-ReLU inputs (zero point 0 in every image), signed
    inputs (one zero point per image) and a mix, with symmetric and asymmetric ('same', even kernel)
    padding. Outputs equal the unfused int8 path and the float64 kernel bit for bit."""
    if not (onednn.onednn_exact() and onednn.onednn_epilogue_matches()):
        pytest.skip("oneDNN's int8 path is not trusted on this CPU: the fast path is never taken")
    from fpxint.exact_forward import exact_forward, onednn_forward

    torch.manual_seed(9)
    cfg = ExpansionConfig(w_bits=8, w_terms=2, a_bits=8, a_terms=2, a_grid=grid, mode="integer")
    for conv in (nn.Conv2d(16, 24, 3, padding=1), nn.Conv2d(16, 24, 4, padding="same"),
                 nn.Conv2d(16, 16, 3, stride=2, padding=1, groups=16)):
        layer = expand(nn.Sequential(conv), cfg, device="cpu")[0]
        x = torch.randn(4, 16, 11, 11)
        for inp in (x.relu(), x, torch.cat([x[:2].relu(), x[2:]])):
            with torch.no_grad():
                fast = onednn_forward(layer, inp)
                assert fast is not None  # the fused path applies to these terms
                assert torch.equal(fast, exact_forward(layer, inp, "int_mm"))
                assert torch.equal(fast, exact_forward(layer, inp, "float64"))
