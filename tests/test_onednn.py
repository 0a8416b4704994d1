"""oneDNN's int8 convolution: the probe and the fallback when it fails (the path's accumulators against
every other kernel are in tests/test_intops.py, its epilogue's rescale in tests/test_exact_forward.py)."""
import torch

from fpxint import onednn
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
