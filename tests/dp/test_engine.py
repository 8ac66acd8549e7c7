"""Releases end to end: prepare on the schema, execute on data, decode, JSON.

OpenDP's noise cannot be seeded, so every numeric assertion is either exact by construction
(clamping, candidates, key sets) or has a tolerance of at least 20 noise scales: Laplace noise
exceeds ``k`` scales with probability ``exp(-k)``, about 2e-9 at ``k = 20`` (≈14 standard
deviations), so these tests do not flake.
"""

from __future__ import annotations

import json
import math
from typing import Any

import polars as pl
import pytest

from rds_kernel.dp import execute, prepare
from rds_kernel.dp._opendp import OpenDPException
from rds_kernel.dp.engine import _spec_error
from rds_kernel.errors import InternalError, SpecError
from rds_kernel.schema import Schema
from rds_kernel.spec import (
    Query,
    col,
    count,
    lit,
    mean,
    median,
    quantile,
    sum,
    validate,
    variance,
)
from tests.dp.queries import SCHEMA, column, frame, prepared, release

Q = Query("patients")
BIG = 1000.0  # the largest epsilon a spec allows; makes the noise negligible (see each test)


def test_mean_and_sum_clamp_values_into_the_declared_bounds() -> None:
    """Every value is 1000 but the bounds are [0, 10]: the mean is 10 and the sum 10 per row.

    At ε=1000 the sum noise has scale ≈ 0.01 (bound width / share of ε), so on 200 rows the
    mean moves by ~5e-5 per scale; 1e-3 is 20 scales.
    """
    data = frame(200, income=[1000.0] * 200, age=[1000] * 200)
    query = Q.agg(
        mean("income", bounds=(0, 10)), mean("age", bounds=(0, 10)), sum("income", bounds=(0, 10))
    )
    _, result = release(query, data, epsilon=BIG)
    assert column(result, "mean_income")[0] == pytest.approx(10.0, abs=1e-3)
    assert column(result, "mean_age")[0] == pytest.approx(10.0, abs=1e-3)
    assert column(result, "sum_income")[0] == pytest.approx(2000.0, abs=0.5)


def test_nan_and_infinite_floats_are_handled_as_opendp_requires() -> None:
    """NaN counts as the lower bound (the column is not nullable); ±inf is clamped."""
    income = [math.nan] * 50 + [math.inf] * 50 + [-math.inf] * 50 + [5.0] * 50
    _, result = release(Q.agg(sum("income", bounds=(0, 10))), frame(200, income=income), BIG)
    assert column(result, "sum_income")[0] == pytest.approx(50 * 10 + 50 * 5, abs=0.5)
    json.dumps(result.to_dict(), allow_nan=False)


def test_public_keys_release_every_key_in_order_including_absent_ones() -> None:
    """All rows are "F"; grouping by sex still returns F, M, X (the public categories).

    Counts of the absent keys are noise around 0; at ε=1000 the count noise has scale 1e-3,
    so |noise| >= 1 has probability ~e^-1000.
    """
    _, result = release(Q.group_by("sex").agg(count()), frame(300), epsilon=BIG)
    assert column(result, "sex") == ["F", "M", "X"]
    assert column(result, "count") == [300, 0, 0]


def test_explicit_keys_keep_their_order_and_combine_as_a_cartesian_product() -> None:
    """keys={col: [...]} is the public key set, in the scientist's order; several columns cross."""
    query = Q.group_by("smoker", "sex", keys={"sex": ["X", "F"]}).agg(count())
    _, result = release(query, frame(10), epsilon=BIG)
    assert [r[:2] for r in result.rows] == [[False, "X"], [False, "F"], [True, "X"], [True, "F"]]
    assert column(result, "count") == [0, 10, 0, 0]


def test_unknown_keys_suppress_a_tiny_group_and_report_the_threshold() -> None:
    """With unknown keys only groups above the noisy threshold are released.

    Two groups of 1000 rows and one of a single row, ε=1, δ=1e-9: the single row passes the
    threshold with probability ≤ δ; a big group fails with probability ~e^-(1000-t).
    """
    sex = ["F"] * 1000 + ["M"] * 1000 + ["X"]
    query = Q.group_by("sex", keys="unknown").agg(count(), mean("age"))
    p, result = release(query, frame(2001, sex=sex), epsilon=1.0, delta=1e-9)
    assert column(result, "sex") == ["F", "M"]
    assert p.threshold is not None and 2 < p.threshold < 200
    assert result.threshold == p.threshold
    assert all(row["threshold"] == p.threshold for row in p.summary)
    assert p.cost[1] <= 1e-9


def test_quantile_returns_one_of_the_candidates() -> None:
    """The exponential mechanism picks a public candidate; at large ε the right one."""
    ages = list(range(101)) * 10
    candidates = [0, 25, 50, 75, 100]
    query = Q.agg(quantile("age", 0.5, candidates=candidates), median("bmi", fill_null=25.0))
    _, noisy = release(query, frame(1010, age=ages), epsilon=1.0)
    assert column(noisy, "median_age")[0] in candidates
    _, sharp = release(query, frame(1010, age=ages), epsilon=BIG)
    assert column(sharp, "median_age")[0] == 50
    assert noisy.accuracy["median_age"] is None


def test_variance_is_near_the_truth_at_large_epsilon() -> None:
    """Population variance of 0..120 (each 100 times) is (121²-1)/12 = 1220.

    The sum of squares has noise scale ≈ 5.4 at ε=1000/3, i.e. 4.5e-4 on the mean square over
    12,100 rows; 0.5 is over a thousand scales. The mean of squares of ints is exact (p = 0).
    """
    ages = list(range(121)) * 100
    _, result = release(Q.agg(variance("age")), frame(12100, age=ages), epsilon=BIG)
    assert column(result, "variance_age")[0] == pytest.approx((121**2 - 1) / 12, abs=0.5)


def test_statistics_at_epsilon_one_are_within_their_noise() -> None:
    """At ε=1 on 12,100 rows, count and mean land within 25 noise scales of the truth.

    count+mean spend ε/2 each on the row count (scale 2) and the centred sum of ages (scale
    120): the mean is off by at most (25·120 + 60·25·2) / (12100 - 50) ≈ 0.5.
    """
    ages = list(range(121)) * 100
    p, result = release(Q.agg(count(), mean("age")), frame(12100, age=ages), epsilon=1.0)
    assert [row["scale"] for row in p.summary] == pytest.approx([2.0, 120.0])
    assert column(result, "count")[0] == pytest.approx(12100, abs=25 * 2.0)
    assert column(result, "mean_age")[0] == pytest.approx(60.0, abs=0.5)
    # the reported ± is the 95% bound: about 3x the scale over n, far below the tolerance
    acc = result.accuracy["mean_age"]
    assert acc is not None and 0.01 < acc < 0.1


def test_count_of_a_column_counts_non_null_values() -> None:
    """count("bmi") counts non-null values; count() counts rows (noise < 1 at ε=1000)."""
    bmi = [None] * 30 + [22.0] * 70
    _, result = release(Q.agg(count(), count("bmi")), frame(100, bmi=bmi), epsilon=BIG)
    assert result.rows == [[100, 70]]


def test_a_mean_of_no_rows_stays_inside_its_bounds() -> None:
    """An empty filter leaves a noisy count near 0: the mean is clamped, its ± at most the width.

    The ± is exactly the width unless the noisy count happens to land above its own 97.5 %
    accuracy (about 2.5 % of runs), so only the bound is asserted: the test must not flake.
    """
    query = Q.filter(col("age") > 200).agg(mean("bmi", fill_null=20.0))
    _, result = release(query, frame(50), epsilon=0.5)
    value = column(result, "mean_bmi")[0]
    assert 10.0 <= value <= 70.0
    accuracy = result.accuracy["mean_bmi"]
    assert accuracy is not None
    assert 0.0 < accuracy <= 60.0


def test_user_level_privacy_truncates_each_person_to_max_contributions() -> None:
    """One person with 100 rows counts at most twice when max_contributions = 2."""
    schema = Schema.from_dict(
        {
            "name": "patients",
            "identifier": "pid",
            "max_contributions": 2,
            "columns": {"pid": {"type": "int"}, "age": {"type": "int", "bounds": [0, 120]}},
        }
    )
    pid = [0] * 100 + list(range(1, 51))
    data = pl.LazyFrame({"pid": pid, "age": [30] * 150})
    p, result = release(Q.agg(count()), data, epsilon=BIG, schema=schema)
    assert result.rows == [[52]]
    assert p.summary[0]["scale"] == pytest.approx(2 / BIG)


def test_release_to_dict_is_json_without_nan_and_with_iso_dates() -> None:
    """The wire form has columns, rows, ± per aggregate, the cost and no NaN."""
    query = Q.group_by("seen", keys={"seen": ["2020-01-01", "2021-06-30"]}).agg(
        count(), mean("income")
    )
    p, result = release(query, frame(20), epsilon=1.0)
    out = result.to_dict()
    text = json.dumps(out, allow_nan=False)
    assert json.loads(text)["columns"] == ["seen", "count", "mean_income"]
    assert [r[0] for r in out["rows"]] == ["2020-01-01", "2021-06-30"]
    assert (out["epsilon"], out["delta"]) == p.cost
    assert set(out["accuracy"]) == {"count", "mean_income"}


def test_prepare_is_a_pure_function_of_spec_and_schema() -> None:
    """Two prepares of one spec agree on cost, summary and threshold (safe to cache)."""
    query = Q.group_by("sex", keys="unknown").agg(count(), variance("income"))
    a, b = prepared(query, 0.7, 1e-7), prepared(query, 0.7, 1e-7)
    assert (a.cost, a.summary, a.threshold) == (b.cost, b.summary, b.threshold)


def test_summary_describes_each_aggregate() -> None:
    """One preview row per aggregate with mechanism, scale (own units) and ± at 95%."""
    p = prepared(Q.agg(count(), sum("age"), mean("income"), median("age")), epsilon=1.0)
    rows = {r["aggregate"]: r for r in p.summary}
    assert set(rows) == {"count", "sum_age", "mean_income", "median_age"}
    assert rows["count"]["mechanism"] == "Integer Laplace"
    # five shares of ε: n, Σage, Σinc, median×2 (each component 1 + i·2**-20 apart, see compile)
    assert rows["count"]["scale"] == pytest.approx(5.0, rel=1e-5)
    assert rows["sum_age"]["scale"] == pytest.approx(120 * 5.0)
    assert rows["count"]["accuracy"] == pytest.approx(3 * 5.0, rel=0.1)
    assert rows["mean_income"]["accuracy"] is None  # needs the private row count
    assert "n" in rows["mean_income"]["note"]
    assert rows["median_age"]["accuracy"] is None


def test_mean_preview_uses_a_public_row_count() -> None:
    """With public_row_count and no filter, the mean's ± is known before release."""
    schema = Schema.from_dict(
        {
            "name": "patients",
            "public_row_count": 10_000,
            "columns": {"age": {"type": "int", "bounds": [0, 120]}},
        }
    )
    p = prepared(Q.agg(mean("age")), epsilon=1.0, schema=schema)
    acc = p.summary[0]["accuracy"]
    assert acc is not None and 0 < acc < 1


def test_an_operation_opendp_cannot_privatize_is_a_spec_error() -> None:
    """OpenDP refuses a date fill_null inside a filter; the scientist gets a SpecError."""
    query = Q.filter(col("seen").fill_null("2020-01-01") > "2021-01-01").agg(count())
    with pytest.raises(SpecError, match="OpenDP cannot make this"):
        prepared(query, epsilon=1.0)


def test_opendp_threshold_refusal_is_translated() -> None:
    """OpenDP's "threshold must be greater than 1" becomes advice to raise delta."""
    err = _spec_error(OpenDPException("FailedMap", "threshold must be greater than 1"))
    assert "larger delta, e.g. delta=1e-6" in err.message


def test_a_failure_on_private_data_does_not_quote_it() -> None:
    """A file that breaks its schema fails the release without echoing any value."""
    p = prepared(Q.agg(count()), epsilon=1.0)
    data = frame(3).with_columns(pl.lit("SECRET-VALUE-42").alias("age"))
    with pytest.raises(InternalError) as info:
        execute(p, data)
    assert "SECRET" not in str(info.value) and info.value.__cause__ is None


def test_prepare_and_execute_use_the_validated_query_only() -> None:
    """The same prepared query runs on any data frame of the schema; each run is fresh noise."""
    schema = SCHEMA
    p = prepare(validate(Q.agg(count()).spec(epsilon=1.0), schema), schema)
    first = execute(p, frame(1000))
    second = execute(p, frame(10))
    assert first.rows[0][0] == pytest.approx(1000, abs=20)
    assert second.rows[0][0] == pytest.approx(10, abs=20)


def test_derived_columns_have_the_type_validation_inferred() -> None:
    """A bool in arithmetic is an int and an int clipped to float bounds is a float, in the plan
    as in validation: grouping on such a column used to prepare, then fail on the private data
    (polars types ``bool + 1`` as "unknown" in a lazy plan), and float keys of a clipped int
    column were cast to ints (0.5 and 0.7 both became 0)."""
    query = (
        Q.with_columns(sick=col("smoker") + 1, neg=-col("smoker"), c=col("age").clip(0.5, 10.5))
        .group_by("sick", "neg", "c", keys={"sick": [1, 2], "neg": [0, -1], "c": [0.5, 10.5]})
        .agg(count())
    )
    _, result = release(query, frame(10, smoker=[True] * 10), epsilon=BIG)
    assert [r[:3] for r in result.rows] == [
        [1, 0, 0.5],
        [1, 0, 10.5],
        [1, -1, 0.5],
        [1, -1, 10.5],
        [2, 0, 0.5],
        [2, 0, 10.5],
        [2, -1, 0.5],
        [2, -1, 10.5],
    ]
    assert column(result, "count") == [0, 0, 0, 0, 0, 0, 0, 10]


def test_opendp_refusals_do_not_quote_rust_internals() -> None:
    """abs() of a literal reached the scientist as 'ComputeError(ErrString("could not extract
    number from any-value ..."))': the message now carries OpenDP's words without the wrapper,
    and says where to look."""
    schema = Schema.from_dict({"name": "p", "columns": {"age": {"type": "int", "bounds": [0, 9]}}})
    query = Query("p").with_columns(d=abs(lit(-1))).agg(count())
    with pytest.raises(SpecError) as refused:
        prepare(validate(query.spec(epsilon=1.0), schema), schema)
    message = refused.value.message
    assert "ErrString" not in message and "Error(" not in message
    assert "could not extract number" in message and "derived columns" in message


def test_a_key_column_called_like_the_decoders_own_is_decoded() -> None:
    """The decoder ordered rows by a column named __order: a derived group-by column of that
    name collided with it, after the mechanism had run (a charged 500)."""
    schema = Schema.from_dict(
        {"name": "p", "columns": {"sex": {"type": "category", "categories": ["F", "M"]}}}
    )
    query = Query("p").with_columns(__order=col("sex")).group_by("__order").agg(count())
    p = prepare(validate(query.spec(epsilon=BIG), schema), schema)
    result = execute(p, pl.DataFrame({"sex": ["F"] * 10}).lazy())
    assert result.columns == ["__order", "count"]
    assert [row[0] for row in result.rows] == ["F", "M"]


def test_a_rust_panic_while_running_is_an_internal_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """polars' PanicException is a BaseException: it escaped the release path's handlers, and
    with them the charge for a release that had run."""
    schema = Schema.from_dict({"name": "p", "columns": {"age": {"type": "int", "bounds": [0, 9]}}})
    p = prepare(validate(Query("p").agg(count()).spec(epsilon=1.0), schema), schema)

    class Panicking:
        def collect(self) -> Any:
            raise pl.exceptions.PanicException("a data-dependent panic")

    monkeypatch.setattr(type(p), "measurement", property(lambda self: lambda _d: Panicking()))
    with pytest.raises(InternalError):
        execute(p, pl.DataFrame({"age": [1]}).lazy())
