"""Sample-and-aggregate: a DP release of any function's output (Nissim, Raskhodnikova, Smith 2007).

The private rows are split into ``k`` disjoint random partitions and the scientist's function
runs once on each. Each run's output (``d`` numbers) is replaced by the declared ``default`` if
the run failed, then clamped to the declared bounds. The release is the mean of the ``k``
clamped outputs plus noise.

Why it is private whatever the function does: adding or removing one row (or, with an
identifier column, one person's rows, which all go to the same partition) changes the input of
exactly one partition, so it changes at most one of the ``k`` clamped outputs. Over the ``k``
outputs that is one *change* (``dp.unit_of(changes=1)``); the sum of output ``j`` then moves by
at most ``upper_j - lower_j``, and its mean by ``(upper_j - lower_j) / k``.

The measurement is OpenDP's, built on a ``k``-row frame with one float column per output: each
column is summed with ``dp.sum(bounds)`` and all take their noise from one ``global_scale``
``g``, so output ``j`` gets Laplace noise of scale ``g * (upper_j - lower_j)`` (OpenDP adds its
allowance for float rounding to the sensitivity). The budget is thereby split evenly over the
``d`` outputs, each one's noise proportional to its own range — a share in [0, 1] is not
drowned by an age in [18, 95]. ``g`` is calibrated so that ``measurement.map(1)`` — the exact
cost that is charged, the sum over the outputs — is at most the requested epsilon; the means
are then a post-processing.

>>> job = SampleAggregate.from_dict({"bounds": [[0, 1]], "epsilon": 1.0, "partitions": 10})
>>> prepared = prepare_aggregate(job)
>>> round(prepared.cost[0], 6), prepared.cost[1]
(1.0, 0.0)
>>> [round(s, 3) for s in prepared.scales]  # on the mean: d (1 - 0) / (10 * 1.0)
[0.1]
>>> clamp_outputs(job, [[0.5], None, [7.0]])[:3]
[[0.5], [0.5], [1.0]]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from rds_kernel.dp._opendp import Margin, OpenDPException, dp
from rds_kernel.dp.accuracy import ALPHA
from rds_kernel.dp.calibrate import calibrate
from rds_kernel.errors import InternalError, SpecError

__all__ = [
    "MAX_OUTPUTS",
    "PreparedAggregate",
    "SampleAggregate",
    "clamp_outputs",
    "parse_output",
    "prepare_aggregate",
    "release_aggregate",
]

MAX_OUTPUTS = 1000
MAX_PARTITIONS = 100_000


@dataclass(frozen=True)
class SampleAggregate:
    """What the scientist declares for a DP code job.

    ``bounds`` has one ``(lower, upper)`` per output number; ``scalar`` says the function
    returns one number rather than a list of one. ``default`` (one number per output, inside
    the bounds; the midpoint unless given) stands in for a partition whose run failed.
    """

    bounds: tuple[tuple[float, float], ...]
    default: tuple[float, ...]
    epsilon: float
    partitions: int
    scalar: bool = True

    @property
    def outputs(self) -> int:
        return len(self.bounds)

    @classmethod
    def from_dict(cls, raw: Any) -> SampleAggregate:
        """Validate the wire form ``{"bounds", "epsilon", "partitions", "default"?, "scalar"?}``."""
        if not isinstance(raw, dict):
            raise SpecError("the DP parameters must be a JSON object")
        bounds = _bounds(raw.get("bounds"))
        epsilon = _number(raw.get("epsilon"), "epsilon")
        if not 0 < epsilon < math.inf:
            raise SpecError(f"epsilon must be a positive number, got {epsilon!r}")
        partitions = raw.get("partitions")
        if isinstance(partitions, bool) or not isinstance(partitions, int):
            raise SpecError("partitions must be a whole number, e.g. partitions=50")
        if not 1 <= partitions <= MAX_PARTITIONS:
            raise SpecError(f"partitions must be between 1 and {MAX_PARTITIONS}, got {partitions}")
        scalar = raw.get("scalar", len(bounds) == 1)
        if not isinstance(scalar, bool) or (scalar and len(bounds) != 1):
            raise SpecError("scalar must be true or false, and true only with one pair of bounds")
        default_raw = raw.get("default")
        if default_raw is None:
            default = tuple((lo + hi) / 2 for lo, hi in bounds)
        else:
            items = [default_raw] if not isinstance(default_raw, list | tuple) else default_raw
            if len(items) != len(bounds):
                raise SpecError(
                    f"default must have one number per output ({len(bounds)}), got {len(items)}"
                )
            default = tuple(_number(v, "default") for v in items)
            for (lo, hi), v in zip(bounds, default, strict=True):
                if not lo <= v <= hi:
                    raise SpecError(f"the default {v} is outside its bounds [{lo}, {hi}]")
        return cls(bounds, default, epsilon, partitions, scalar)

    def to_dict(self) -> dict[str, Any]:
        return {
            "bounds": [list(b) for b in self.bounds],
            "default": list(self.default),
            "epsilon": self.epsilon,
            "partitions": self.partitions,
            "scalar": self.scalar,
        }


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SpecError(f"{name} must be a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise SpecError(f"{name} must be a finite number, got {value!r}")
    return number


def _bounds(raw: Any) -> tuple[tuple[float, float], ...]:
    hint = "give bounds=(lower, upper), or one (lower, upper) per number the function returns"
    if not isinstance(raw, list | tuple) or not raw:
        raise SpecError(f"bounds are required: {hint}")
    pairs = [raw] if not isinstance(raw[0], list | tuple) else list(raw)
    if len(pairs) > MAX_OUTPUTS:
        raise SpecError(f"at most {MAX_OUTPUTS} outputs, got {len(pairs)}")
    out = []
    for pair in pairs:
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            raise SpecError(f"bounds must be (lower, upper) pairs: {hint}")
        lo, hi = _number(pair[0], "a lower bound"), _number(pair[1], "an upper bound")
        if not lo < hi:
            raise SpecError(f"each lower bound must be below its upper bound, got ({lo}, {hi})")
        out.append((lo, hi))
    return tuple(out)


@dataclass(frozen=True)
class PreparedAggregate:
    """The calibrated OpenDP measurement of a sample-and-aggregate release.

    ``cost`` is ``measurement.map(1)`` under ``changes=1``; ``scales`` are the Laplace scales
    on the released means, one per output, and ``accuracy`` their ± at 95%.
    """

    job: SampleAggregate
    measurement: Any
    cost: tuple[float, float]
    sum_scales: tuple[float, ...]

    @property
    def scales(self) -> list[float]:
        return [s / self.job.partitions for s in self.sum_scales]

    @property
    def accuracy(self) -> list[float]:
        return [float(dp.laplacian_scale_to_accuracy(s, ALPHA)) for s in self.scales]

    def summary(self) -> dict[str, Any]:
        return {
            "mechanism": "Float Laplace",
            "sensitivity": [(hi - lo) / self.job.partitions for lo, hi in self.job.bounds],
            "scale": self.scales,
            "accuracy": self.accuracy,
            "alpha": ALPHA,
        }


def _columns(n: int) -> list[str]:
    return [f"y{j}" for j in range(n)]


def prepare_aggregate(job: SampleAggregate) -> PreparedAggregate:
    """Build and calibrate the measurement; sees no data, so it is also the free preview."""
    names = _columns(job.outputs)
    domain = dp.lazyframe_domain(
        [dp.series_domain(n, dp.atom_domain(T=dp.f64, nan=False)) for n in names]
    )
    domain = dp.with_margin(domain, Margin(by=[], max_length=job.partitions, invariant="lengths"))
    metric, d_in = dp.unit_of(changes=1)
    frame = pl.LazyFrame(schema=dict.fromkeys(names, pl.Float64))

    sums = [
        pl.col(n).dp.sum(b)  # type: ignore[attr-defined]  # OpenDP's expression namespace
        for n, b in zip(names, job.bounds, strict=True)
    ]
    plan = frame.select(sums)

    def build(scale: float, _threshold: int | None) -> Any:
        return dp.m.make_private_lazyframe(
            domain, metric, dp.max_divergence(), lazyframe=plan, global_scale=scale
        )

    try:
        calibration = calibrate(build, d_in, job.epsilon, 0.0, thresholded=False)
        noise = dp.summarize_polars_measurement(calibration.measurement)
    except OpenDPException as exc:
        raise SpecError(f"OpenDP cannot make this job private: {exc.message}") from None
    by_column = {row["column"]: float(row["scale"]) for row in noise.iter_rows(named=True)}
    scales = tuple(by_column[n] for n in names)
    return PreparedAggregate(job, calibration.measurement, calibration.cost, scales)


def parse_output(raw: bytes | None, job: SampleAggregate) -> list[float] | None:
    """One run's result bytes as ``d`` finite floats, or None (the run counts as failed)."""
    import json

    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    items = [value] if isinstance(value, int | float) and not isinstance(value, bool) else value
    if not isinstance(items, list) or len(items) != job.outputs:
        return None
    out = []
    for v in items:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            return None
        out.append(float(v))
    return out


def clamp_outputs(
    job: SampleAggregate, outputs: Sequence[Sequence[float] | None]
) -> list[list[float]]:
    """Each run's output, the default where it failed, clamped into the bounds."""
    rows = []
    for out in outputs:
        values = job.default if out is None or len(out) != job.outputs else out
        rows.append([min(max(v, lo), hi) for v, (lo, hi) in zip(values, job.bounds, strict=True)])
    return rows


def release_aggregate(prepared: PreparedAggregate, rows: Sequence[Sequence[float]]) -> list[float]:
    """The noisy means of the clamped outputs (one row per partition). Draws fresh noise."""
    job = prepared.job
    if len(rows) != job.partitions:
        raise InternalError(f"expected {job.partitions} partition outputs, got {len(rows)}")
    names = _columns(job.outputs)
    frame = pl.LazyFrame(
        {n: [float(r[j]) for r in rows] for j, n in enumerate(names)},
        schema=dict.fromkeys(names, pl.Float64),
    )
    released = prepared.measurement(frame).collect()
    return [float(released.get_column(n)[0]) / job.partitions for n in names]
