"""Convolution geometry: im2col rows times the weight matrix is the convolution (exact: small integers in
float64), for 1-D and 2-D, strides, dilations, 'same' / 'valid' / numeric padding, any input strides."""
import pytest
import torch
import torch.nn.functional as F

from fpxint.convgeom import conv_geometry, conv_weight_matrix, im2col_nhwc, same_padding

CASES = [  # (dim, weight shape, input shape, stride, padding, dilation)
    (2, (16, 3, 3, 3), (2, 3, 15, 13), 2, 1, 1),
    (2, (8, 4, 3, 1), (2, 4, 10, 10), 1, "valid", 1),
    (2, (12, 8, 3, 3), (2, 8, 11, 11), 1, 2, 2),
    (2, (8, 8, 1, 1), (3, 8, 5, 7), 1, 0, 1),
    (2, (6, 4, 4, 2), (2, 4, 9, 8), 1, "same", (1, 2)),  # even kernels: the odd pixel goes last
    (1, (12, 8, 5), (3, 8, 31), 2, 2, 1),
    (1, (6, 6, 4), (2, 6, 17), 1, "same", 2),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"d{c[0]}w{c[1]}p{c[4]}")
@pytest.mark.parametrize("channels_last", [False, True])
def test_im2col_times_weight_matrix_is_the_convolution(case, channels_last):
    dim, wshape, xshape, stride, padding, dilation = case
    g = torch.Generator().manual_seed(0)
    x = torch.randint(-128, 128, xshape, generator=g).double()
    w = torch.randint(-128, 128, wshape, generator=g).double()
    conv = F.conv1d if dim == 1 else F.conv2d
    want = conv(x, w, None, stride, padding, dilation)
    ksize, st, dil, pads = conv_geometry(dim, wshape[2:] if dim == 2 else wshape[2], stride, padding, dilation)
    x4 = x.unsqueeze(2) if dim == 1 else x
    if channels_last:
        x4 = x4.contiguous(memory_format=torch.channels_last)
    cols, (ho, wo) = im2col_nhwc(x4, ksize, st, dil, pads)
    got = (cols @ conv_weight_matrix(w).t()).reshape(x.shape[0], ho, wo, -1).permute(0, 3, 1, 2)
    got = got.squeeze(2) if dim == 1 else got
    assert torch.equal(got, want)  # |sums| < 2**53: float64 is exact in any order


def test_same_padding_puts_the_odd_pixel_last():
    """What PyTorch does for padding='same' with an even total: the extra pixel on the right / bottom."""
    assert same_padding((3, 4), 1) == [(1, 1), (1, 2)]
    assert same_padding((4,), 3) == [(4, 5)]
    assert conv_geometry(1, 4, 1, "same", 3) == ((1, 4), (1, 1), (1, 3), (0, 0, 4, 5))


def test_1x1_channels_last_is_a_view():
    x = torch.randn(2, 8, 5, 7).contiguous(memory_format=torch.channels_last)
    cols, hw = im2col_nhwc(x, (1, 1), (1, 1), (1, 1), (0, 0, 0, 0))
    assert hw == (5, 7) and cols.data_ptr() == x.data_ptr() and cols.shape == (2 * 5 * 7, 8)
