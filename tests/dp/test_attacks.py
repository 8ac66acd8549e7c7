"""Regression tests for privacy attacks found by audit, each reproduced end to end.

Most tests here build the attacker's query, run it through ``validate`` → ``prepare`` →
``execute`` on a small frame, and pin the behaviour that defeats it; the others pin the layers
behind validation (the key-frame check before the join, total decoding).

**Duplicate public group keys.** OpenDP noises each *present* group once and the plan left-joins
the public key frame, so two copies of a present key come back with the same noisy answer,
while the fill of an absent key draws fresh noise per copy: equal copies reveal that the key is
in the data, at any ε. Keys that are equal once cast to the column's type (``12345.0`` and
``12345.4`` on an int column, ``0.0`` and ``-0.0``, ``"1950-03-04"`` and ``"19500304"``) must
therefore be refused before anything touches the data.

**Bounds that break the arithmetic after the mechanism ran.** A release that fails after it
ran on the private rows either leaks through whether it fails or, if the failure is not
charged, gives the attacker free runs. Bounds are limited at validation
(:data:`rds_kernel.spec.MAX_BOUND`, :data:`rds_kernel.spec.MIN_WIDTH`) and decoding is total.

**Absent keys sharing one draw.** OpenDP fills a public key without rows with the same noise
expression for every aggregate of one kind and scale, and polars' common-subexpression
elimination evaluated it once: ``count()`` and ``count(col)`` of an absent key came back equal,
a present key's did not. The plan is now collected with merging off
(:func:`rds_kernel.dp._opendp.collect_once`).
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from datetime import date
from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rds_kernel.dp import execute, prepare
from rds_kernel.errors import SpecError
from rds_kernel.schema import Schema
from rds_kernel.spec import (
    MAX_BOUND,
    MIN_WIDTH,
    Query,
    col,
    count,
    mean,
    quantile,
    sum,
    validate,
    variance,
)
from tests.dp.queries import SCHEMA, frame, release

Q = Query("patients")
P = Query("people")

# A dataset with one rare identifying value per column type, as in the audit.
RARE = Schema.from_dict(
    {
        "name": "people",
        "columns": {
            "zip": {"type": "int"},
            "score": {"type": "float"},
            "born": {"type": "date"},
            "code": {"type": "string"},
        },
    }
)
PEOPLE = pl.LazyFrame(
    {
        "zip": [12345, 1, 2],
        "score": [0.0, 1.5, 2.5],
        "born": [date(1950, 3, 4), date(1990, 1, 1), date(1991, 1, 1)],
        "code": ["a", "b", "c"],
    }
)


def release_people(query: Query, epsilon: float = 0.05) -> Any:
    """validate → prepare → execute ``query`` on the people frame (the attacker's path)."""
    spec = query.spec(epsilon=epsilon)
    prepared = prepare(validate(spec, RARE), RARE)
    return execute(prepared, PEOPLE)


# --------------------------------------------------------------------------- duplicate keys


@pytest.mark.parametrize(
    ("column", "keys", "message"),
    [
        # 12345.4 would be cast to the key 12345: a second copy of a present key
        ("zip", [12345.0, 12345.4], "12345.4 is not a whole number"),
        # -0.0 and 0.0 are one float key (polars groups them together)
        ("score", [0.0, -0.0], "0.0 and -0.0 are the same float key"),
        # date.fromisoformat reads both as 1950-03-04 on Python 3.11
        ("born", ["1950-03-04", "19500304"], "YYYY-MM-DD"),
        ("born", ["1950-03-04", "1950-W09-6"], "YYYY-MM-DD"),
        # ints above 2**53 are one float key
        ("score", [2**53, 2**53 + 1], "are the same float key"),
    ],
)
def test_keys_equal_in_the_column_type_are_refused_before_release(
    column: str, keys: list[Any], message: str
) -> None:
    """Two spellings of one key would come back equal exactly when the key is in the data.

    Today's leak: at ε = 0.05 the copies of a present key were equal in every release, those
    of an absent key never. Each such key list is now a SpecError, before any data is read.
    """
    with pytest.raises(SpecError, match=message):
        release_people(P.group_by(column, keys={column: keys}).agg(count()))


def test_an_int_and_a_float_spelling_of_one_key_is_a_spec_error_not_a_crash() -> None:
    """[12345, 12345.0] used to crash building the key frame (a 500); it is a 4xx that names
    the collision."""
    with pytest.raises(SpecError, match=r"12345 and 12345\.0 are the same int key"):
        release_people(P.group_by("zip", keys={"zip": [12345, 12345.0]}).agg(count()))


def test_exact_keys_still_release_one_row_per_key_in_order() -> None:
    """Integral floats are accepted as int keys; each key comes back exactly once."""
    result = release_people(P.group_by("zip", keys={"zip": [12345.0, 7]}).agg(count()))
    assert [row[0] for row in result.rows] == [12345, 7]
    dates = release_people(P.group_by("born", keys={"born": ["1950-03-04"]}).agg(count()))
    assert [row[0] for row in dates.rows] == [date(1950, 3, 4)]


def test_a_date_filter_literal_must_be_written_yyyy_mm_dd() -> None:
    """ "19500304" passed validation (Python reads it as a date) but compiled to a null (polars
    does not), so the filter meant something else than what was checked; it is refused."""
    for literal in ["19500304", "1950-W09-6", "1950-3-4"]:
        with pytest.raises(SpecError, match="YYYY-MM-DD"):
            release_people(P.filter(col("born") > literal).agg(count()))
        with pytest.raises(SpecError, match="YYYY-MM-DD"):
            release_people(P.filter(col("born").is_in(["1990-01-01", literal])).agg(count()))


def test_a_non_integral_literal_on_an_int_column_is_refused() -> None:
    """An int column holds whole numbers: 12345.4 in a filter or fill_null is refused."""
    with pytest.raises(SpecError, match="not a whole number"):
        release_people(P.filter(col("zip").is_in([12345.4])).agg(count()))
    with pytest.raises(SpecError, match="not a whole number"):
        release_people(P.filter(col("zip").between(0.5, 3)).agg(count()))


def test_the_key_frame_is_checked_for_duplicates_right_before_the_join(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The backstop: whatever validation let through, a key frame with a repeated row (after
    the cast to the plan's types) is refused at prepare time, before any data is touched."""
    spec = P.group_by("zip", keys={"zip": [12345, 7]}).agg(count()).spec(epsilon=1.0)
    valid = validate(spec, RARE)
    forged = replace(valid, keys={"zip": (12345, 12345)})
    with pytest.raises(SpecError, match="repeat"):
        prepare(forged, RARE)
    forged_dates = replace(
        validate(P.group_by("born", keys={"born": ["1950-03-04"]}).agg(count()).spec(1.0), RARE),
        keys={"born": (date(1950, 3, 4), date(1950, 3, 4))},
    )
    with pytest.raises(SpecError, match="repeat"):
        prepare(forged_dates, RARE)


# --------------------------------------------------------------------------- extreme bounds


def test_derived_bounds_that_overflow_are_refused() -> None:
    """x*x over [0, 1e200] has bounds (0, inf): it crashed the encoding (a 500); now the
    aggregate is refused with the range that works and a way out (clip)."""
    schema = Schema.from_dict(
        {"name": "p", "columns": {"x": {"type": "float", "bounds": [0.0, 1e200]}}}
    )
    query = Query("p").with_columns(y=col("x") * col("x")).agg(sum("y"))
    with pytest.raises(SpecError, match=r"'y'.*derived.*finite.*clip") as info:
        validate(query.spec(epsilon=1.0), schema)
    assert f"{MAX_BOUND:g}" in info.value.message


def test_a_width_too_small_to_encode_is_refused() -> None:
    """bounds=[0, 1e-300]: 2**30 / 1e-300 overflows in the encoding, which then encoded every
    value as 0 and failed to prepare with an InternalError (a 500); now a SpecError."""
    with pytest.raises(SpecError, match=r"at least 1e-09 apart.*bounds=\(lo, hi\)"):
        release(Q.agg(sum("income", bounds=(0, 1e-300))), frame(5), epsilon=1.0)


def test_a_mean_with_bounds_beyond_the_limit_is_refused() -> None:
    """mean over [0, 1e308] passed preview but its noise scale in the value's units was inf, so
    the answer could not be written as JSON after the mechanism ran; now refused."""
    with pytest.raises(SpecError, match=r"'mean_income'.*within ±1e\+15"):
        release(Q.agg(mean("income", bounds=(0, 1e308))), frame(5), epsilon=0.5)


def test_a_variance_with_bounds_beyond_the_limit_is_refused() -> None:
    """variance over [0, 1e200] raised OverflowError while decoding, after the mechanism ran on
    the private rows; now refused."""
    with pytest.raises(SpecError, match=r"'variance_income'.*within ±1e\+15"):
        release(Q.agg(variance("income", bounds=(0, 1e200))), frame(5), epsilon=1.0)


@pytest.mark.parametrize(
    "query",
    [
        Q.agg(sum("age", bounds=(0, 1e16))),  # beyond the limit, given
        Q.agg(mean("age", bounds=(-1e16, 0))),
        Q.agg(quantile("income", 0.5, [0.0, 1e300])),  # a candidate beyond the limit
        Q.agg(quantile("age", 0.5, [0, 1e300])),  # crashed making an i64 candidate
        Q.agg(mean("bmi", fill_null=1e300)),  # a fill beyond the limit
        Q.with_columns(y=col("income").clip(0, 1e300)).agg(mean("y")),  # derived by clip
        Q.with_columns(y=-col("income") * 1e12).agg(sum("y")),  # derived by mul/neg
        Q.with_columns(y=col("income") / col("bmi").clip(1e-300, 1)).agg(
            sum("y", fill_null=0)
        ),  # by div
        Q.with_columns(y=abs(col("income") * 1e12)).agg(sum("y")),  # derived by abs
    ],
)
def test_every_kind_of_bound_beyond_the_limit_is_refused(query: Query) -> None:
    """Given, derived (clip, mul, neg, div, abs), candidates and fills are all held to the
    same limit, at validation."""
    with pytest.raises(SpecError, match="1e\\+15"):
        validate(query.spec(epsilon=1.0), SCHEMA)


def test_schema_bounds_beyond_the_limit_ask_for_bounds() -> None:
    """An owner may declare wide bounds; an aggregate that would use them asks for narrower
    ones (the column is still usable with bounds=...)."""
    schema = Schema.from_dict(
        {"name": "p", "columns": {"x": {"type": "int", "bounds": [0, 2**62]}}}
    )
    with pytest.raises(SpecError, match=r"from the schema.*bounds=\(lo, hi\)"):
        validate(Query("p").agg(mean("x")).spec(epsilon=1.0), schema)
    validate(Query("p").agg(mean("x", bounds=(0, 100))).spec(epsilon=1.0), schema)


# The edges of the allowed range, and values around them.
EDGE_BOUNDS = st.sampled_from(
    [
        (-MAX_BOUND, MAX_BOUND),
        (0.0, MAX_BOUND),
        (-MAX_BOUND, -MAX_BOUND + 1.0),
        (MAX_BOUND - 1.0, MAX_BOUND),
        (0.0, MIN_WIDTH),
        (-MIN_WIDTH, 0.0),
        (1.0, 1.0 + 2 * MIN_WIDTH),
        (-1.0, 1.0),
    ]
)
VALUES = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
    [MAX_BOUND, -MAX_BOUND, 0.0, -0.0, MIN_WIDTH, 1e308, -1e308]
)


def edge_quantile(column: str, bounds: tuple[float, float]) -> Any:
    return quantile(column, 0.5, candidates=bounds)


@settings(max_examples=100, deadline=None)
@given(
    bounds=EDGE_BOUNDS,
    op=st.sampled_from([sum, mean, variance, edge_quantile]),
    on_int=st.booleans(),
    grouped=st.booleans(),
    epsilon=st.sampled_from([1e-6, 1e-3, 1.0, 1000.0]),
    values=st.lists(VALUES, min_size=0, max_size=12),
)
def test_releases_at_the_edges_of_the_allowed_bounds_never_fail(
    bounds: tuple[float, float],
    op: Any,
    on_int: bool,
    grouped: bool,
    epsilon: float,
    values: list[float],
) -> None:
    """After the mechanism runs, nothing may fail: every validated query at the edges of the
    allowed bounds releases finite numbers (and JSON) on any small frame, whatever its noise.
    """
    column, lo, hi = "income", bounds[0], bounds[1]
    if on_int:
        column = "age"
        lo, hi = float(math.floor(lo)), float(math.ceil(hi))
        if hi - lo < 1:
            hi = lo + 1
    query = Q.group_by("sex") if grouped else Q
    p, result = release(
        query.agg(count(), op(column, bounds=(lo, hi))),
        frame(
            len(values),
            income=pl.Series(values, dtype=pl.Float64),
            age=pl.Series(
                [int(max(min(v, 2**62), -(2**62))) if math.isfinite(v) else 0 for v in values],
                dtype=pl.Int64,
            ),
        ),
        epsilon=epsilon,
    )
    json.dumps({"summary": p.summary, "result": result.to_dict()}, allow_nan=False)
    for row in result.rows:
        value = row[-1]
        assert isinstance(value, int | float) and math.isfinite(value)
        if op in (mean, edge_quantile):
            assert lo <= value <= hi
        elif op is variance:
            assert 0 <= value <= ((hi - lo) / 2) ** 2
    for acc in result.accuracy.values():
        assert acc is None or math.isfinite(acc)


# --------------------------------------------------------------------------- total decoding

I64 = 2**63


@pytest.mark.parametrize("op", [sum, mean, variance])
def test_decoding_is_total_for_any_noisy_output(op: Any) -> None:
    """Whatever OpenDP returns (i64 extremes, a missing value), decoding gives a number or
    None and never raises: it runs after the mechanism, so a failure would depend on the data.
    """
    from rds_kernel.dp.engine import _read

    p = prepare(
        validate(Q.agg(op("income", bounds=(-MAX_BOUND, MAX_BOUND))).spec(epsilon=1.0), SCHEMA),
        SCHEMA,
    )
    out = p.compiled.outputs[0]
    extremes: list[Any] = [None, I64 - 1, -I64, 0, 1, -1]
    rows = [(a, b, n) for a in extremes for b in extremes for n in extremes]
    parts = [[r[i] for r in rows] for i in range(len(out.parts))]
    values, accs = _read(out, parts, p.noise)
    assert len(values) == len(accs) == len(rows)
    for v in [*values, *accs]:
        assert v is None or math.isfinite(v)
    assert values[0] is None  # a missing part is an unknown value, not a crash


def test_the_summary_is_json_even_for_an_absurd_noise_scale() -> None:
    """The preview (also stored with each release) holds finite numbers or None, never inf."""
    from rds_kernel.dp.accuracy import Noise, summarize

    p = prepare(validate(Q.agg(mean("income"), sum("income")).spec(epsilon=1.0), SCHEMA), SCHEMA)
    noise = {name: Noise("Integer Laplace", 1e308) for name in p.noise}
    rows = summarize(p.compiled, noise, None, 10)
    json.dumps(rows, allow_nan=False)


def test_an_absent_keys_aggregates_draw_independent_noise() -> None:
    """count() and count(age) (and two sums of one scale) of a key with no rows were equal in
    20 of 20 releases at ε = 0.02 — an absent key told apart from a present one at any ε. Now
    they are independent draws. Tolerance: at ε = 0.002 split over 4 aggregates each draw is
    a discrete Laplace of scale ~2,000, so two independent draws are equal with probability
    below 1/2,000; 5 or more equal pairs in 20 releases has probability below 1e-12."""
    data = frame(300)  # every row is "F": "M" and "X" are absent
    query = Q.group_by("sex").agg(
        count(),
        count("age"),
        sum("age", bounds=(0, 100), alias="s1"),
        sum("age", bounds=(0, 100), alias="s2"),  # the very same expression but for its scale
    )
    p = prepare(validate(query.spec(epsilon=0.002), SCHEMA), SCHEMA)
    equal_counts = equal_sums = 0
    for _ in range(20):
        result = execute(p, data)
        rows = {row[0]: row[1:] for row in result.rows}
        for key in ("M", "X"):
            n1, n2, s1, s2 = rows[key]
            equal_counts += n1 == n2
            equal_sums += s1 == s2
    assert equal_counts <= 4 and equal_sums <= 4, (equal_counts, equal_sums)
