"""Exact integer GEMMs and convolutions for integer mode, and the int64 reference that tests them.

Each cross term Qw_i * Qx_j is a product of small integers (|Q| <= 255) accumulated over K inputs.
On the CPU we run it as a float64 GEMM/convolution on integer-valued operands: every partial sum
is an integer below 2**53, so float64 represents it exactly and the result is bit-identical to an
int64 accumulation (checked against `int64_*_reference` in the tests), while using the fast BLAS /
oneDNN kernels (CPU `torch._int_mm` is ~40x slower than float GEMM). On CUDA, int8 x int8 -> int32
`torch._int_mm` runs where its shape rules allow; otherwise float64 (exact by the same argument).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

_EXACT_LIMIT = 2**53


def check_exact(k: int, max_w: int, max_x: int) -> None:
    """Raises if an accumulation over k products could exceed float64's exact integer range."""
    if k * max_w * max_x >= _EXACT_LIMIT:
        raise ValueError(f"integer accumulation over {k} products of |{max_w}| x |{max_x}| may exceed 2**53; "
                         "float64 would not be exact")


def _int_mm_ok(a: torch.Tensor, b: torch.Tensor) -> bool:
    # torch._int_mm: CUDA, int8 operands, m > 16, k and n multiples of 8
    return (a.is_cuda and a.shape[0] > 16 and a.shape[1] % 8 == 0 and b.shape[1] % 8 == 0
            and int(a.abs().max()) <= 127 and int(b.abs().max()) <= 127)


def int_linear(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Exact x @ w.T for integer-valued x [..., K] and w [N, K]; returns float64 holding integers."""
    if x.is_cuda:
        a = x.reshape(-1, x.shape[-1])
        if _int_mm_ok(a, w.t()):
            out = torch._int_mm(a.to(torch.int8).contiguous(), w.to(torch.int8).t().contiguous())
            return out.to(torch.float64).reshape(*x.shape[:-1], w.shape[0])
    return F.linear(x.to(torch.float64), w.to(torch.float64))


def int_conv(x: torch.Tensor, w: torch.Tensor, dim: int, stride, padding, dilation, groups: int) -> torch.Tensor:
    """Exact convolution of integer-valued tensors (padding already numeric or 'same'/'valid')."""
    conv = F.conv1d if dim == 1 else F.conv2d
    if x.is_cuda and dim == 2 and groups == 1 and not isinstance(padding, str):
        out = _cuda_int_conv2d(x, w, stride, padding, dilation)
        if out is not None:
            return out
    return conv(x.to(torch.float64), w.to(torch.float64), None, stride, padding, dilation, groups)


def _cuda_int_conv2d(x, w, stride, padding, dilation):
    """im2col + torch._int_mm; None when the shapes do not suit _int_mm."""
    n, _, h, wd = x.shape
    cout, _, kh, kw = w.shape
    cols = F.unfold(x.to(torch.float32), (kh, kw), dilation=dilation, padding=padding, stride=stride)
    a = cols.transpose(1, 2).reshape(-1, cols.shape[1])  # [N*L, K]; values are small integers
    b = w.reshape(cout, -1).t()
    if not _int_mm_ok(a, b):
        return None
    out = torch._int_mm(a.round().to(torch.int8).contiguous(), b.to(torch.int8).contiguous())
    ho, wo = _out_hw(h, wd, (kh, kw), stride, padding, dilation)
    return out.to(torch.float64).reshape(n, ho * wo, cout).transpose(1, 2).reshape(n, cout, ho, wo)


def _pair(v, n=2):
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


def _out_hw(h, w, k, stride, padding, dilation):
    s, p, d = _pair(stride), _pair(padding), _pair(dilation)
    return tuple((size + 2 * p[i] - d[i] * (k[i] - 1) - 1) // s[i] + 1 for i, size in enumerate((h, w)))


def same_padding(kernel: tuple[int, ...], dilation) -> list[tuple[int, int]]:
    """PyTorch's padding='same' as explicit (left, right) amounts per spatial dim."""
    d = _pair(dilation, len(kernel))
    out = []
    for k, di in zip(kernel, d):
        total = di * (k - 1)
        out.append((total // 2, total - total // 2))
    return out


def int64_linear_reference(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """int64 x @ w.T, the oracle for `int_linear`."""
    return x.to(torch.int64) @ w.to(torch.int64).t()


def int64_conv_reference(x: torch.Tensor, w: torch.Tensor, dim: int, stride, padding, dilation,
                         groups: int) -> torch.Tensor:
    """int64 convolution by im2col (unfold) and int64 matmul, the oracle for `int_conv`."""
    if dim == 1:
        x, w = x.unsqueeze(2), w.unsqueeze(2)
        stride, dilation = (1, _pair(stride, 1)[0]), (1, _pair(dilation, 1)[0])
        padding = padding if isinstance(padding, str) else (0, _pair(padding, 1)[0])
    kh, kw = w.shape[2:]
    if padding == "same":
        (pt, pb), (pl, pr) = same_padding((kh, kw), dilation)
        x = F.pad(x, (pl, pr, pt, pb))
        padding = 0
    elif padding == "valid":
        padding = 0
    # unfold only takes float; integers up to 2**24 are exact in float32, and terms are <= 255
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


def max_abs_int(bits: int, grid: str) -> int:
    """Largest |centered integer| a term can hold (asymmetric terms are centered by the zero point)."""
    if grid in ("asymmetric", "auto"):  # auto: unsigned rows reach 2^b - 1
        return 2**bits - 1
    return 2 ** (bits - 1) if bits > 1 else 1


def reduction_size(w: torch.Tensor) -> int:
    """Products summed per output element: in_features, or in_channels/groups * kernel size."""
    return math.prod(w.shape[1:])
