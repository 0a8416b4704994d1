"""Tensor level: the greedy residual series T = s_1 Q_1 + ... + s_n Q_n + R_n.

Each term quantizes what the previous terms left over (R_0 = T, Q_k = round(R_{k-1} / s_k),
R_k = R_{k-1} - s_k Q_k), so under the max rule the residual shrinks by a fixed factor per term
(see `quant.contraction`). `expand_tensor` stores the integer terms (int8, uint8 for the
asymmetric grid) and their scales, through the C kernel of `fpxint.fused` where it applies (the
eager loop here is its oracle, `backend="torch"`); `expand_weights` does many tensors in one kernel
call; `expanded_sum` is the run-time activation path, which never materializes the integer terms
(`expanded_sum_fused`: the same through the kernel).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch

from . import fused
from .config import GRIDS, SCALE_RULES, check_bits, check_terms
from .metrics import sqnr_from_powers
from .quant import (all_finite, contraction, dequantize, group_view, max_rule_scale, mse_scale, quantize,
                    term_dtype)


def check_tensor(t: torch.Tensor, what: str = "tensor") -> torch.Tensor:
    """Rejects what the series cannot expand, with a message instead of a crash inside torch."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{what} must be a torch.Tensor, got {type(t).__name__}")
    if t.numel() == 0:
        raise ValueError(f"{what} is empty (shape {tuple(t.shape)}); nothing to expand")
    if not t.is_floating_point():
        t = t.float()
    if not all_finite(t):
        raise ValueError(f"{what} holds NaN or Inf values; a series expansion needs finite numbers")
    return t


def _check_options(grid: str, scale_rule: str) -> None:
    if grid not in GRIDS:
        raise ValueError(f"grid={grid!r} is not allowed; choose one of {', '.join(GRIDS)}")
    if scale_rule not in SCALE_RULES:
        raise ValueError(f"scale_rule={scale_rule!r} is not allowed; choose one of {', '.join(SCALE_RULES)}")
    if scale_rule == "fixed" and grid == "asymmetric":
        raise ValueError("scale_rule='fixed' is defined for the 'symmetric' and 'full' grids only")


def _series_steps(r: torch.Tensor, bits: int, terms: int, grid: str, scale_rule: str):
    """Yields (q, scale, zero) per term over the 2-D view r.

    The residual is updated in place from the second term on; the first update makes a new tensor,
    so the caller's r is never modified and no up-front copy is needed. Every grid is clamped: the
    symmetric grid under the max rule cannot clip in exact arithmetic, but when a row's residual is
    subnormal, s = amax / qmax loses precision and amax / s can round past qmax (8 bits, 6 terms of
    a 1e-30 row gave 128, which wrapped to -128 in int8); for normal floats the clamp changes nothing.
    """
    scale = None
    f = contraction(bits, grid)
    for k in range(terms):
        if k == 0 and scale_rule == "mse":
            scale, zero = mse_scale(r, bits, grid)  # clips outliers; later terms repair them
        elif k > 0 and scale_rule == "fixed":
            zero = None  # the previous term bounds the residual: no reduction needed
            scale = scale * f
        else:
            scale, zero = max_rule_scale(r, bits, grid)
        q = quantize(r, scale, zero, bits, grid)
        if zero is not None:
            r = r - dequantize(q, scale, zero) if k == 0 else r.sub_(dequantize(q, scale, zero))
        else:  # r - s * q in one fused pass
            r = torch.addcmul(r, q, scale, value=-1) if k == 0 else r.addcmul_(q, scale, value=-1)
        yield q, scale, zero, r


def expand_tensor(t: torch.Tensor, bits: int = 4, terms: int = 2, granularity: str = "per_tensor",
                  grid: str = "symmetric", scale_rule: str = "max", backend: str = "auto") -> "TensorSeries":
    """Expands a tensor into `terms` integer terms of `bits` bits each.

    Args:
        t: any float tensor (weights: dim 0 is the output channel; activations: dim 0 the sample).
        bits: bits per term, 1..8.
        terms: number of terms, 1..16.
        granularity: per_tensor | per_channel | per_sample | per_token (see `quant.group_view`).
        grid: symmetric | full | asymmetric.
        scale_rule: max (carries the bound) | mse (first term MSE-optimal, clips) | fixed
            (s_k = s_{k-1} * f: one reduction in all).
        backend: "auto" (the C kernel of `fpxint.fused` on float CPU tensors when it builds,
            else the eager loop), "c" (the kernel or RuntimeError), "torch" (the eager loop, vectorized
            over all groups: one pass set per term, also the path on CUDA). Same bits on every path.

    Example:
        >>> s = expand_tensor(torch.randn(64, 128), bits=4, terms=3, granularity="per_channel")
        >>> s.terms[0][0].dtype, len(s.terms)
        (torch.int8, 3)
    """
    if backend != "torch":
        return expand_weights([t], bits, terms, granularity, grid, scale_rule, backend)[0]
    check_bits(bits)
    check_terms(terms)
    _check_options(grid, scale_rule)
    t = check_tensor(t)
    work = t.float() if t.dtype in (torch.float16, torch.bfloat16) else t
    r = group_view(work, granularity)
    qs, scales, zeros = [], [], []
    for q, s, z, _ in _series_steps(r, bits, terms, grid, scale_rule):
        qs.append(q.to(term_dtype(grid)).reshape(t.shape))
        scales.append(s.squeeze(1))
        zeros.append(z.squeeze(1).to(torch.int32) if z is not None else None)
    return TensorSeries(
        q=torch.stack(qs), scales=torch.stack(scales),
        zero_points=torch.stack(zeros) if zeros[0] is not None else None,
        bits=bits, grid=grid, granularity=granularity, scale_rule=scale_rule, source=t)


def expanded_sum(x: torch.Tensor, bits: int, terms: int, granularity: str = "per_sample",
                 grid: str = "symmetric", scale_rule: str = "max",
                 coeffs: Sequence[float] | None = None, accumulate: bool = False) -> torch.Tensor:
    """sum_j coeffs[j] * t_j Qx_j without storing the integer terms (run-time activation path).

    With all coefficients 1 this is x - R_n, which saves one accumulation per term; `accumulate`
    sums the dequantized terms anyway, in the order the layers' multi-group path adds them (the two
    differ in the last bit).
    """
    x2 = group_view(x if x.is_floating_point() else x.float(), granularity)
    if accumulate and coeffs is None:
        coeffs = (1,) * terms
    if not accumulate and (coeffs is None or all(c == 1 for c in coeffs[:terms])):
        r = x2
        for *_, r in _series_steps(x2, bits, terms, grid, scale_rule):
            pass
        return (x2 - r).reshape(x.shape)
    out = torch.zeros_like(x2)
    for c, (q, s, z, _) in zip(coeffs, _series_steps(x2, bits, terms, grid, scale_rule)):
        if c:
            out.add_(dequantize(q, s, z), alpha=c)
    return out.reshape(x.shape)


def centered_term(q: torch.Tensor, zero: torch.Tensor | None, bshape: Sequence[int]) -> torch.Tensor:
    """An integer term as signed integers Q - z (int16; int8 / uint8 terms and their zero points fit),
    so that the term's value is scale * centered. `zero`: [G] zero points or None (symmetric grids);
    `bshape` broadcasts them against Q."""
    q = q.to(torch.int16)
    return q if zero is None else q - zero.reshape(tuple(bshape)).to(torch.int16)


@dataclass
class TensorSeries:
    """The integer terms and scales of one expanded tensor.

    q: [n, *shape] integer terms (int8; uint8 for the asymmetric grid).
    scales: [n, G] float scales, one per group (row of `quant.group_view`).
    zero_points: [n, G] int32 or None (asymmetric grid only).
    source: the expanded tensor itself, kept by reference for residuals and bounds.
    """

    q: torch.Tensor
    scales: torch.Tensor
    zero_points: torch.Tensor | None
    bits: int
    grid: str
    granularity: str
    scale_rule: str
    source: torch.Tensor | None = None

    @property
    def n_terms(self) -> int:
        return self.q.shape[0]

    @property
    def shape(self) -> torch.Size:
        return self.q.shape[1:]

    def _bshape(self) -> tuple[int, ...]:
        """Shape that broadcasts a [G] scale vector against the tensor."""
        if self.granularity == "per_tensor":
            return (1,) * len(self.shape)
        if self.granularity == "per_token":
            return (*self.shape[:-1], 1)
        return (self.shape[0],) + (1,) * (len(self.shape) - 1)

    @property
    def terms(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """[(integer term, broadcastable scale), ...], one pair per term."""
        return [(self.q[k], self.scales[k].reshape(self._bshape())) for k in range(self.n_terms)]

    def centered(self, k: int) -> torch.Tensor:
        """Term k (0-based) as signed integers Q_k - z_k (int16), so that term = scale * centered."""
        return centered_term(self.q[k], None if self.zero_points is None else self.zero_points[k], self._bshape())

    def term(self, k: int) -> torch.Tensor:
        """Float value s_k (Q_k - z_k) of term k (0-based)."""
        return self.centered(k).float() * self.scales[k].reshape(self._bshape())

    def partial(self, k: int) -> torch.Tensor:
        """Float reconstruction from the first k terms (k = 0 gives zeros)."""
        if not 0 <= k <= self.n_terms:
            raise ValueError(f"k={k} is not allowed; choose 0..{self.n_terms}")
        out = torch.zeros(self.shape, dtype=self.scales.dtype, device=self.q.device)
        for i in range(k):
            out += self.term(i)
        return out

    def contraction(self) -> float:
        return contraction(self.bits, self.grid)

    def bound(self, k: int) -> float:
        """Proven bound on ||R_k||_inf for this grid and scale rule (float rounding aside)."""
        f = self.contraction()
        if self.source is None:
            raise ValueError("bound() needs the source tensor; it was not kept")
        t_inf = self.source.abs().max().item()
        if self.scale_rule == "mse":
            # the first term may clip (|R_1| <= |T|); from term 2 on the max rule applies
            r1 = (self.source - self.partial(1)).abs().max().item()
            return t_inf if k <= 1 else r1 * f ** (k - 1)
        return t_inf * f**k

    def residual_norms(self) -> pd.DataFrame:
        """Per term k: max-abs and relative-L2 residual, SQNR in dB (+inf when exact, see `fpxint.metrics`),
        and the proven max-abs bound."""
        if self.source is None:
            raise ValueError("residual_norms() needs the source tensor; it was not kept")
        src = self.source.float()
        sig = src.square().sum().item()
        rows, acc = [], torch.zeros_like(src)
        for k in range(self.n_terms):
            acc += self.term(k)
            r = src - acc
            noise = r.square().sum().item()
            rows.append({
                "term": k + 1,
                "max_abs": r.abs().max().item(),
                "rel_l2": math.sqrt(noise / sig) if sig > 0 else 0.0,
                "sqnr_db": sqnr_from_powers(sig, noise),  # +inf once the series is exact (fpxint.metrics)
                "bound": self.bound(k + 1),
            })
        return pd.DataFrame(rows)


# ----- the fused path: the C kernel of `fpxint.fused`, bit-identical to the eager loop above -----------------
def expand_weights(weights: Sequence[torch.Tensor], bits: int = 4, terms: int = 2, granularity: str = "per_channel",
                   grid: str = "symmetric", scale_rule: str = "max", backend: str = "auto") -> list[TensorSeries]:
    """Expands many tensors at once; the same `TensorSeries` as `series.expand_tensor` on each, bit for bit.

    Args:
        weights: float tensors (dim 0 is the output channel for per_channel); any mix of shapes.
        bits, terms, granularity, grid, scale_rule: as in `series.expand_tensor`, shared by all.
        backend: "auto" (the C kernel when it builds, else eager), "c" (kernel or RuntimeError),
            "torch" (the eager `expand_tensor` loop).

    Float64, non-CPU, and (with autograd on) grad-requiring tensors take the eager path.

    Example:
        >>> ws = [p.detach() for p in torchvision.models.resnet18().parameters() if p.dim() > 1]
        >>> series = expand_weights(ws, bits=4, terms=4, granularity="per_channel")
    """
    check_bits(bits)
    check_terms(terms)
    _check_options(grid, scale_rule)
    weights = list(weights)
    lib = fused.use_kernel(backend)
    out: list[TensorSeries | None] = [None] * len(weights)
    idx, views, sources = [], [], []
    for i, w in enumerate(weights):
        if not isinstance(w, torch.Tensor) or w.numel() == 0:
            check_tensor(w)  # raises the eager message
        if lib is None or not fused.fusable(w) or grid not in fused.GRID_CODE:
            out[i] = expand_tensor(w, bits, terms, granularity, grid, scale_rule, backend="torch")
            continue
        work = w.detach().float() if w.dtype != torch.float32 else w.detach()
        idx.append(i)
        views.append(group_view(work, granularity).contiguous())
        sources.append(w)
    if views:
        results, rc = fused.run_kernel(lib, views, bits, terms, grid, scale_rule, want_q=True)
        if rc >= 0:
            check_tensor(sources[rc])  # non-finite values: raises the eager message
        for i, src, (q, s, z) in zip(idx, sources, results):
            out[i] = TensorSeries(q=q.reshape(terms, *src.shape), scales=s,
                                  zero_points=z.to(torch.int32) if z is not None else None,
                                  bits=bits, grid=grid, granularity=granularity, scale_rule=scale_rule, source=src)
    return out


def expand_tensor_fused(t: torch.Tensor, bits: int = 4, terms: int = 2, granularity: str = "per_tensor",
                        grid: str = "symmetric", scale_rule: str = "max", backend: str = "auto") -> TensorSeries:
    """Drop-in for `series.expand_tensor` (same arguments and defaults, same result) on the fused path."""
    return expand_weights([t], bits, terms, granularity, grid, scale_rule, backend)[0]


def expanded_sum_fused(x: torch.Tensor, bits: int, terms: int, granularity: str = "per_sample",
                       grid: str = "symmetric", scale_rule: str = "max", coeffs: Sequence[float] | None = None,
                       backend: str = "auto", accumulate: bool = False) -> torch.Tensor:
    """Drop-in for `series.expanded_sum`: sum_j coeffs[j] t_j Qx_j (default x - R_n), bit-identical.

    One pass over the input per term plus one, the integer terms never materialized. Inputs that are
    not float32 CPU tensors, hold NaN / Inf, or require grad with autograd on take the eager path.

    accumulate=True sums the dequantized terms even when every coefficient is 1, as the multi-group
    path of `ExpandedLayer._simulate_forward` does (`sum(c * xj ...)`), instead of the x - R_n
    shortcut of `expanded_sum`: the two differ in the last bit.
    """
    if accumulate and coeffs is None:
        coeffs = (1,) * terms
    lib = fused.use_kernel(backend)
    if lib is None or not fused.fusable(x, (torch.float32,)) or grid not in fused.GRID_CODE:  # the kernel lacks "auto"
        return expanded_sum(x, bits, terms, granularity, grid, scale_rule, coeffs, accumulate)
    check_bits(bits)
    check_terms(terms)
    _check_options(grid, scale_rule)
    n, cs = terms, None
    if coeffs is not None and (accumulate or not all(c == 1 for c in coeffs[:terms])):  # else x - R_n
        cs = list(coeffs[:terms])  # eager zips the coefficients with the terms
        while cs and cs[-1] == 0:  # trailing zero terms add nothing: do not compute them
            cs.pop()
        if not cs:
            return torch.zeros_like(x)
        n = len(cs)
    view = group_view(x.detach(), granularity).contiguous()
    out = torch.empty_like(view)
    _, rc = fused.run_kernel(lib, [view], bits, n, grid, scale_rule, want_q=False, outs=[out], coeffs=cs)
    if rc >= 0:  # NaN / Inf: the eager code defines what comes out
        return expanded_sum(x, bits, terms, granularity, grid, scale_rule, coeffs, accumulate)
    return out.reshape(x.shape)
