"""Bounds that make integer mode's accumulators exact, from the bit widths alone (docs/method.md,
"Integer mode"): no bound is read from the data, so checking one needs no host synchronisation.

- operands are int8 when every |term| <= 127 (all grids up to 8 bits except asymmetric 8-bit,
  whose centered terms reach 255, and the full grid's -128 which int8 holds too): `fits_int8`;
  8-bit asymmetric / auto activation terms run on int8 as q - 128 plus an offset (`intops`): `int8_units_apply`;
- the int32 accumulator cannot overflow while K * max|w| * max|x| <= 2**31 - 1; longer reductions
  are split along K into chunks that satisfy it, summed in int64: `int32_chunk`;
- float64 on integer-valued operands is exact while every partial sum stays below 2**53: `check_exact`.
"""
from __future__ import annotations

import math

import torch

_EXACT_LIMIT = 2**53
INT32_MAX = 2**31 - 1


def max_abs_int(bits: int, grid: str) -> int:
    """Largest |centered integer| a term can hold (asymmetric terms are centered by the zero point)."""
    if grid in ("asymmetric", "auto"):  # auto: unsigned rows reach 2^b - 1
        return 2**bits - 1
    return 2 ** (bits - 1) if bits > 1 else 1


def reduction_size(w: torch.Tensor) -> int:
    """Products summed per output element: in_features, or in_channels/groups * kernel size."""
    return math.prod(w.shape[1:])


def fits_int8(max_w: int, max_x: int) -> bool:
    """Whether both operands' integers fit int8 [-128, 127].

    A bound of 128 comes only from the full grid's -128 (`max_abs_int`), which int8 holds.
    """
    return max_w <= 128 and max_x <= 128


def offset_form(max_x: int) -> bool:
    """Whether activation terms this wide (8-bit asymmetric / auto: up to 255) run as int8 u = q - 128
    plus a per-row offset (`layers.ExpandedLayer.activation_int_terms`, `intops`); the int8 part is then
    bounded by 128."""
    return 128 < max_x <= 255


def int8_units_apply(max_w: int, max_x: int) -> bool:
    """Whether integer mode's int8 kernels take a layer's terms: weights that fit int8, and activations
    that fit int8 directly or in the offset form."""
    return max_w <= 128 and (max_x <= 128 or offset_form(max_x))


def int32_chunk(max_w: int, max_x: int) -> int:
    """Longest reduction whose int32 accumulator provably cannot overflow: K * max|w| * max|x| <= 2**31 - 1."""
    return INT32_MAX // max(1, max_w * max_x)


def check_exact(k: int, max_w: int, max_x: int) -> None:
    """Raises if an accumulation over k products could exceed float64's exact integer range."""
    if k * max_w * max_x >= _EXACT_LIMIT:
        raise ValueError(f"integer accumulation over {k} products of |{max_w}| x |{max_x}| may exceed 2**53; "
                         "float64 would not be exact")
