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

That argument needs each run's output to depend on its own partition only, and a run can read
the clock. If run ``i`` started when run ``i - 1`` ended, the partition that holds one person
could delay every later run, and a function that returns ``upper`` when it starts late would
move ``k - 1`` outputs with one person's record: a privacy loss of up to ``(k - 1) * epsilon``.
So the runs of a DP job are *predictable transactions* (Haeberlen, Pierce, Narayan, "Differential
Privacy Under Fire", USENIX Security 2011): they follow a :class:`Timetable` fixed before any
data is read. Run ``i`` starts at ``t0 + i * slot`` with ``t0`` a fixed ``start_seconds`` after
the node takes up the job; it is killed ``run_seconds`` (the scientist's declared limit) after
it started, and ``slot = run_seconds + SLOT_ALLOWANCE`` leaves room to start and kill it. A run
that has not ended by the end of its slot, or that the node could not start on time, counts as
failed (the default); the next run starts on time regardless. The job finishes at the end of
the timetable, whatever its runs did, so its duration tells nothing either.

The runs of a job run **one at a time**. Runs that run at the same time influence each other
(CPU and memory contention is a clock), so ``p`` parallel runs would have to be noised for
``p`` changes, multiplying the noise by ``p``; ``p = 1`` with ``k / p`` partitions gives the
same noise and the same duration with more rows per partition, so it is never worse. (The node
setting ``job_parallel`` that used to allow parallel runs no longer exists.) Residual channels
remain: state a run leaves in the host's caches (the page cache of the read-only environment,
for one) and other jobs running on the same host at the same time; see the README.

The measurement is OpenDP's, built on a ``k``-row frame with one float column per output: each
column is summed with ``dp.sum(bounds)`` and all take their noise from one ``global_scale``
``g``, so output ``j`` gets Laplace noise of scale ``g * (upper_j - lower_j)`` (OpenDP adds its
allowance for float rounding to the sensitivity). The budget is thereby split evenly over the
``d`` outputs, each one's noise proportional to its own range — a share in [0, 1] is not
drowned by an age in [18, 95]. ``g`` is calibrated so that ``measurement.map(1)`` — the exact
cost that is charged, the sum over the outputs — is at most the requested epsilon; the means
are then a post-processing.

Everything after the runs is total: :func:`parse_output` turns any bytes into ``d`` finite
floats or None, and :func:`clamp_outputs` turns anything into ``k`` clamped rows, so no output
a run can craft makes the job fail (a failure that followed the data would be a free bit).

>>> job = SampleAggregate.from_dict({"bounds": [[0, 1]], "epsilon": 1.0, "partitions": 10})
>>> prepared = prepare_aggregate(job)
>>> round(prepared.cost[0], 6), prepared.cost[1]
(1.0, 0.0)
>>> [round(s, 3) for s in prepared.scales]  # on the mean: d (1 - 0) / (10 * 1.0)
[0.1]
>>> clamp_outputs(job, [[0.5], None, [7.0]])[:3]
[[0.5], [0.5], [1.0]]
>>> timetable(job, start_seconds=2).seconds  # 2 s to start, then 10 slots of 1.0 + 0.4 s
16.0
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from rds_kernel.dp._opendp import Margin, OpenDPException, dp
from rds_kernel.dp.accuracy import ALPHA
from rds_kernel.dp.calibrate import calibrate
from rds_kernel.errors import InternalError, SpecError
from rds_kernel.spec import MAX_BOUND, MAX_EPSILON, MIN_EPSILON, MIN_WIDTH, number

__all__ = [
    "DEFAULT_START_SECONDS",
    "MAX_OUTPUTS",
    "RUN_SECONDS",
    "SLOT_ALLOWANCE",
    "START_TOLERANCE",
    "PreparedAggregate",
    "SampleAggregate",
    "Timetable",
    "clamp_outputs",
    "max_output_bytes",
    "parse_output",
    "prepare_aggregate",
    "release_aggregate",
    "timetable",
]

MAX_OUTPUTS = 1000
MAX_PARTITIONS = 100_000
MAX_RUN_SECONDS = 3600.0
RUN_SECONDS = 1.0
"""A run's time limit unless the scientist declares one (``run_seconds``)."""
MIN_RUN_SECONDS = 0.1
"""Below this a run cannot even start its interpreter's work: every run would fail."""
SLOT_ALLOWANCE = 0.4
"""Seconds added to ``run_seconds`` for a slot: starting a run and killing it with everything
it started. Measured on the sandbox (2 cores): a run starts and reports within 15-30 ms of its
dispatch, and one killed while holding the most memory its process may map (about 1.5 GB) is
gone 0.12-0.27 s after its limit; 0.4 s keeps both inside the slot with a margin."""
START_TOLERANCE = 0.1
"""How late (seconds) the node may start a run; a run it cannot start by then is not started
and counts as failed, so a late node never shifts the timetable."""
DEFAULT_START_SECONDS = 2
"""The node setting ``job_start_seconds`` unless the owner changes it: from taking up a DP job
to its first run (starting the sandbox, reading and partitioning the data)."""


@dataclass(frozen=True)
class SampleAggregate:
    """What the scientist declares for a DP code job.

    ``bounds`` has one ``(lower, upper)`` per output number; ``scalar`` says the function
    returns one number rather than a list of one. ``default`` (one number per output, inside
    the bounds; the midpoint unless given) stands in for a partition whose run failed.
    ``run_seconds`` is each run's time limit: its slot in the job's :class:`Timetable`.
    """

    bounds: tuple[tuple[float, float], ...]
    default: tuple[float, ...]
    epsilon: float
    partitions: int
    scalar: bool = True
    run_seconds: float = RUN_SECONDS

    @property
    def outputs(self) -> int:
        return len(self.bounds)

    @classmethod
    def from_dict(cls, raw: Any) -> SampleAggregate:
        """Validate the wire form: bounds, epsilon, partitions; default, scalar, run_seconds."""
        if not isinstance(raw, dict):
            raise SpecError("the DP parameters must be a JSON object")
        bounds = _bounds(raw.get("bounds"))
        epsilon = number(raw.get("epsilon"), "epsilon")
        if not MIN_EPSILON <= epsilon <= MAX_EPSILON:
            raise SpecError(
                f"epsilon must be between {MIN_EPSILON:g} and {MAX_EPSILON:g}, got {epsilon!r}; "
                "typical values are 0.1–1"
            )
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
        run_raw = raw.get("run_seconds")
        run_seconds = RUN_SECONDS if run_raw is None else _number(run_raw, "run_seconds")
        if not MIN_RUN_SECONDS <= run_seconds <= MAX_RUN_SECONDS:
            raise SpecError(
                f"run_seconds is each run's time limit, between {MIN_RUN_SECONDS} and "
                f"{MAX_RUN_SECONDS:g} seconds, got {run_seconds:g}"
            )
        return cls(bounds, default, epsilon, partitions, scalar, run_seconds)

    def to_dict(self) -> dict[str, Any]:
        return {
            "bounds": [list(b) for b in self.bounds],
            "default": list(self.default),
            "epsilon": self.epsilon,
            "partitions": self.partitions,
            "scalar": self.scalar,
            "run_seconds": self.run_seconds,
        }


def _number(value: Any, name: str) -> float:
    """A finite number within ±MAX_BOUND (the query path's limits, for the same reasons)."""
    x = number(value, name)
    if not -MAX_BOUND <= x <= MAX_BOUND:
        raise SpecError(f"{name} {x!r} is beyond ±{MAX_BOUND:g}; give a value within it")
    return x


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
        if not hi - lo >= MIN_WIDTH:
            raise SpecError(
                f"each lower bound must be below its upper bound (at least {MIN_WIDTH:g} "
                f"apart), got ({lo}, {hi})"
            )
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


@dataclass(frozen=True)
class Timetable:
    """When the runs of a DP job start: fixed before any data is read (see the module docstring).

    Times are seconds from the moment the node takes up the job: run ``i`` starts at
    :meth:`start_of` ``(i)``, is killed ``run_seconds`` later, and its slot ends
    ``slot_seconds`` after its start; the job ends at :attr:`seconds`, whatever its runs did.
    """

    start_seconds: float
    run_seconds: float
    runs: int

    @property
    def slot_seconds(self) -> float:
        return self.run_seconds + SLOT_ALLOWANCE

    @property
    def seconds(self) -> float:
        """The job's duration: start-up, then one slot per run."""
        return self.start_seconds + self.runs * self.slot_seconds

    def start_of(self, run: int) -> float:
        return self.start_seconds + run * self.slot_seconds

    def to_dict(self) -> dict[str, Any]:
        return {
            "start_seconds": self.start_seconds,
            "run_seconds": self.run_seconds,
            "slot_seconds": self.slot_seconds,
            "runs": self.runs,
            "parallel": 1,
            "seconds": self.seconds,
        }


def timetable(job: SampleAggregate, start_seconds: float = DEFAULT_START_SECONDS) -> Timetable:
    """The job's timetable on a node that gives DP jobs ``start_seconds`` to start."""
    return Timetable(float(start_seconds), job.run_seconds, job.partitions)


def max_output_bytes(outputs: int) -> int:
    """The largest result a run may send for ``outputs`` numbers (JSON floats and separators).

    A float's ``repr`` has at most 24 characters; 32 per number and 64 more leave room for
    separators and spaces. Anything longer is not a list of floats and counts as a failure.
    """
    return 64 + 32 * outputs


# a JSON number: no NaN, no Infinity, no leading zeros or plus sign, no hex
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_SPACE = " \t\r\n"


def parse_output(raw: Any, job: SampleAggregate) -> list[float] | None:
    """One run's result bytes as ``d`` finite floats, or None (the run counts as failed).

    Total: whatever a run sends (its code can write anything to its result pipe), this returns
    and never raises. Accepted is at most :func:`max_output_bytes` of ASCII holding a JSON
    number (when ``d`` is 1) or a flat JSON list of ``d`` numbers, each a finite float; no
    nesting, so no recursion, and no integer is ever converted other than by ``float()``.
    """
    try:
        return _parse_output(raw, job.outputs)
    except Exception:  # any failure to parse is a failed run, never the job's
        return None


def _parse_output(raw: Any, outputs: int) -> list[float] | None:
    if not isinstance(raw, bytes | bytearray) or len(raw) > max_output_bytes(outputs):
        return None
    text = bytes(raw).decode("ascii").strip(_SPACE)
    if text.startswith("[") and text.endswith("]"):
        inner = text[1:-1].strip(_SPACE)
        tokens = [t.strip(_SPACE) for t in inner.split(",")] if inner else []
    else:
        tokens = [text]
    if len(tokens) != outputs:
        return None
    out = []
    for token in tokens:
        if _NUMBER.fullmatch(token) is None:
            return None
        value = float(token)
        if not math.isfinite(value):
            return None
        out.append(value)
    return out


def clamp_outputs(job: SampleAggregate, outputs: Sequence[Any]) -> list[list[float]]:
    """Each run's output, the default where it failed, clamped into the bounds.

    Total: an output that is not ``d`` finite numbers (None, a failed run) is the default.
    """
    rows = []
    for out in outputs:
        values = out if _finite_numbers(out, job.outputs) else job.default
        rows.append(
            [min(max(float(v), lo), hi) for v, (lo, hi) in zip(values, job.bounds, strict=True)]
        )
    return rows


def _finite_numbers(out: Any, n: int) -> bool:
    try:
        return len(out) == n and all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in out
        )
    except Exception:  # not a sequence of numbers: the default
        return False


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
