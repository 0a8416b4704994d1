"""Convolution geometry for the integer kernels: Conv1d / Conv2d arguments as explicit 2-D ones, and the
im2col view whose rows are receptive fields (column order (kh, kw, C), the weights' matrix in the same
order), so a convolution runs as one integer GEMM (`intops.conv_terms`) or on oneDNN (`onednn`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def as_tuple(v, n: int = 2) -> tuple:
    """An int or a sequence as an n-tuple (what `nn.modules.utils._pair` does, for 1 or 2 dims)."""
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


def same_padding(kernel: tuple[int, ...], dilation) -> list[tuple[int, int]]:
    """PyTorch's padding='same' as explicit (left, right) amounts per spatial dim."""
    d = as_tuple(dilation, len(kernel))
    out = []
    for k, di in zip(kernel, d):
        total = di * (k - 1)
        out.append((total // 2, total - total // 2))
    return out


def conv_geometry(dim: int, kernel_size, stride, padding, dilation) -> tuple:
    """Conv1d / Conv2d arguments as 2-D ones: (kernel, stride, dilation, (top, bottom, left, right) padding)."""
    if dim == 1:
        kernel_size, stride = (1, as_tuple(kernel_size, 1)[0]), (1, as_tuple(stride, 1)[0])
        dilation = (1, as_tuple(dilation, 1)[0])
        if not isinstance(padding, str):
            padding = (0, as_tuple(padding, 1)[0])
    kernel_size, stride, dilation = as_tuple(kernel_size), as_tuple(stride), as_tuple(dilation)
    if padding == "same":
        (pt, pb), (pl, pr) = same_padding(kernel_size, dilation)
    elif padding == "valid":
        pt = pb = pl = pr = 0
    else:
        (pt, pl) = as_tuple(padding)
        pb, pr = pt, pl
    return kernel_size, stride, dilation, (pt, pb, pl, pr)


def im2col_nhwc(x: torch.Tensor, kernel_size, stride, dilation, pads) -> tuple[torch.Tensor, tuple[int, int]]:
    """Rows of receptive fields [N * Ho * Wo, kh * kw * C] of a 4-D tensor [N, C, H, W] (any strides).

    Column order (kh, kw, C) matches `conv_weight_matrix`. A channels-last input with a 1x1 kernel,
    stride 1 and no padding is returned as a view; otherwise one copy in the input's dtype (int8:
    a quarter of float32's traffic).
    """
    kh, kw = kernel_size
    (sh, sw), (dh, dw) = stride, dilation
    pt, pb, pl, pr = pads
    xh = x.permute(0, 2, 3, 1)  # NHWC: a view, contiguous when x is channels-last
    if any(pads):
        xh = F.pad(xh, (0, 0, pl, pr, pt, pb))
    n, h, w, c = xh.shape
    ho, wo = (h - dh * (kh - 1) - 1) // sh + 1, (w - dw * (kw - 1) - 1) // sw + 1
    if (kh, kw, sh, sw) == (1, 1, 1, 1):
        return xh.reshape(n * ho * wo, c), (ho, wo)
    s = xh.stride()
    win = xh.as_strided((n, ho, wo, kh, kw, c), (s[0], s[1] * sh, s[2] * sw, s[1] * dh, s[2] * dw, s[3]))
    return win.reshape(n * ho * wo, kh * kw * c), (ho, wo)


def conv_weight_matrix(w: torch.Tensor) -> torch.Tensor:
    """Conv weight [Cout, Cin, kh, kw] (or [Cout, Cin, k]) as [Cout, kh * kw * Cin], the im2col column order."""
    if w.dim() == 3:
        w = w.unsqueeze(2)
    return w.permute(0, 2, 3, 1).reshape(w.shape[0], -1)
