"""Fixed-point encoding: every sum the node releases is a sum of bounded integers.

OpenDP protects float sums against rounding (Casacuberta et al. 2022) by widening their
sensitivity with a term quadratic in ``max_length``; with no public row count that term
dwarfs the data (see :mod:`.space`). Integer sums need ``max_length`` only to rule out
overflow. So a value ``x`` clamped into ``[lo, hi]`` is released through the integer

    u = round((x - lo) * 2**p) + offset

where ``p`` is the largest power of two that keeps ``max_length * max|u|`` inside ``i64``,
and decoded after the noise (post-processing). The rounding is at most ``2**-p`` per value,
reported as ``resolution``. Integer columns with integer bounds use ``p = 0`` and no rounding.

Means and variances centre ``u`` on its midpoint (``offset = -C``): the sensitivity is then
half the width of the bounds rather than the largest absolute bound.

Bounds are finite, within ``±MAX_BOUND`` and at least ``MIN_WIDTH`` wide (validation refuses
the rest; see :mod:`rds_kernel.spec`), so ``2**p`` and every decoded value are finite.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import polars as pl

from rds_kernel.dp.space import MAX_LENGTH

__all__ = ["Encoding", "encode"]

# OpenDP refuses a sum when max_length * max|bound| could overflow i64; keep a factor 2 spare.
_LIMIT = 2**62
Purpose = Literal["sum", "mean", "variance"]


@dataclass(frozen=True)
class Encoding:
    """How one numeric input becomes integers, and how to read the noisy sums back.

    ``value`` is the integer expression (``u``); ``bounds`` its clamp bounds. For a variance,
    ``square`` is the centred ``u**2 - square_offset`` with ``square_bounds``.
    """

    lo: float
    hi: float
    p: int
    centre: int
    value: pl.Expr
    bounds: tuple[int, int]
    exact: bool
    square: pl.Expr | None = None
    square_offset: int = 0
    square_bounds: tuple[int, int] | None = None

    @property
    def unit(self) -> float:
        """The value of one integer step, ``2**-p``."""
        return math.ldexp(1.0, -self.p)

    @property
    def resolution(self) -> float:
        """The largest rounding error per value (0 when no rounding happens)."""
        return 0.0 if self.exact else self.unit

    # Decoding runs after the mechanism, on noisy values: it must never raise. Float
    # arithmetic gives inf/nan where Python's ** would raise; the caller reads those as unknown.

    def sum(self, total: float) -> float:
        """The sum of the original values from a (noisy) sum of ``u`` (non-centred only)."""
        return total * self.unit

    def mean(self, mean_u: float) -> float:
        """The mean of the original values from a (noisy) mean of ``u``, inside the bounds."""
        return min(max(self.lo + (self.centre + mean_u) * self.unit, self.lo), self.hi)

    def variance(self, mean_u: float, mean_square: float) -> float:
        """The variance from (noisy) means of ``u`` and of the centred square, inside
        ``[0, (width / 2)**2]``."""
        second = mean_square + self.square_offset
        var = (second - mean_u * mean_u) * self.unit * self.unit
        half = (self.hi - self.lo) / 2
        return min(max(var, 0.0), half * half)


def _largest_p(span: float, limit: int) -> int:
    """The largest ``p`` with ``span * 2**p <= limit`` (``span > 0``)."""
    mantissa, exponent = math.frexp(limit / span)  # limit/span = mantissa * 2**exponent
    return exponent - 1 if mantissa >= 0.5 else exponent  # floor(log2(limit / span))


def _integral(*values: float) -> bool:
    return all(float(v).is_integer() for v in values)


def encode(
    x: pl.Expr,
    dtype: str,
    bounds: tuple[float, float],
    fill: float | None,
    purpose: Purpose,
) -> Encoding:
    """Encode the column expression ``x`` of schema type ``dtype`` for a sum, mean or variance.

    ``fill`` replaces nulls (and NaN); without it the lower bound is used, which only matters
    if the data holds nulls its schema says it cannot.
    """
    lo, hi = float(bounds[0]), float(bounds[1])
    fill_value = lo if fill is None else float(fill)
    width = hi - lo
    # the largest |u| the encoding may produce is span * 2**p, plus 1 for rounding
    span = {"sum": max(abs(lo), abs(hi)), "mean": width / 2, "variance": width / 2}[purpose]
    limit = _LIMIT // MAX_LENGTH
    if purpose == "variance":
        limit = math.isqrt(limit)
    # (The rounding allowance once was "+ 1" on the span, in the data's units: bounds 1e-5
    # apart then got 2**-14 steps, every value encoded to 0, and a variance read 0.)
    p = _largest_p(span, limit - 1)
    integer = dtype in ("int", "bool") and _integral(lo, hi, fill_value) and p >= 0

    if integer:
        p = 0
        ilo, ihi = int(lo), int(hi)
        if dtype == "bool":
            x = x.cast(pl.Int64)
        base = x.fill_null(int(fill_value)).clip(ilo, ihi)
        if purpose == "sum":
            return Encoding(lo, hi, 0, 0, base, (ilo, ihi), exact=True)
        centre = (ihi - ilo) // 2
        value = base - (ilo + centre)
        rng = ihi - ilo
    else:
        scaled = (
            x.cast(pl.Float64).fill_nan(fill_value).fill_null(fill_value).clip(lo, hi) - lo
        ) * math.ldexp(1.0, p)
        rng = math.floor(width * math.ldexp(1.0, p) + 0.5)
        rounded = (scaled + 0.5).cast(pl.Int64).fill_null(0)
        if purpose == "sum":
            offset = round(math.ldexp(lo, p))
            value = rounded + offset if offset else rounded
            return Encoding(lo, hi, p, 0, value, (offset, offset + rng), exact=False)
        centre = rng // 2
        value = rounded - centre
    bounds_u = (-centre, rng - centre)
    if purpose == "mean":
        return Encoding(lo, hi, p, centre, value, bounds_u, exact=integer)
    top = max(centre, rng - centre) ** 2
    square_offset = top // 2
    return Encoding(
        lo,
        hi,
        p,
        centre,
        value,
        bounds_u,
        exact=integer,
        square=value * value - square_offset,
        square_offset=square_offset,
        square_bounds=(-square_offset, top - square_offset),
    )
