"""An expanded layer's forward from exact integer accumulators (integer mode, and simulate mode wherever
the activations are expanded; docs/method.md, "Execution modes"): the kept cross terms in blocks of one
integer op each (`intops`), the accumulators, and the one shared rescale

    y = b + sum_j t_j z_j,    z_j = sum_i C_ij s_i acc_ij,

element-wise, so no output depends on its batch mates; for CPU convolutions, oneDNN's fast path with the
same rescale in its epilogue (`onednn_forward`). Functions of a `layers.ExpandedLayer` (this module sits
below `layers` and does not import it): the layer gives its terms (`activation_int_terms`,
`w_int_terms`, `_pairs_py`) and its kind's op and shapes (`_int_terms_op`, `_w_out_scale`,
`_x_out_scale`, `_bias_shape`, `_layout`, `_zero_out`).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
import torch.nn as nn

from .intbounds import max_abs_int, offset_form, reduction_size
from .intops import resolve_kernel
from .onednn import onednn_conv_scaled, onednn_epilogue_matches, onednn_ok


def pair_groups(C: list[list[int]]) -> list[tuple[list[int], list[int]]]:
    """Kept pairs of C [I][J] as (weight terms, activation terms) blocks, one integer op each: the full
    grid is one block; the total order one block per activation term (its kept weight terms)."""
    by_rows: dict[tuple[int, ...], list[int]] = {}
    for j in range(len(C[0])):
        rows = tuple(i for i in range(len(C)) if C[i][j])
        if rows:
            by_rows.setdefault(rows, []).append(j)
    return [(list(rows), js) for rows, js in by_rows.items()]


def int_blocks(layer: nn.Module, x: torch.Tensor, kernel: str) -> Iterator:
    """Yields (weight terms, activation terms, accumulators [J, I, *out], act scales [J, ...])."""
    if layer.act_fp:
        raise ValueError("integer mode needs expanded activations; this layer keeps its input in FP "
                         "(level='tensor' or truncation='weight_only'): use mode='simulate'")
    xq, xoff, xs = layer.activation_int_terms(x)
    wq = layer.w_int_terms()
    mx, mw = max_abs_int(layer.a_bits, layer.a_grid), max_abs_int(layer.w_bits, layer.w_grid)
    mx = 128 if offset_form(mx) else mx  # with offsets the op sees the int8 part u, |u| <= 128
    for rows, js in pair_groups(layer._pairs_py):
        run = js == list(range(js[0], js[-1] + 1))
        xsel = xq[js[0]:js[-1] + 1] if run else xq[js]
        osel = None if xoff is None else xoff[js[0]:js[-1] + 1] if run else xoff[js]
        wsel = wq[rows[0]:rows[-1] + 1] if rows == list(range(rows[0], rows[-1] + 1)) else wq[rows]
        yield rows, js, layer._int_terms_op(xsel, wsel, mx, mw, kernel, tuple(rows), osel), xs


def integer_accumulators(layer: nn.Module, x: torch.Tensor, kernel: str
                         ) -> dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]]:
    """`ExpandedLayer.integer_accumulators` (see there): {(i, j): (C_ij * Qw_i * Qx_j, s_i t_j)}."""
    out = {}
    for rows, js, acc, xs in int_blocks(layer, x, kernel):
        for a, j in enumerate(js):
            for b, i in enumerate(rows):
                c = layer._pairs_py[i][j]
                t = acc[a, b] * c if c != 1 else acc[a, b]
                out[(i, j)] = (t.to(torch.int64) if t.is_floating_point() else t,
                               layer._w_out_scale(i, t) * layer._x_out_scale(xs[j], t))
    return out


def rescale(layer: nn.Module, terms: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor | None:
    """y = b + sum_j t_j z_j over (z_j, t_j) in order, in z's dtype: one multiply-add per activation term,
    the bias on the first. None when there is no term."""
    y = None
    for z, sx in terms:
        t = layer._x_out_scale(sx, z).to(z.dtype)
        if y is not None:
            y = y.addcmul_(z, t)
        elif layer.bias is not None:
            y = torch.addcmul(layer.bias.reshape(layer._bias_shape(z)).to(z.dtype), z, t)
        else:
            y = z * t
    return y


def exact_forward(layer: nn.Module, x: torch.Tensor, kernel: str) -> torch.Tensor:
    """y = b + sum_j t_j z_j with z_j = sum_i (C_ij s_i) acc_ij, from exact accumulators.

    Shared by every kernel (int8 units, "float" ops on the integers) and both modes, in the order and
    with the float ops of the oneDNN path's epilogue (`onednn_forward`: multiply, then add, per weight
    term; one multiply-add per activation term, the bias on the first), so every kernel gives the same
    bits. Integers below 2**24 convert to float32 exactly; larger ones round like any float32 op: the
    accumulators are exact, the rescale is float. Every step is element-wise, so no output depends on
    its batch mates.
    """
    z: dict[int, torch.Tensor] = {}
    scales = None
    for rows, js, acc, xs in int_blocks(layer, x, kernel):
        scales = xs
        for a, j in enumerate(js):
            for b, i in enumerate(rows):
                t = acc[a, b]
                t = t if t.dtype in (torch.int32, x.dtype) else t.to(x.dtype)  # canonical: the compute dtype
                t = t * (layer._w_out_scale(i, t).to(x.dtype) * layer._pairs_py[i][j])
                z[j] = t if j not in z else z[j].add_(t)
    y = rescale(layer, [(z[j], scales[j]) for j in sorted(z)])  # z_j is in x's dtype
    if y is None:
        y = layer._zero_out(x)
        return y + layer.bias.reshape(layer._bias_shape(y)) if layer.bias is not None else y
    return layer._layout(y.to(x.dtype))


def onednn_forward(layer: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    """A CPU convolution on oneDNN with the weight scales and the sum over weight terms in its epilogue:
    z_j = sum_i C_ij s_i acc_ij, then `rescale`. None where it does not apply. 8-bit asymmetric / auto
    terms go in as oneDNN's u8 input with their zero point (exact in int32, the same epilogue)."""
    mx, mw = max_abs_int(layer.a_bits, layer.a_grid), max_abs_int(layer.w_bits, layer.w_grid)
    mx = 128 if offset_form(mx) else mx  # int8 terms plus offsets, which oneDNN takes as zero points
    if (layer.act_fp or x.device.type != "cpu" or resolve_kernel(layer.int_kernel, x.device) != "onednn"
            or not onednn_ok(reduction_size(layer.w_q[0]), mw, mx, layer.groups, layer.w_q.shape[2])
            or not onednn_epilogue_matches()):
        return None
    xq, xoff, xs = layer.activation_int_terms(x)
    cout = layer.w_q.shape[1]
    sw = [layer.w_scale[i].float().expand(cout).contiguous() if layer.w_scale[i].numel() == 1
          else layer.w_scale[i].float().contiguous() for i in range(layer.w_terms)]
    C = layer._pairs_py
    scales = [[sw[i] * C[i][j] if C[i][j] else None for i in range(layer.w_terms)] for j in range(layer.a_terms)]
    cache = layer._w_cache.setdefault(("conv", "all", layer.w_q.device), {})
    zs = onednn_conv_scaled(xq, layer.w_int_terms(), layer.dim, layer.stride, layer.padding, layer.dilation,
                            layer.groups, scales, cache, xoff)
    y = rescale(layer, [(z, t) for z, t in zip(zs, xs) if z is not None])
    return None if y is None else layer._layout(y.to(x.dtype))
