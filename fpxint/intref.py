"""The int64 references: every integer product accumulated in int64, the oracles integer mode is tested
against (tests/test_intops.py, tests/test_layers.py) and `onednn.onednn_exact`'s probe checks the CPU
against. Its receptive fields come from F.unfold, not from the kernels' `convgeom.im2col_nhwc`, so an
error there does not repeat here.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .convgeom import as_tuple, same_padding


def _out_hw(h, w, k, stride, padding, dilation):
    s, p, d = as_tuple(stride), as_tuple(padding), as_tuple(dilation)
    return tuple((size + 2 * p[i] - d[i] * (k[i] - 1) - 1) // s[i] + 1 for i, size in enumerate((h, w)))


def int64_linear_reference(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """int64 x @ w.T, the oracle for integer linear layers."""
    return x.to(torch.int64) @ w.to(torch.int64).t()


def int64_conv_reference(x: torch.Tensor, w: torch.Tensor, dim: int, stride, padding, dilation,
                         groups: int) -> torch.Tensor:
    """int64 convolution by im2col (unfold) and int64 matmul, the oracle for integer convolutions."""
    if dim == 1:
        x, w = x.unsqueeze(2), w.unsqueeze(2)
        stride, dilation = (1, as_tuple(stride, 1)[0]), (1, as_tuple(dilation, 1)[0])
        padding = padding if isinstance(padding, str) else (0, as_tuple(padding, 1)[0])
    kh, kw = w.shape[2:]
    if padding == "same":
        (pt, pb), (pl, pr) = same_padding((kh, kw), dilation)
        x = F.pad(x, (pl, pr, pt, pb))
        padding = 0
    elif padding == "valid":
        padding = 0
    # unfold only takes float; float64 holds the terms (|q| <= 255) exactly
    cols = F.unfold(x.to(torch.float64), (kh, kw), dilation=dilation, padding=padding, stride=stride)
    cols = cols.to(torch.int64)  # [N, Cin*kh*kw, L]
    n, _, length = cols.shape
    cout = w.shape[0]
    cin_g = w.shape[1]
    cols = cols.reshape(n, groups, cin_g * kh * kw, length)
    wg = w.to(torch.int64).reshape(groups, cout // groups, cin_g * kh * kw)
    out = torch.einsum("gok,ngkl->ngol", wg, cols).reshape(n, cout, length)
    ho, wo = _out_hw(x.shape[2], x.shape[3], (kh, kw), stride, padding, dilation)
    out = out.reshape(n, cout, ho, wo)
    return out.squeeze(2) if dim == 1 else out
