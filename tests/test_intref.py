"""The int64 references against PyTorch's own convolution and matmul on integers small enough for float64
to hold every partial sum exactly (|sum| < 2**53), so any disagreement is the reference's error."""
import pytest
import torch
import torch.nn.functional as F

from fpxint.intref import int64_conv_reference, int64_linear_reference

CASES = [  # (dim, weight shape, input shape, stride, padding, dilation, groups)
    (2, (16, 3, 3, 3), (2, 3, 15, 13), 2, 1, 1, 1),
    (2, (8, 4, 3, 1), (2, 4, 10, 10), 1, "valid", 1, 1),
    (2, (12, 2, 3, 3), (2, 8, 11, 11), 1, 2, 2, 4),
    (2, (16, 1, 3, 3), (2, 16, 9, 9), 1, 1, 1, 16),
    (2, (6, 4, 4, 2), (2, 4, 9, 8), 1, "same", (1, 2), 1),
    (1, (12, 8, 5), (3, 8, 31), 2, 2, 1, 1),
    (1, (6, 6, 4), (2, 6, 17), 1, "same", 2, 1),
    (1, (6, 2, 3), (2, 6, 17), 1, 1, 1, 3),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"d{c[0]}w{c[1]}g{c[6]}p{c[4]}")
def test_int64_conv_reference_equals_an_exact_float64_convolution(case):
    dim, wshape, xshape, stride, padding, dilation, groups = case
    g = torch.Generator().manual_seed(0)
    x = torch.randint(-255, 256, xshape, generator=g)
    w = torch.randint(-255, 256, wshape, generator=g)
    got = int64_conv_reference(x, w, dim, stride, padding, dilation, groups)
    conv = F.conv1d if dim == 1 else F.conv2d
    want = conv(x.double(), w.double(), None, stride, padding, dilation, groups)
    assert got.dtype == torch.int64 and torch.equal(got, want.to(torch.int64))


def test_int64_linear_reference_past_int32():
    """Sums past 2**31 stay exact (int32 would wrap), and equal float64 where it is exact."""
    x = torch.full((3, 200_000), -128, dtype=torch.int8)
    w = torch.full((2, 200_000), -128, dtype=torch.int8)
    got = int64_linear_reference(x, w)
    assert got.dtype == torch.int64 and bool((got == 200_000 * 128 * 128).all()) and int(got[0, 0]) > 2**31
    g = torch.Generator().manual_seed(1)
    a, b = torch.randint(-255, 256, (5, 77), generator=g), torch.randint(-255, 256, (4, 77), generator=g)
    assert torch.equal(int64_linear_reference(a, b), (a.double() @ b.double().t()).to(torch.int64))
