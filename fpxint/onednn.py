"""oneDNN's int8 convolution on the CPU (VNNI, no im2col): the exact accumulators of every cross term of
a convolution (`onednn_conv`, called by `intops.conv_terms`), and integer mode's fast path with the
rescale in oneDNN's epilogue (`onednn_conv_scaled`).

u8 activations with zero point 128 (x + 128; padding holds the zero point, i.e. 0) times s8 weights,
int32 accumulation, float32 output with unit scales: the accumulator itself while it is below 2**24.
The path is trusted only after a probe on this CPU (`onednn_exact`, `onednn_epilogue_matches`).
"""
from __future__ import annotations

import functools
import itertools

import torch
import torch.nn.functional as F

from .convgeom import conv_geometry
from .intbounds import fits_int8
from .intref import int64_conv_reference

_U8_ZERO = 128


def onednn_ok(k: int, max_w: int, max_x: int, groups: int = 1, in_per_group: int = 1) -> bool:
    """oneDNN int8 convolution applies and is exact: a plain (groups 1) or depthwise (1 input channel per
    group) convolution, the op exists and passed the probe on this CPU, operands fit int8, every
    |acc| < 2**24 (exact in float32), and the u8 form's sums (|x + 128| <= 255) stay inside int32.

    Other grouped convolutions are not exact on oneDNN here (torch 2.14.1, AVX-512 VNNI): 813 of 6,575
    random grouped shapes gave wrong accumulators (e.g. 24 input channels per group, RegNetY's group
    width), against none of 13,000 plain or depthwise ones; they run off oneDNN."""
    return ((groups == 1 or in_per_group == 1) and fits_int8(max_w, max_x) and k * max_w * max_x < 2**24
            and k * 255 * max_w < 2**31 and onednn_exact())


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
        got = onednn_conv(x, w, 2, 1, 1, 1, 1, {})[0, 0]
        if not torch.equal(got.to(torch.int64), int64_conv_reference(x[0], w[0], 2, 1, 1, 1, 1)):
            return False
        # the forward's scaled path: per-channel scales and the "sum" post-op over weight terms
        g = torch.Generator().manual_seed(0)
        xs = torch.randint(-8, 8, (2, 3, 16, 6, 6), generator=g, dtype=torch.int8)
        ws = torch.randint(-8, 8, (2, 8, 16, 3, 3), generator=g, dtype=torch.int8)
        twos = torch.full((8,), 2.0)
        z = onednn_conv_scaled(xs, ws, 2, 1, 1, 1, 1, [[twos, twos], [twos, None]], {})
        ref = [int64_conv_reference(xs[jj], ws[t], 2, 1, 1, 1, 1) for jj in range(2) for t in range(2)]
        if not (torch.equal(z[0].to(torch.int64), 2 * (ref[0] + ref[1]))
                and torch.equal(z[1].to(torch.int64), 2 * ref[2])):
            return False
        # zero points other than 128 (8-bit asymmetric terms: u + c, zero point 128 - c), per image, padded
        c = torch.tensor([128, 128, 0, -127, 5, 5]).reshape(1, 6, 1, 1, 1)
        xo = torch.randint(-128, 128, (1, 6, 16, 6, 6), generator=g, dtype=torch.int8)
        z = onednn_conv_scaled(xo, ws[:1], 2, 1, 1, 1, 1, [[torch.ones(8)]], {}, c)[0]
        return bool(torch.equal(z.to(torch.int64), int64_conv_reference(xo[0] + c[0], ws[0], 2, 1, 1, 1, 1)))
    except (RuntimeError, AttributeError, NotImplementedError):
        return False


@functools.lru_cache(maxsize=1)
def onednn_epilogue_matches() -> bool:
    """Whether oneDNN's scaled epilogue (per-channel scale on the int32 accumulator, then the "sum"
    post-op) rounds like the shared rescale of `exact_forward.exact_forward` (a float32 multiply, then an
    add, per weight term; no fused multiply-add): then integer mode's fast path gives simulate mode's
    bits. Checked once per process with non-power-of-two scales; False sends integer mode through
    `intops.conv_terms` and the shared rescale instead."""
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


def onednn_conv(xq: torch.Tensor, wq: torch.Tensor, dim: int, stride, padding, dilation, groups: int,
                cache: dict) -> torch.Tensor:
    """Every cross term's accumulator as float32 (exact: check `onednn_ok` first); arguments and result
    as `intops.conv_terms`."""
    j, nb = xq.shape[:2]
    i, cout = wq.shape[:2]
    xu, st, pad, dil, hand = _onednn_input(xq, wq, dim, stride, padding, dilation)
    xu = _pad_by_hand(xu, hand, _U8_ZERO)
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
                       scales: list[list[torch.Tensor | None]], cache: dict,
                       x_offset: torch.Tensor | None = None) -> list[torch.Tensor | None]:
    """Per activation term j, z_j = sum_i scales[j][i] * acc_ij in float32, the rescale done by oneDNN:
    each convolution applies its per-channel scale to the int32 accumulator and adds the previous
    weight term's result (post-op "sum"). The forward's fast path; `intops.conv_terms` gives the integers.

    Args:
        xq, wq, dim, ...: as `intops.conv_terms` (check `onednn_ok` first, with |xq| <= 128).
        scales: [J][I] float32 vectors [Cout] (C_ij * s_i), None where the pair is not kept.
        x_offset: None, or offsets c [J, N, 1, ...] as `intops.conv_terms` (terms xq + c, |c| <= 128):
            oneDNN takes them as the u8 input's zero point, 128 - c, one convolution per run of images
            with the same value (one for post-ReLU inputs, whose zero point is 0 in every image).
    Returns:
        [z_0, ..., z_{J-1}] as [N, Cout, *spatial_out] (None for a term with no kept pair).
    """
    j, nb = xq.shape[:2]
    xu, st, pad, dil, hand = _onednn_input(xq, wq, dim, stride, padding, dilation)
    key = ("onednn1", tuple(st), tuple(pad), tuple(dil), groups)
    if key not in cache:  # one packed weight per term: the sum post-op adds them
        cache[key] = [_pack(wq[t].to(torch.int8), dim, st, pad, dil, groups) for t in range(wq.shape[0])]
    zeros = torch.zeros(wq.shape[1], dtype=torch.int64)
    args = (list(st), pad, list(dil), groups, 1.0, 0, torch.float32)
    out = []
    for jj in range(j):
        x_all = xu[jj * nb:(jj + 1) * nb]
        points = [_U8_ZERO] * nb if x_offset is None else [_U8_ZERO - c for c in x_offset[jj].reshape(-1).tolist()]
        points = points * nb if len(points) == 1 else points  # a per-tensor offset
        parts, start = [], 0
        for zp, run in itertools.groupby(points):  # one convolution per run of images with the same zero point
            n = len(list(run))
            x, start = _pad_by_hand(x_all[start:start + n], hand, zp), start + n
            part = None
            for t, sc in enumerate(scales[jj]):
                if sc is None:
                    continue
                if part is None:
                    part = torch.ops.onednn.qconv2d_pointwise(x, 1.0, zp, cache[key][t], sc, zeros, None, *args,
                                                              "none", [], "")
                else:
                    part = torch.ops.onednn.qconv2d_pointwise.binary(x, 1.0, zp, cache[key][t], sc, zeros, part, None,
                                                                     *args, 1.0, 0, "sum", 1.0, "none", [], "")
            parts.append(part)
        z = None if parts[0] is None else parts[0] if len(parts) == 1 else torch.cat(parts)
        out.append(z.squeeze(2) if z is not None and dim == 1 else z)
    return out


def _onednn_input(xq, wq, dim, stride, padding, dilation):
    """The activation terms as one u8 channels-last batch (x + 128), oneDNN's geometry, and the padding
    to apply by hand (None when oneDNN pads: it pads symmetrically, with the zero point)."""
    _, st, dil, (pt, pb, pl, pr) = conv_geometry(dim, wq.shape[3:] if dim == 2 else wq.shape[3],
                                                 stride, padding, dilation)
    x4 = xq.reshape(-1, *xq.shape[2:])
    if dim == 1:
        x4 = x4.unsqueeze(2)
    xu = x4.to(torch.int8).contiguous(memory_format=torch.channels_last).view(torch.uint8).bitwise_xor(_U8_ZERO)
    if pt != pb or pl != pr:
        return xu, st, [0, 0], dil, (pl, pr, pt, pb)
    return xu, st, [pt, pl], dil, None


def _pad_by_hand(xu: torch.Tensor, hand, zero_point: int) -> torch.Tensor:
    """Asymmetric padding, which oneDNN lacks, holding the zero point (the value 0)."""
    if hand is None:
        return xu
    return F.pad(xu, hand, value=zero_point).contiguous(memory_format=torch.channels_last)


def _pack(w: torch.Tensor, dim, st, pad, dil, groups):
    w = w.unsqueeze(2) if dim == 1 else w
    return torch.ops.onednn.qconv_prepack(w, torch.ones(w.shape[0]), 1.0, _U8_ZERO, list(st), pad, list(dil),
                                          groups, None)
