"""Noise calibration: the analytic scale spends the requested loss, never more, and agrees with
OpenDP's own binary searches (``Context.resolve``, ``binary_search_param``, thresholds)."""

from __future__ import annotations

import math
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rds_kernel.dp import PreparedQuery
from rds_kernel.dp._opendp import dp
from rds_kernel.dp.calibrate import calibrate
from rds_kernel.dp.space import input_space
from rds_kernel.errors import InternalError, SpecError
from rds_kernel.schema import Schema
from rds_kernel.spec import Query, col, count, mean, median, quantile, sum, variance
from tests.dp.queries import SCHEMA, prepared

Q = Query("patients")
SHAPES = {
    "count": Q.agg(count()),
    "count+mean float": Q.agg(count(), mean("income")),
    "sum float": Q.agg(sum("income")),
    "sum int": Q.agg(sum("age")),
    "variance": Q.agg(variance("bmi", fill_null=25.0)),
    "median": Q.agg(median("age")),
    "quantile float": Q.agg(quantile("income", 0.9, candidates=[0, 1e4, 5e4, 1e5])),
    "group-by public": Q.filter(col("age") >= 50)
    .group_by("sex")
    .agg(count(), mean("bmi", fill_null=25.0)),
    "everything": Q.group_by("smoker").agg(
        count(),
        count("bmi"),
        sum("income"),
        mean("age"),
        variance("income"),
        median("bmi", fill_null=20.0),
    ),
}


def builder(p: PreparedQuery, schema: Schema = SCHEMA) -> Any:
    """The measurement of ``p``'s plan at any scale and threshold, as ``prepare`` builds it."""
    space = input_space(schema)
    measure = dp.max_divergence() if p.query.delta == 0 else dp.approximate(dp.max_divergence())

    def build(scale: float, threshold: int | None = None) -> Any:
        return dp.m.make_private_lazyframe(
            space.domain,
            space.metric,
            measure,
            lazyframe=p.compiled.plan,
            global_scale=scale,
            threshold=threshold,
        )

    return build


def test_count_at_epsilon_one_has_the_scale_opendp_context_resolves() -> None:
    """A count at ε=1 is Laplace noise of scale 1, as OpenDP's Context finds by binary search."""
    ours = prepared(Q.agg(count()), epsilon=1.0)
    context = dp.Context.compositor(
        data=pl.LazyFrame({"age": [30, 40, 50]}),
        privacy_unit=dp.unit_of(contributions=1),
        privacy_loss=dp.loss_of(epsilon=1.0),
        split_evenly_over=1,
    )
    theirs = context.query().select(dp.len(signed=True)).summarize()  # type: ignore[union-attr]
    assert ours.summary[0]["scale"] == pytest.approx(1.0, rel=1e-12)
    assert ours.summary[0]["scale"] == pytest.approx(theirs["scale"][0], rel=1e-6)
    assert ours.summary[0]["mechanism"] == theirs["distribution"][0] == "Integer Laplace"
    assert ours.cost == (1.0, 0.0)


def test_int_sum_matches_context_resolve() -> None:
    """A bounded integer sum at ε=0.5 gets the same noise as OpenDP's Context gives it."""
    ours = prepared(Q.agg(sum("age")), epsilon=0.5)
    context = dp.Context.compositor(
        data=pl.LazyFrame({"age": [30, 40, 50]}),
        privacy_unit=dp.unit_of(contributions=1),
        privacy_loss=dp.loss_of(epsilon=0.5),
        split_evenly_over=1,
        margins=[dp.polars.Margin(max_length=1000)],
    )
    query = context.query().select(pl.col("age").fill_null(0).dp.sum((0, 120)))  # type: ignore[union-attr]
    theirs = query.summarize()
    assert ours.summary[0]["scale"] == pytest.approx(240.0, rel=1e-12)
    assert ours.summary[0]["scale"] == pytest.approx(theirs["scale"][0], rel=1e-6)


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("epsilon", [0.05, 1.0, 7.3])
def test_analytic_scale_equals_opendp_binary_search(shape: str, epsilon: float) -> None:
    """Solving ε ∝ 1/scale gives the scale OpenDP's binary search converges to (1e-6 rel.)."""
    p = prepared(SHAPES[shape], epsilon=epsilon)
    build = builder(p)
    # bracketed within a factor 4, so the search bisects on its own terms but needs few builds
    bounds = (p.calibration.scale / 4, p.calibration.scale * 4)
    searched = dp.binary_search_param(
        lambda s: build(s), d_in=1, d_out=epsilon, bounds=bounds, T=float
    )
    assert p.calibration.scale == pytest.approx(searched, rel=1e-6)
    # and ours is the smallest passing scale: a hair less noise would overspend
    assert build(p.calibration.scale * (1 - 1e-9)).map(1) > epsilon


@settings(
    max_examples=80, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    shape=st.sampled_from(sorted(SHAPES)),
    epsilon=st.floats(min_value=1e-3, max_value=1000.0, allow_nan=False, allow_infinity=False),
)
def test_cost_never_exceeds_the_request_and_spends_it(shape: str, epsilon: float) -> None:
    """For any ε the verified cost is ≤ the request (float sums included) and within 1e-9 of it."""
    p = prepared(SHAPES[shape], epsilon=epsilon)
    eps, delta = p.cost
    assert eps <= epsilon
    assert eps >= epsilon * (1 - 1e-9)
    assert delta == 0.0
    assert p.measurement.map(1) == eps  # the cost is OpenDP's own map, not our arithmetic


PEOPLE = Schema.from_dict(
    {
        "name": "patients",
        "identifier": "pid",
        "max_contributions": 3,
        "columns": {
            "pid": {"type": "int"},
            "age": {"type": "int", "bounds": [0, 120]},
            "sex": {"type": "category", "categories": ["F", "M", "X"]},
        },
    }
)


@settings(max_examples=30, derandomize=True, deadline=None)
@given(
    epsilon=st.floats(min_value=0.01, max_value=20.0),
    log_delta=st.floats(min_value=-14.0, max_value=-2.0),
    schema=st.sampled_from([SCHEMA, PEOPLE]),
)
def test_threshold_is_the_smallest_opendp_accepts(
    epsilon: float, log_delta: float, schema: Schema
) -> None:
    """Unknown keys: the threshold is the least one meeting δ, as OpenDP's integer search finds,
    for row-level privacy and for people contributing up to 3 rows (OpenDP then refuses
    thresholds up to 3)."""
    delta = 10.0**log_delta
    query = Q.group_by("sex", keys="unknown").agg(count(), mean("age"))
    p = prepared(query, epsilon=epsilon, delta=delta, schema=schema)
    eps, spent_delta = p.cost
    assert eps <= epsilon and spent_delta <= delta
    t = p.threshold
    assert t is not None
    build = builder(p, schema)
    scale = p.calibration.scale

    def ok(threshold: int) -> bool:
        try:
            return bool(build(scale, threshold).map(1)[1] <= delta)
        except dp.OpenDPException:  # "threshold must be greater than ..."
            return False

    assert dp.binary_search(ok, bounds=(1, 2**31 - 1), T=int) == t


def test_user_level_privacy_scales_noise_by_the_contribution_bound() -> None:
    """With an identifier and max_contributions=3, a count needs 3x the noise of a row count."""
    schema = Schema.from_dict(
        {
            "name": "patients",
            "identifier": "pid",
            "max_contributions": 3,
            "columns": {"pid": {"type": "int"}, "age": {"type": "int", "bounds": [0, 120]}},
        }
    )
    p = prepared(Q.agg(count()), epsilon=1.0, schema=schema)
    assert p.summary[0]["scale"] == pytest.approx(3.0, rel=1e-12)
    assert p.cost == (1.0, 0.0)


def test_delta_below_what_opendp_can_reach_is_a_spec_error() -> None:
    """δ smaller than OpenDP's floor (about 1e-16) cannot be met by any threshold."""
    with pytest.raises(SpecError, match="delta=1e-20 is too small"):
        prepared(Q.group_by("sex", keys="unknown").agg(count()), epsilon=1.0, delta=1e-20)


class _Fake:
    """A measurement whose loss is ``c / scale`` times a rounding factor."""

    def __init__(self, scale: float, factor: float) -> None:
        self.scale, self.factor = scale, factor

    def map(self, d_in: int) -> float:
        return math.inf if self.scale == 0 else 3.0 / self.scale * self.factor


def test_calibration_nudges_the_scale_up_when_the_map_rounds_up() -> None:
    """If OpenDP's map lands just above 1/scale, the scale is nudged until the cost fits."""
    calls: list[float] = []

    def build(scale: float, threshold: int | None) -> _Fake:
        calls.append(scale)
        return _Fake(scale, 1.0 if scale == 1.0 else 1 + 1e-12)

    c = calibrate(build, 1, 0.7, 0.0, thresholded=False)
    assert c.cost[0] <= 0.7
    assert len(calls) <= 4


def test_a_query_opendp_calls_free_is_refused_not_released_without_noise() -> None:
    """A zero loss at the reference scale means something is off: fail, never scale 0."""

    def build(scale: float, threshold: int | None) -> _Fake:
        return _Fake(scale, 0.0)

    with pytest.raises(InternalError, match="no privacy loss"):
        calibrate(build, 1, 0.5, 0.0, thresholded=False)


def test_calibration_fails_loudly_when_the_map_is_not_inverse_in_the_scale() -> None:
    """A map that ignores the scale can never be calibrated: InternalError, not an overspend."""

    def build(scale: float, threshold: int | None) -> _Fake:
        return _Fake(1.0, 1.0)

    with pytest.raises(InternalError, match="could not calibrate"):
        calibrate(build, 1, 0.5, 0.0, thresholded=False)
