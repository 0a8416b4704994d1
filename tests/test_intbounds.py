"""The bounds behind integer mode's exactness, for every grid and bit width: max_abs_int holds every
centered term, int32_chunk is the longest reduction int32 provably holds, check_exact refuses past 2**53."""
import pytest

from fpxint.intbounds import INT32_MAX, check_exact, fits_int8, int32_chunk, max_abs_int
from fpxint.quant import grid_range

GRIDS_BITS = [(g, b) for g in ("symmetric", "full", "asymmetric") for b in range(1, 9)
              if not (g == "full" and b == 1)]


def _extremes(bits: int, grid: str) -> tuple[int, int]:
    """Most negative and most positive centered integer a term of this grid can hold."""
    lo, hi = grid_range(bits, grid)
    return (-hi, hi) if grid == "asymmetric" else (lo, hi)  # centered asymmetric: q - z in [-(2^b-1), 2^b-1]


@pytest.mark.parametrize("grid,bits", GRIDS_BITS)
def test_max_abs_int_bounds_every_centered_term(grid, bits):
    lo, hi = _extremes(bits, grid)
    assert max(-lo, hi) <= max_abs_int(bits, grid)
    # int8 holds the terms exactly when fits_int8 says so: the full grid's -128 included, 8-bit asymmetric not
    assert fits_int8(max_abs_int(bits, grid), 1) == (-128 <= lo and hi <= 127)


@pytest.mark.parametrize("grid,bits", GRIDS_BITS)
def test_int32_chunk_is_a_proof_for_every_bit_width(grid, bits):
    """K * max|w| * max|x| <= 2**31 - 1 for the chunk length, and one more product could overflow."""
    m = max_abs_int(bits, grid)
    k = int32_chunk(m, m)
    assert k * m * m <= INT32_MAX < (k + 1) * m * m
    if m <= 128:  # int8 operands: the 8-bit chunk is 131071, far above any layer's K; test_intops runs it
        assert k >= 131071


def test_check_exact_at_float64s_limit():
    check_exact(2**53 // (255 * 255), 255, 255)  # the largest sum below 2**53: allowed
    with pytest.raises(ValueError, match="2\\*\\*53"):
        check_exact(2**53 // (255 * 255) + 1, 255, 255)
