"""Quantization primitives: integer grids, scale rules and one greedy quantization step.

Every tensor is handled as a 2-D view `[groups, elements]`: one scale (and zero point) per row.
Granularity only decides the view (`group_view`); scales then broadcast back with `[G, 1]`.

Grids (b bits per term) and the error factor `f` each term guarantees under the max rule
(`||R_k||_inf <= f * ||R_{k-1}||_inf`, so `||R_n||_inf <= f**n * ||T||_inf`):

| grid | integers | max-rule scale | f |
|---|---|---|---|
| symmetric, b >= 2 | [-(2^(b-1)-1), 2^(b-1)-1] | amax / (2^(b-1)-1) | 1 / (2^b - 2) |
| symmetric, b = 1 | {-1, +1} (binary, no zero) | amax / 2 | 1 / 2 |
| full, b >= 2 | [-2^(b-1), 2^(b-1)-1] | amax / (2^(b-1) - 1/2) | 1 / (2^b - 1) |
| asymmetric | [0, 2^b-1] with zero point | (max' - min') / (2^b-1), range widened to hold 0 | 1 / (2^b - 1) |
| auto, b >= 2 | per row: [0, 2^b-1] if the row is >= 0, else symmetric | max / (2^b-1) or symmetric's | 1 / (2^b - 2) |

The auto grid decides per row (per sample of an activation) from the sign of the actual values, so
it needs no calibration and no structural guess: a post-ReLU input, which cannot be negative, gets
all 2^b levels on [0, max] (the symmetric grid wastes the sign bit there), with no zero point, so
integer GEMMs stay plain products. Signed rows (and the signed residuals of later terms) keep the
symmetric grid. Its bound is the symmetric one, the worse of the two.

The full grid uses the extra negative level by setting the scale so that +amax lands half a step
above the top level: rounding then never moves a value by more than half a step, and the grid
spans 2^b - 1 steps instead of 2^b - 2.
"""
from __future__ import annotations

import torch

from .config import check_bits

MSE_CANDIDATES = tuple(0.8**i for i in range(16))  # clip ratios 1.0 .. 0.035 searched by "mse"


def all_finite(t: torch.Tensor) -> bool:
    """True when a float tensor holds no NaN or Inf (non-float and empty tensors: True).

    One min/max reduction (NaN propagates through both, +-Inf reaches one of them) instead of
    `isfinite(t).all()`, which writes a bool tensor as large as `t`: ~10x faster on this CPU, and
    `expand` checks every weight of the model (135 M values for SmolLM2) before it starts.
    """
    if not t.is_floating_point() or t.numel() == 0:
        return True
    lo, hi = torch.aminmax(t.detach())
    return bool(torch.isfinite(lo)) and bool(torch.isfinite(hi))


def grid_range(bits: int, grid: str) -> tuple[int, int]:
    """The integer range [qmin, qmax] of one term."""
    check_bits(bits)
    if grid == "symmetric":
        return (-1, 1) if bits == 1 else (-(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1)
    if grid == "full":
        if bits < 2:
            raise ValueError("grid='full' needs bits >= 2; the 1-bit full grid {-1, 0} cannot converge")
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    if grid == "asymmetric":
        return 0, 2**bits - 1
    if grid == "auto":  # the union of both row kinds; the max rule keeps each row inside its own
        if bits < 2:
            raise ValueError("grid='auto' needs bits >= 2; use 'symmetric' (binary grid {-1, +1})")
        return -(2 ** (bits - 1) - 1), 2**bits - 1
    raise ValueError(f"grid={grid!r} is not allowed; choose one of symmetric, full, asymmetric, auto")


def contraction(bits: int, grid: str) -> float:
    """Error factor per term under the max rule: ||R_k||_inf <= f * ||R_{k-1}||_inf."""
    grid_range(bits, grid)  # validates
    if grid in ("symmetric", "auto"):  # auto's signed rows are symmetric; its unsigned rows do better
        return 0.5 if bits == 1 else 1.0 / (2**bits - 2)
    return 1.0 / (2**bits - 1)  # full and asymmetric


def term_dtype(grid: str) -> torch.dtype:
    """Storage dtype of the integer terms: int8, uint8 for the asymmetric grid (0..255 at 8 bits), int16 for
    the auto grid (-127..255 at 8 bits)."""
    return {"asymmetric": torch.uint8, "auto": torch.int16}.get(grid, torch.int8)


def group_view(t: torch.Tensor, granularity: str) -> torch.Tensor:
    """A 2-D view [groups, elements] whose rows share one scale.

    per_tensor: one row; per_channel / per_sample: one row per index of dim 0 (output channel of a
    weight, sample of an activation batch); per_token: one row per vector along the last dim.
    """
    if t.dim() == 0:
        t = t.reshape(1)
    if granularity == "per_tensor":
        return t.reshape(1, -1)
    if granularity in ("per_channel", "per_sample"):
        return t.reshape(t.shape[0], -1)
    if granularity == "per_token":
        return t.reshape(-1, t.shape[-1])
    raise ValueError(f"granularity={granularity!r} is not allowed; choose one of per_tensor, per_channel, "
                     "per_sample, per_token")


def max_rule_scale(r: torch.Tensor, bits: int, grid: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scale (and zero point) per row of the 2-D view `r` such that nothing is clipped."""
    if grid == "asymmetric":
        mn, mx = torch.aminmax(r, dim=1, keepdim=True)
        mn, mx = mn.clamp(max=0), mx.clamp(min=0)  # hold 0 exactly: zero padding stays exact
        scale = (mx - mn) / (2**bits - 1)
        zero = torch.round(-mn / _safe(scale)).clamp(0, 2**bits - 1)
        return scale, zero
    mn, mx = torch.aminmax(r, dim=1, keepdim=True)
    amax = torch.maximum(-mn, mx)
    if grid == "auto":  # unsigned rows where nothing is negative: all 2^b levels on [0, max]
        return torch.where(mn >= 0, mx / (2**bits - 1), amax / (2 ** (bits - 1) - 1)), None
    if grid == "symmetric":
        denom = 2.0 if bits == 1 else float(2 ** (bits - 1) - 1)
    else:  # full
        denom = 2 ** (bits - 1) - 0.5
    return amax / denom, None


def quantize(r: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, bits: int, grid: str,
             clamp: bool = True) -> torch.Tensor:
    """Integers (as float) on the grid nearest to r / scale; rows with scale 0 give 0 (or +1 binary).

    clamp=False is for callers that know nothing can fall outside the grid (saves one pass).
    """
    qmin, qmax = grid_range(bits, grid)
    if grid == "symmetric" and bits == 1:
        return torch.where(r >= 0, 1.0, -1.0).to(r.dtype)  # nearest of {-1, +1}
    q = torch.div(r, _safe(scale))
    if zero is not None:
        q.add_(zero)
    q.round_()
    return q.clamp_(qmin, qmax) if clamp else q


def dequantize(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None) -> torch.Tensor:
    q = q.to(scale.dtype)
    return (q - zero) * scale if zero is not None else q * scale


def mse_scale(r: torch.Tensor, bits: int, grid: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per row, the clip ratio from MSE_CANDIDATES that minimizes the squared error of one term."""
    best_err = best_s = best_z = None
    for ratio in MSE_CANDIDATES:
        s, z = max_rule_scale(r * ratio, bits, grid)  # scale for the clipped range
        err = (r - dequantize(quantize(r, s, z, bits, grid), s, z)).square_().sum(dim=1, keepdim=True)
        if best_err is None:
            best_err, best_s, best_z = err, s, z
        else:
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_s = torch.where(better, s, best_s)
            best_z = torch.where(better, z, best_z) if z is not None else None
    return best_s, best_z


def _safe(scale: torch.Tensor) -> torch.Tensor:
    """Scale with zeros replaced by 1, so all-zero rows quantize to 0 without dividing by 0."""
    return torch.where(scale > 0, scale, torch.ones_like(scale))
