"""Exact integer GEMMs and convolutions for integer mode, and the int64 reference that tests them.

Each cross term Qw_i * Qx_j is a sum of K products of small integers. Integer mode runs it on int8
units: `torch._int_mm` (int8 x int8 -> int32; oneDNN's VNNI kernels on the CPU, cuBLASLt on CUDA)
over an im2col view for convolutions. Why it is exact (docs/method.md, "Integer mode"):

- operands are int8 when every |term| <= 127 (all grids up to 8 bits except asymmetric 8-bit,
  whose centered terms reach 255, and the full grid's -128 which int8 holds too);
- the int32 accumulator cannot overflow while K * max|w| * max|x| <= 2**31 - 1; longer reductions
  are split along K into chunks that satisfy it, summed in int64 (`int32_chunk`);
- the CPU kernel does not saturate in a 16-bit intermediate (VPMADDUBSW): tested with adversarial
  operands (all +-127 / -128 patterns at the int32 limit) in tests/test_intops.py.

Bounds come from the bit widths, never from the data, so no host synchronisation is needed.
Where int8 does not apply (asymmetric 8-bit terms, grouped convolutions) the op runs in float64 on
integer-valued operands: every partial sum is an integer below 2**53, exact (`check_exact`).

`kernel` chooses the path and is a parameter, not a device test buried inside: "auto" is "onednn"
on the CPU and "int_mm_cuda" on CUDA; "float" (simulate mode's path) runs float GEMMs / convolutions
on the integer values, float32 where every partial sum is an integer below 2**24 on the CPU, else
float64 (exact either way, so the accumulators do not depend on the float op's summation order); "int_mm_cuda" applies CUDA's `_int_mm` shape rules (M > 16,
K and N multiples of 8) by zero padding, so the tests run the CUDA code path through the CPU kernel.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

_EXACT_LIMIT = 2**53
INT32_MAX = 2**31 - 1
KERNELS = ("auto", "onednn", "int_mm", "int_mm_cuda", "float", "float64")


def check_exact(k: int, max_w: int, max_x: int) -> None:
    """Raises if an accumulation over k products could exceed float64's exact integer range."""
    if k * max_w * max_x >= _EXACT_LIMIT:
        raise ValueError(f"integer accumulation over {k} products of |{max_w}| x |{max_x}| may exceed 2**53; "
                         "float64 would not be exact")


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


def fits_int8(max_w: int, max_x: int) -> bool:
    """Whether both operands' integers fit int8 [-128, 127].

    A bound of 128 comes only from the full grid's -128 (`max_abs_int`), which int8 holds.
    """
    return max_w <= 128 and max_x <= 128


def int32_chunk(max_w: int, max_x: int) -> int:
    """Longest reduction whose int32 accumulator provably cannot overflow: K * max|w| * max|x| <= 2**31 - 1."""
    return INT32_MAX // max(1, max_w * max_x)


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


def conv_geometry(dim: int, kernel_size, stride, padding, dilation) -> tuple:
    """Conv1d / Conv2d arguments as 2-D ones: (kernel, stride, dilation, (top, bottom, left, right) padding)."""
    if dim == 1:
        kernel_size, stride, dilation = (1, _pair(kernel_size, 1)[0]), (1, _pair(stride, 1)[0]), (1, _pair(dilation, 1)[0])
        if not isinstance(padding, str):
            padding = (0, _pair(padding, 1)[0])
    kernel_size, stride, dilation = _pair(kernel_size), _pair(stride), _pair(dilation)
    if padding == "same":
        (pt, pb), (pl, pr) = same_padding(kernel_size, dilation)
    elif padding == "valid":
        pt = pb = pl = pr = 0
    else:
        (pt, pl) = _pair(padding)
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


def linear_terms(xq: torch.Tensor, wq: torch.Tensor, max_x: int, max_w: int, kernel: str = "auto") -> torch.Tensor:
    """Every cross term of a linear layer in one integer GEMM: activation terms stacked along M, weight
    terms along N.

    Args:
        xq: [J, ..., K] centered integer activation terms (int8 when they fit, else int16).
        wq: [I, N, K] centered integer weight terms.
        max_x, max_w: bounds on |values| from the bit widths (`max_abs_int`), not from the data.
    Returns:
        [J, I, ..., N] exact integer accumulators (int32, int64 past the int32 bound, or float64 on the
        float64 path; float32 / float64 on the "float" path), a strided view of one [J * M, I * N] result.
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
    out = out.reshape(j, *batch, i, n)
    return out.movedim(-2, 1)


def conv_terms(xq: torch.Tensor, wq: torch.Tensor, dim: int, stride, padding, dilation, groups: int,
               max_x: int, max_w: int, kernel: str = "auto", cache: dict | None = None) -> torch.Tensor:
    """Every cross term of a convolution, batched: activation terms as one batch of J * N images.

    Paths: "onednn" (CPU): oneDNN's int8 convolution (VNNI, no im2col), weight terms stacked along
    Cout, output the exact accumulators as float32 (every |acc| < 2**24 by `onednn_ok`). "int_mm",
    "int_mm_cuda": one `torch._int_mm` over int8 im2col rows of all activation terms against all
    weight terms. "float", grouped convolutions off oneDNN and operands beyond int8 run as a float
    convolution on integer values (float32 where every partial sum stays below 2**24, else float64),
    weight terms stacked along Cout unless grouped.

    Args:
        xq: [J, N, C, *spatial] centered integer activation terms (any strides; channels-last is cheapest),
            padding already applied for non-zero padding modes; `padding` here is numeric or 'same' / 'valid'.
        wq: [I, Cout, C / groups, *kernel] centered integer weight terms.
        cache: a dict the caller keeps per layer: prepared weights (packed / im2col order) go there.
    Returns:
        [J, I, N, Cout, *spatial_out] exact integer accumulators (int32 / int64, or float32 holding
        integers below 2**24 on the oneDNN path, float32 / float64 holding integers on the "float"
        path), a strided view of one batched result.
    """
    kernel = resolve_kernel(kernel, xq.device)
    j, nb = xq.shape[:2]
    i, cout = wq.shape[:2]
    k = math.prod(wq.shape[2:])
    cache = {} if cache is None else cache
    if kernel == "onednn":
        if onednn_ok(k, max_w, max_x):
            return _onednn_conv(xq, wq, dim, stride, padding, dilation, groups, cache)
        kernel = "int_mm"  # past oneDNN's exact range (8-bit terms over long reductions): _int_mm's split-K
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


# ----- oneDNN's int8 convolution (CPU) -----------------------------------------------------------
# u8 activations with zero point 128 (x + 128; padding holds the zero point, i.e. 0) times s8 weights,
# int32 accumulation, float32 output with unit scales: the accumulator itself while it is below 2**24.
_U8_ZERO = 128


def onednn_ok(k: int, max_w: int, max_x: int) -> bool:
    """oneDNN int8 convolution applies and is exact: the op exists and passed the probe on this CPU,
    operands fit int8, every |acc| < 2**24 (exact in float32), and the u8 form's sums
    (|x + 128| <= 255) stay inside int32."""
    return (fits_int8(max_w, max_x) and k * max_w * max_x < 2**24 and k * 255 * max_w < 2**31
            and onednn_exact())


@functools.lru_cache(maxsize=1)
def onednn_exact() -> bool:
    """Whether this CPU's oneDNN int8 convolution is exact: adversarial operands (all +-127 / -128,
    the u8 x s8 pairs that saturate a 16-bit VPMADDUBSW intermediate on CPUs without VNNI, where
    oneDNN halves the weights instead) against int64. False when the op is missing."""
    try:
        k_in = 100  # K = 900: 900 * 128 * 128 < 2**24, the largest sums the path allows
        x = torch.full((1, 2, k_in, 5, 5), 127, dtype=torch.int8)
        x[0, 1] = -128
        x[0, 1, ::2, 1::2] = 127
        w = torch.full((1, 16, k_in, 3, 3), -128, dtype=torch.int8)
        w[0, 8:] = 127
        w[0, 4:12, ::3] = -w[0, 4:12, ::3].clamp(min=-127)
        got = _onednn_conv(x, w, 2, 1, 1, 1, 1, {})[0, 0]
        if not torch.equal(got.to(torch.int64), int64_conv_reference(x[0], w[0], 2, 1, 1, 1, 1)):
            return False
        # the forward's scaled path: per-channel scales and the "sum" post-op over weight terms
        g = torch.Generator().manual_seed(0)
        xs = torch.randint(-8, 8, (2, 3, 16, 6, 6), generator=g, dtype=torch.int8)
        ws = torch.randint(-8, 8, (2, 8, 16, 3, 3), generator=g, dtype=torch.int8)
        twos = torch.full((8,), 2.0)
        z = onednn_conv_scaled(xs, ws, 2, 1, 1, 1, 1, [[twos, twos], [twos, None]], {})
        ref = [int64_conv_reference(xs[jj], ws[t], 2, 1, 1, 1, 1) for jj in range(2) for t in range(2)]
        return bool(torch.equal(z[0].to(torch.int64), 2 * (ref[0] + ref[1]))
                    and torch.equal(z[1].to(torch.int64), 2 * ref[2]))
    except (RuntimeError, AttributeError, NotImplementedError):
        return False


@functools.lru_cache(maxsize=1)
def onednn_epilogue_matches() -> bool:
    """Whether oneDNN's scaled epilogue (per-channel scale on the int32 accumulator, then the "sum"
    post-op) rounds like the shared rescale of `layers.ExpandedLayer._exact_forward` (a float32 multiply,
    then an add, per weight term; no fused multiply-add): then integer mode's fast path gives simulate
    mode's bits. Checked once per process with non-power-of-two scales; False sends integer mode
    through `conv_terms` and the shared rescale instead."""
    try:
        if not onednn_exact():
            return False
        g = torch.Generator().manual_seed(1)
        xs = torch.randint(-8, 8, (1, 4, 32, 8, 8), generator=g, dtype=torch.int8)
        ws = torch.randint(-8, 8, (3, 16, 32, 3, 3), generator=g, dtype=torch.int8)
        sc = [torch.rand(16, generator=g) * 0.01 + 1e-3 for _ in range(3)]
        z = onednn_conv_scaled(xs, ws, 2, 1, 1, 1, 1, [sc], {})[0]
        want = None
        for t in range(3):
            p = int64_conv_reference(xs[0], ws[t], 2, 1, 1, 1, 1).float() * sc[t].reshape(1, -1, 1, 1)
            want = p if want is None else want.add_(p)
        return bool(torch.equal(z, want))
    except (RuntimeError, AttributeError, NotImplementedError):
        return False


def _onednn_conv(xq, wq, dim, stride, padding, dilation, groups, cache) -> torch.Tensor:
    j, nb = xq.shape[:2]
    i, cout = wq.shape[:2]
    xu, st, pad, dil = _onednn_input(xq, wq, dim, stride, padding, dilation)
    # weight terms stacked along Cout (one convolution) unless grouped: groups split Cout
    stacks = [list(range(i))] if groups == 1 else [[t] for t in range(i)]
    key = ("onednn", tuple(st), tuple(pad), tuple(dil), groups)
    if key not in cache:
        cache[key] = [_pack(wq[terms].reshape(len(terms) * cout, *wq.shape[2:]).to(torch.int8), dim, st, pad, dil,
                            groups) for terms in stacks]
    ones, zeros = torch.ones(len(stacks[0]) * cout), torch.zeros(len(stacks[0]) * cout, dtype=torch.int64)
    outs = [torch.ops.onednn.qconv2d_pointwise(xu, 1.0, _U8_ZERO, pw, ones, zeros, None, list(st), pad, list(dil),
                                               groups, 1.0, 0, torch.float32, "none", [], "")
            for pw in cache[key]]
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)  # [J * N, I * Cout, Ho, Wo]
    ho, wo = out.shape[2:]
    out = out.reshape(j, nb, i, cout, ho, wo).transpose(1, 2)  # [J, I, N, Cout, Ho, Wo]
    return out.squeeze(4) if dim == 1 else out


def onednn_conv_scaled(xq: torch.Tensor, wq: torch.Tensor, dim: int, stride, padding, dilation, groups: int,
                       scales: list[list[torch.Tensor | None]], cache: dict) -> list[torch.Tensor | None]:
    """Per activation term j, z_j = sum_i scales[j][i] * acc_ij in float32, the rescale done by oneDNN:
    each convolution applies its per-channel scale to the int32 accumulator and adds the previous
    weight term's result (post-op "sum"). The forward's fast path; `conv_terms` gives the integers.

    Args:
        xq, wq, dim, ...: as `conv_terms` (check `onednn_ok` first).
        scales: [J][I] float32 vectors [Cout] (C_ij * s_i), None where the pair is not kept.
    Returns:
        [z_0, ..., z_{J-1}] as [N, Cout, *spatial_out] (None for a term with no kept pair).
    """
    j, nb = xq.shape[:2]
    xu, st, pad, dil = _onednn_input(xq, wq, dim, stride, padding, dilation)
    key = ("onednn1", tuple(st), tuple(pad), tuple(dil), groups)
    if key not in cache:  # one packed weight per term: the sum post-op adds them
        cache[key] = [_pack(wq[t].to(torch.int8), dim, st, pad, dil, groups) for t in range(wq.shape[0])]
    zeros = torch.zeros(wq.shape[1], dtype=torch.int64)
    out = []
    for jj in range(j):
        x = xu[jj * nb:(jj + 1) * nb]
        z = None
        for t, sc in enumerate(scales[jj]):
            if sc is None:
                continue
            args = (list(st), pad, list(dil), groups, 1.0, 0, torch.float32)
            if z is None:
                z = torch.ops.onednn.qconv2d_pointwise(x, 1.0, _U8_ZERO, cache[key][t], sc, zeros, None, *args,
                                                       "none", [], "")
            else:
                z = torch.ops.onednn.qconv2d_pointwise.binary(x, 1.0, _U8_ZERO, cache[key][t], sc, zeros, z, None,
                                                              *args, 1.0, 0, "sum", 1.0, "none", [], "")
        out.append(z.squeeze(2) if z is not None and dim == 1 else z)
    return out


def _onednn_input(xq, wq, dim, stride, padding, dilation):
    """The activation terms as one u8 channels-last batch (x + 128) and oneDNN's geometry."""
    _, st, dil, (pt, pb, pl, pr) = conv_geometry(dim, wq.shape[3:] if dim == 2 else wq.shape[3],
                                                 stride, padding, dilation)
    x4 = xq.reshape(-1, *xq.shape[2:])
    if dim == 1:
        x4 = x4.unsqueeze(2)
    xu = x4.to(torch.int8).contiguous(memory_format=torch.channels_last).view(torch.uint8).bitwise_xor(_U8_ZERO)
    pad = [pt, pl]
    if pt != pb or pl != pr:  # oneDNN pads symmetrically: pad with the zero point by hand
        xu = F.pad(xu, (pl, pr, pt, pb), value=_U8_ZERO).contiguous(memory_format=torch.channels_last)
        pad = [0, 0]
    return xu, st, pad, dil


def _pack(w: torch.Tensor, dim, st, pad, dil, groups):
    w = w.unsqueeze(2) if dim == 1 else w
    return torch.ops.onednn.qconv_prepack(w, torch.ones(w.shape[0]), 1.0, _U8_ZERO, list(st), pad, list(dil),
                                          groups, None)


def float64_conv(x: torch.Tensor, w: torch.Tensor, dim: int, stride, padding, dilation, groups: int) -> torch.Tensor:
    """Exact convolution in float64 of integer-valued tensors (see `check_exact`)."""
    conv = F.conv1d if dim == 1 else F.conv2d
    return conv(x.to(torch.float64), w.to(torch.float64), None, stride, padding, dilation, groups)


def int64_linear_reference(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """int64 x @ w.T, the oracle for integer linear layers."""
    return x.to(torch.int64) @ w.to(torch.int64).t()


def int64_conv_reference(x: torch.Tensor, w: torch.Tensor, dim: int, stride, padding, dilation,
                         groups: int) -> torch.Tensor:
    """int64 convolution by im2col (unfold) and int64 matmul, the oracle for integer convolutions."""
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


def max_abs_int(bits: int, grid: str) -> int:
    """Largest |centered integer| a term can hold (asymmetric terms are centered by the zero point)."""
    if grid in ("asymmetric", "auto"):  # auto: unsigned rows reach 2^b - 1
        return 2**bits - 1
    return 2 ** (bits - 1) if bits > 1 else 1


def reduction_size(w: torch.Tensor) -> int:
    """Products summed per output element: in_features, or in_channels/groups * kernel size."""
    return math.prod(w.shape[1:])
