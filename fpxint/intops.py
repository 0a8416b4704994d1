"""Exact integer GEMMs and convolutions for integer mode: every cross term Qw_i * Qx_j of a layer in one
batched op (`linear_terms`, `conv_terms`).

Each cross term is a sum of K products of small integers. Integer mode runs it on int8 units:
`torch._int_mm` (int8 x int8 -> int32; oneDNN's VNNI kernels on the CPU, cuBLASLt on CUDA) over an
im2col view for convolutions (`convgeom`), or oneDNN's int8 convolution (`onednn`). Why it is exact
(docs/method.md, "Integer mode"): the bounds of `intbounds`, from the bit widths; the CPU kernel does
not saturate in a 16-bit intermediate (VPMADDUBSW): tested with adversarial operands (all +-127 / -128
patterns at the int32 limit) in tests/test_intops.py against the int64 references (`intref`).
Asymmetric 8-bit activation terms t = q - z (|t| up to 255, one bit past int8) come as int8 u = q - 128
plus an offset c = 128 - z that is constant along each reduction (`x_offset`): acc(t) = acc(u) + c S, with
S the sum of the weights each output sees (a row sum; for convolutions, the weights over the window's
non-padded positions, one small float64 convolution of ones per input shape). Where int8 does not apply
(8-bit asymmetric weights, grouped convolutions off oneDNN) the op runs in float64 on integer-valued
operands: every partial sum is an integer below 2**53, exact (`intbounds.check_exact`).

`kernel` chooses the path and is a parameter, not a device test buried inside: "auto" is "onednn"
on the CPU and "int_mm_cuda" on CUDA; "float" (simulate mode's path) runs float GEMMs / convolutions
on the integer values, float32 where every partial sum is an integer below 2**24 on the CPU, else
float64 (exact either way, so the accumulators do not depend on the float op's summation order);
"int_mm_cuda" applies CUDA's `_int_mm` shape rules (M > 16, K and N multiples of 8) by zero padding, so
the tests run the CUDA code path through the CPU kernel.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .convgeom import conv_geometry, conv_weight_matrix, im2col_nhwc
from .intbounds import INT32_MAX, check_exact, fits_int8, int32_chunk
from .onednn import onednn_conv, onednn_ok

KERNELS = ("auto", "onednn", "int_mm", "int_mm_cuda", "float", "float64")


def resolve_kernel(kernel: str, device: torch.device) -> str:
    """'auto' -> the int8 kernel for the device; anything else is checked and returned.

    CPU: "onednn" (convolutions on oneDNN's int8 convolution, GEMMs on `_int_mm`); CUDA: "int_mm_cuda".
    """
    if kernel not in KERNELS:
        raise ValueError(f"kernel={kernel!r} is not allowed; choose one of {', '.join(KERNELS)}")
    if kernel == "auto":
        return "int_mm_cuda" if device.type == "cuda" else "onednn"
    if kernel == "onednn" and device.type != "cpu":
        raise ValueError("kernel='onednn' runs on the CPU only; use 'int_mm_cuda' or 'auto' on CUDA")
    return kernel


def _pad_to(t: torch.Tensor, dim: int, multiple: int, minimum: int = 0) -> torch.Tensor:
    size = t.shape[dim]
    target = max(minimum, -(-size // multiple) * multiple)
    if target == size:
        return t
    pad = [0, 0] * (t.dim() - 1 - dim) + [0, target - size]
    return F.pad(t, pad)  # zero rows / columns add nothing to any dot product


def int_matmul(a: torch.Tensor, b: torch.Tensor, max_a: int, max_b: int, kernel: str = "auto") -> torch.Tensor:
    """Exact a @ b for int8 a [M, K] and b [K, N] whose |values| are at most max_a, max_b.

    Returns int32 when one int32 accumulation is provably safe, else int64 (split-K chunks).
    """
    kernel = resolve_kernel(kernel, a.device)  # "onednn": GEMMs run on _int_mm (oneDNN's int8 matmul)
    m, k = a.shape
    n = b.shape[1]
    chunk = int32_chunk(max_a, max_b)
    if kernel == "int_mm_cuda":  # cuBLASLt's rules: M > 16, K and N multiples of 8
        chunk -= chunk % 8
        a = _pad_to(_pad_to(a, 1, 8), 0, 1, 17)
        b = _pad_to(_pad_to(b, 0, 8), 1, 8).contiguous()
    if a.shape[1] <= chunk:
        out = torch._int_mm(a, b)
    else:
        out = torch.zeros((a.shape[0], b.shape[1]), dtype=torch.int64, device=a.device)
        for k0 in range(0, a.shape[1], chunk):
            out += torch._int_mm(a[:, k0:k0 + chunk].contiguous(), b[k0:k0 + chunk])
    return out[:m, :n] if out.shape != (m, n) else out


def _float_exact_dtype(k: int, max_w: int, max_x: int, device: torch.device, kernel: str,
                       op: str = "conv") -> torch.dtype:
    """float32 when every partial sum is an integer below 2**24 and the CPU's float32 convolution /
    matmul is IEEE (oneDNN's direct algorithm; a user may switch either to bf16 / tf32); float64 otherwise.
    Any summation order of integers whose partial sums stay below 2**24 is exact in float32."""
    if op == "conv":
        ieee = getattr(getattr(torch.backends.mkldnn, "conv", None), "fp32_precision", "none") in ("none", "ieee")
    else:
        ieee = torch.get_float32_matmul_precision() == "highest"
    if kernel != "float64" and device.type == "cpu" and ieee and k * max_w * max_x < 2**24:
        return torch.float32
    return torch.float64  # cuDNN may pick FFT / Winograd / TF32 for float32: not exact


def with_offset(acc: torch.Tensor, c: torch.Tensor, sums: torch.Tensor, k: int, max_x: int, max_w: int
                ) -> torch.Tensor:
    """acc(u) + c S as exact integers (float accumulators hold integers; c and S broadcast to acc's shape).
    With B = K (max|u| + 128) max|w|, the bound on |acc(t)| for |c| <= 128: float32 accumulators stay
    float32 while B < 2**24 (every sum exact, no conversion pass), else int32 while B fits, else int64."""
    bound = k * (max_x + 128) * max_w
    if acc.dtype == torch.float32 and bound < 2**24:
        return acc.addcmul_(c.to(acc.dtype), sums.to(acc.dtype))
    dtype = torch.int32 if bound <= INT32_MAX else torch.int64
    return acc.to(dtype).addcmul_(c.to(dtype), sums.to(dtype))


def linear_terms(xq: torch.Tensor, wq: torch.Tensor, max_x: int, max_w: int, kernel: str = "auto",
                 x_offset: torch.Tensor | None = None) -> torch.Tensor:
    """Every cross term of a linear layer in one integer GEMM: activation terms stacked along M, weight
    terms along N.

    Args:
        xq: [J, ..., K] centered integer activation terms (int8 when they fit, else int16).
        wq: [I, N, K] centered integer weight terms.
        max_x, max_w: bounds on |values| from the bit widths (`max_abs_int`), not from the data.
        x_offset: None, or integers c broadcastable to [J, ..., 1] with |c| <= 128: the terms are then
            xq + c (asymmetric 8-bit: xq = q - 128, c = 128 - z; see the module doc).
    Returns:
        [J, I, ..., N] exact integer accumulators (int32, int64 past the int32 bound, or float64 on the
        float64 path; float32 / float64 on the "float" path; int32 / int64 with an offset), a strided
        view of one [J * M, I * N] result.
    """
    kernel = resolve_kernel(kernel, xq.device)
    j, i, n, k = xq.shape[0], wq.shape[0], wq.shape[1], wq.shape[-1]
    batch = xq.shape[1:-1]
    a = xq.reshape(-1, k)
    b = wq.reshape(i * n, k)
    if kernel not in ("float", "float64") and fits_int8(max_w, max_x):
        out = int_matmul(a.to(torch.int8), b.to(torch.int8).t(), max_x, max_w, kernel)
    else:
        dtype = _float_exact_dtype(k, max_w, max_x, xq.device, kernel, op="matmul")
        if dtype == torch.float64:
            check_exact(k, max_w, max_x)
        out = a.to(dtype) @ b.to(dtype).t()
    out = out.reshape(j, *batch, i, n).movedim(-2, 1)
    if x_offset is None:
        return out
    rowsum = wq.sum(-1, dtype=torch.int64).reshape(1, i, *(1,) * len(batch), n)  # S: [1, I, 1.., N]
    return with_offset(out, x_offset.unsqueeze(1), rowsum, k, max_x, max_w)


def conv_terms(xq: torch.Tensor, wq: torch.Tensor, dim: int, stride, padding, dilation, groups: int,
               max_x: int, max_w: int, kernel: str = "auto", cache: dict | None = None,
               x_offset: torch.Tensor | None = None) -> torch.Tensor:
    """Every cross term of a convolution, batched: activation terms as one batch of J * N images.

    Paths: "onednn" (CPU): oneDNN's int8 convolution (VNNI, no im2col), weight terms stacked along
    Cout, output the exact accumulators as float32 (every |acc| < 2**24 by `onednn.onednn_ok`). "int_mm",
    "int_mm_cuda": one `torch._int_mm` over int8 im2col rows of all activation terms against all
    weight terms. "float", grouped convolutions off oneDNN and operands beyond int8 run as a float
    convolution on integer values (float32 where every partial sum stays below 2**24, else float64),
    weight terms stacked along Cout unless grouped.

    Args:
        xq: [J, N, C, *spatial] centered integer activation terms (any strides; channels-last is cheapest),
            padding already applied for non-zero padding modes; `padding` here is numeric or 'same' / 'valid'.
        wq: [I, Cout, C / groups, *kernel] centered integer weight terms.
        cache: a dict the caller keeps per layer: prepared weights (packed / im2col order) go there.
        x_offset: None, or integers c broadcastable to [J, N, 1, ...] with |c| <= 128, one per term and
            image: the terms are then xq + c on every real (not padded) position; see the module doc.
    Returns:
        [J, I, N, Cout, *spatial_out] exact integer accumulators (int32 / int64, or float32 holding
        integers below 2**24 on the oneDNN path, float32 / float64 holding integers on the "float"
        path; int32 / int64 with an offset), a strided view of one batched result.
    """
    cache = {} if cache is None else cache
    out = _conv_terms(xq, wq, dim, stride, padding, dilation, groups, max_x, max_w, kernel, cache)
    if x_offset is None:
        return out
    # S [I, Cout, *spatial_out]: each output's weights over the input's real positions (zero padding adds
    # no c there), exact in float64; kept for the last input shape only, read once into a local (threads
    # of a server may share the layer: another input shape may replace the entry meanwhile)
    key = (tuple(xq.shape[3:]), xq.device)
    entry = cache.get("window_sums")
    if entry is None or entry[0] != key:
        ones = torch.ones((1, *xq.shape[2:]), dtype=torch.float64, device=xq.device)
        w = wq.reshape(-1, *wq.shape[2:]).to(torch.float64)
        sums = (F.conv1d if dim == 1 else F.conv2d)(ones, w, None, stride, padding, dilation, groups)
        entry = (key, sums.reshape(wq.shape[0], wq.shape[1], *sums.shape[2:]).to(torch.int64))
        cache["window_sums"] = entry
    sums = entry[1]
    c = x_offset.reshape(x_offset.shape[0], 1, x_offset.shape[1], *(1,) * (sums.dim() - 1))
    return with_offset(out, c, sums.unsqueeze(1), math.prod(wq.shape[2:]), max_x, max_w)


def _conv_terms(xq, wq, dim, stride, padding, dilation, groups, max_x, max_w, kernel, cache):
    kernel = resolve_kernel(kernel, xq.device)
    j, nb = xq.shape[:2]
    i, cout = wq.shape[:2]
    k = math.prod(wq.shape[2:])
    if kernel == "onednn":
        if onednn_ok(k, max_w, max_x, groups, wq.shape[2]):
            return onednn_conv(xq, wq, dim, stride, padding, dilation, groups, cache)
        kernel = "int_mm"  # past oneDNN's exact range (8-bit terms over long reductions, grouped): _int_mm's split-K
    if groups > 1 or kernel in ("float", "float64") or not fits_int8(max_w, max_x):
        dtype = _float_exact_dtype(k, max_w, max_x, xq.device, kernel)
        if dtype == torch.float64:
            check_exact(k, max_w, max_x)
        conv = F.conv1d if dim == 1 else F.conv2d
        x = xq.reshape(j * nb, *xq.shape[2:])
        # channels-last in, channels-last out (the layout oneDNN's int8 path writes; also its fast float layout)
        x = x.to(dtype, memory_format=torch.channels_last) if x.dim() == 4 else x.to(dtype)
        key = ("float", dtype, groups)
        if key not in cache:  # weight terms stacked along Cout (one convolution) unless grouped
            cache[key] = ([wq.reshape(i * cout, *wq.shape[2:]).to(dtype)] if groups == 1
                          else [wq[t].to(dtype) for t in range(i)])
        outs = [conv(x, w, None, stride, padding, dilation, groups) for w in cache[key]]
        out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)  # [J * N, I * Cout, ...]
        out = out.reshape(j, nb, i, cout, *out.shape[2:]).transpose(1, 2)  # [J, I, N, Cout, ...]
        if kernel == "float":  # simulate mode rescales the float accumulators as they are
            return out
        return out.to(torch.int32 if dtype == torch.float32 else torch.int64)
    ksize, st, dil, pads = conv_geometry(dim, wq.shape[3:] if dim == 2 else wq.shape[3], stride, padding, dilation)
    x4 = xq.reshape(j * nb, *xq.shape[2:])
    if dim == 1:
        x4 = x4.unsqueeze(2)
    cols, (ho, wo) = im2col_nhwc(x4.to(torch.int8), ksize, st, dil, pads)  # [J * N * Ho * Wo, K]
    if "im2col" not in cache:
        cache["im2col"] = conv_weight_matrix(wq.reshape(i * cout, *wq.shape[2:]).to(torch.int8))  # [I * Cout, K]
    out = int_matmul(cols, cache["im2col"].t(), max_x, max_w, kernel)  # [J * N * Ho * Wo, I * Cout]
    out = out.reshape(j, nb, ho, wo, i, cout).permute(0, 4, 1, 5, 2, 3)  # [J, I, N, Cout, Ho, Wo]
    return out.squeeze(4) if dim == 1 else out
