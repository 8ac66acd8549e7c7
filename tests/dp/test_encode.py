"""Fixed-point encoding of sums: exact for integers, within its resolution for floats, and
always inside OpenDP's overflow limit for the largest frame the node can scan."""

from __future__ import annotations

import math

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rds_kernel.dp._opendp import dp, dp_sum
from rds_kernel.dp.encode import encode
from rds_kernel.dp.space import MAX_LENGTH

LIMIT = 2**63 - 1


def exact(enc_expr: pl.Expr, values: list[float] | list[int], dtype: pl.DataType) -> list[int]:
    """The encoded integers, computed by plain polars (no noise) on ``values``."""
    return pl.DataFrame({"x": pl.Series(values, dtype=dtype)}).select(enc_expr)["x"].to_list()


@pytest.mark.parametrize("purpose", ["sum", "mean", "variance"])
def test_integer_columns_with_integer_bounds_are_not_rounded(purpose: str) -> None:
    """An int column in [18, 95] is encoded with p = 0: sums, means, variances are exact."""
    ages = [18, 20, 35, 50, 95, 120, -3]
    enc = encode(pl.col("x"), "int", (18, 95), None, purpose)  # type: ignore[arg-type]
    assert enc.p == 0 and enc.exact and enc.resolution == 0.0
    clamped = [min(max(a, 18), 95) for a in ages]
    u = exact(enc.value, ages, pl.Int64())
    n = len(ages)
    if purpose == "sum":
        assert enc.sum(sum(u)) == sum(clamped)
        return
    true_mean = sum(clamped) / n
    assert enc.mean(sum(u) / n) == pytest.approx(true_mean, abs=1e-12)
    if purpose == "variance":
        assert enc.square is not None
        sq = exact(enc.square, ages, pl.Int64())
        true_var = sum((c - true_mean) ** 2 for c in clamped) / n
        assert enc.variance(sum(u) / n, sum(sq) / n) == pytest.approx(true_var, rel=1e-12)


@settings(max_examples=60, derandomize=True, deadline=None)
@given(
    lo=st.floats(min_value=-1e12, max_value=1e12),
    width=st.floats(min_value=1e-6, max_value=1e12),
    purpose=st.sampled_from(["sum", "mean", "variance"]),
    data=st.lists(st.floats(min_value=-1e13, max_value=1e13), min_size=1, max_size=30),
)
def test_float_encoding_is_within_its_resolution_and_never_overflows(
    lo: float, width: float, purpose: str, data: list[float]
) -> None:
    """Decoding the exact encoded sums gives the clamped statistic within the rounding bound,
    and ``MAX_LENGTH * max|u|`` fits in i64, so OpenDP accepts the sum (no overflow refusal)."""
    hi = lo + width
    if not hi > lo:
        return
    enc = encode(pl.col("x"), "float", (lo, hi), None, purpose)  # type: ignore[arg-type]
    assert MAX_LENGTH * max(abs(b) for b in enc.bounds) <= LIMIT
    if enc.square_bounds is not None:
        assert MAX_LENGTH * max(abs(b) for b in enc.square_bounds) <= LIMIT
    clamped = [min(max(v, lo), hi) for v in data]
    u = exact(enc.value, data, pl.Float64())
    n = len(data)
    # half a step per value from rounding, plus float error in (x - lo) * 2**p
    tol = enc.resolution * (1 + 1e-9) + 1e-12 * max(abs(lo), abs(hi))
    if purpose == "sum":
        assert enc.sum(sum(u)) == pytest.approx(sum(clamped), abs=n * tol + 1e-9)
    elif purpose == "mean":
        assert enc.mean(sum(u) / n) == pytest.approx(sum(clamped) / n, abs=tol + 1e-9)
    domain = dp.with_margin(
        dp.lazyframe_domain([dp.series_domain("x", dp.option_domain(dp.atom_domain(T="f64")))]),
        dp.polars.Margin(by=[], max_length=MAX_LENGTH),
    )
    plan = pl.LazyFrame(schema={"x": pl.Float64}).select(dp_sum(enc.value, enc.bounds))
    m = dp.m.make_private_lazyframe(
        domain, dp.symmetric_distance(), dp.max_divergence(), lazyframe=plan, global_scale=1.0
    )
    assert m.map(1) == 1.0


def test_float_noise_does_not_grow_with_the_row_bound() -> None:
    """A [0, 1] mean costs noise of scale 0.5 per unit ε, as in exact arithmetic, even though
    max_length is 2**32 - 1 (a float sum would need a scale of about 8,000 there)."""
    enc = encode(pl.col("x"), "float", (0.0, 1.0), None, "mean")
    sensitivity = max(abs(b) for b in enc.bounds) * enc.unit
    assert sensitivity == pytest.approx(0.5, rel=1e-6)
    assert enc.resolution < 1e-8


def test_bool_columns_sum_as_zero_and_one() -> None:
    """A bool column is cast to 0/1 and summed exactly; nulls take the fill value."""
    enc = encode(pl.col("x"), "bool", (0, 1), 1, "sum")
    u = exact(enc.value, [True, False, None, True], pl.Boolean())  # type: ignore[list-item]
    assert sum(u) == 3 and enc.exact


def test_largest_power_of_two_is_the_floor_of_the_log() -> None:
    """p is the largest integer with span * 2**p within the limit, for spans around powers of 2."""
    from rds_kernel.dp.encode import _largest_p

    for span in [1.0, 3.0, 0.75, 2.0**-30, 1e12, 123456.789]:
        p = _largest_p(span, 2**30)
        assert span * 2.0**p <= 2**30 < span * 2.0 ** (p + 1)
        assert p == math.floor(math.log2(2**30 / span))


@pytest.mark.parametrize("purpose", ["mean", "variance"])
@pytest.mark.parametrize("width", [1e-9, 1e-5, 1e-3])
def test_narrow_bounds_keep_their_resolution(purpose: str, width: float) -> None:
    """The rounding allowance was added to the span in the data's units: a variance over
    bounds 1e-5 apart got steps of 2**-14, every value encoded to 0, and it always read 0."""
    lo, hi = 3.0, 3.0 + width
    enc = encode(pl.col("x"), "float", (lo, hi), None, purpose)  # type: ignore[arg-type]
    assert enc.bounds[1] - enc.bounds[0] >= 2**14  # at least 16k steps across the bounds
    assert enc.resolution <= width / 2**14
    data = [lo, hi, lo, hi]
    u = exact(enc.value, data, pl.Float64())
    mean = sum(data) / 4
    assert enc.mean(sum(u) / 4) == pytest.approx(mean, abs=2 * enc.resolution)
    if purpose == "variance":
        assert enc.square is not None
        sq = exact(enc.square, data, pl.Float64())
        assert enc.variance(sum(u) / 4, sum(sq) / 4) == pytest.approx((width / 2) ** 2, rel=1e-3)
