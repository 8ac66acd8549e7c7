"""Prepare (compile, calibrate, verify) and execute DP queries: the API the node calls.

>>> from rds_kernel.schema import Schema
>>> from rds_kernel.spec import Query, count, validate
>>> schema = Schema.from_dict({"name": "p", "columns": {"age": {"type": "int"}}})
>>> prepared = prepare(validate(Query("p").agg(count()).spec(epsilon=1.0), schema), schema)
>>> prepared.cost
(1.0, 0.0)
>>> prepared.summary[0]["mechanism"], prepared.summary[0]["scale"]
('Integer Laplace', 1.0)

:func:`prepare` is a pure function of the validated spec and the schema; it never sees data, so
its result may be cached and shown as a free preview. :func:`execute` runs the prepared
measurement on the private rows; each call draws fresh noise and must be charged
``prepared.cost`` first.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import polars as pl

from rds_kernel.dp._opendp import OpenDPException, dp
from rds_kernel.dp.accuracy import ALPHA, Noise, derived_accuracy, noise_accuracy, summarize
from rds_kernel.dp.calibrate import NO_THRESHOLD, Calibration, calibrate
from rds_kernel.dp.compile import CompiledQuery, Output, compile_query
from rds_kernel.dp.space import conform, input_space
from rds_kernel.dp.timing import deadline
from rds_kernel.errors import InternalError, SpecError
from rds_kernel.schema import Schema
from rds_kernel.spec import MAX_GROUPS, ValidatedQuery

__all__ = ["PreparedQuery", "ReleaseResult", "execute", "prepare", "work"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedQuery:
    """A calibrated OpenDP measurement for one query, with its exact cost and preview.

    ``cost`` is ``measurement.map(d_in)``, never above the requested ``(epsilon, delta)``;
    ``summary`` has one row per aggregate (see :func:`rds_kernel.dp.accuracy.summarize`).
    """

    query: ValidatedQuery
    schema: Schema
    compiled: CompiledQuery
    calibration: Calibration
    noise: Mapping[str, Noise]
    summary: list[dict[str, Any]]

    @property
    def cost(self) -> tuple[float, float]:
        return self.calibration.cost

    @property
    def measurement(self) -> Any:
        return self.calibration.measurement

    @property
    def threshold(self) -> int | None:
        return self.calibration.threshold

    @property
    def work(self) -> int:
        """An estimate of the work of one release, from public facts only (see :func:`work`)."""
        return work(self.compiled, self.query, self.schema)

    def padding(self, rows: int) -> float | None:
        """Seconds a release may take on at most ``rows`` rows (see :mod:`.timing`).

        ``None`` when its cost cannot depend on the data beyond the dataset itself: no filter,
        no group-by and no per-person truncation — every such release reads every row.
        """
        compiled = self.compiled
        if not compiled.group_by and not compiled.filtered:
            return None
        candidates = sum(
            len(a.candidates or ()) for a in self.query.aggregates if a.op == "quantile"
        )
        return deadline(
            rows=rows,
            components=len(compiled.components),
            groups=_groups(compiled, self.query, rows, cap=rows) if compiled.group_by else 1,
            public_keys=compiled.keys is not None,
            candidates=candidates,
        )


@dataclass(frozen=True)
class ReleaseResult:
    """Released values: one row per group (or one row), one column per aggregate.

    ``accuracy`` is the ± at 95% per aggregate, the largest over the rows for a mean or
    variance (``None`` for quantiles). Counts are signed: noise may make a small one negative.
    """

    columns: list[str]
    rows: list[list[Any]]
    accuracy: dict[str, float | None]
    cost: tuple[float, float]
    threshold: int | None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: finite numbers, ISO dates, ``None`` for anything undefined."""
        return {
            "columns": list(self.columns),
            "rows": [[_json_value(v) for v in row] for row in self.rows],
            "accuracy": {k: _json_value(v) for k, v in self.accuracy.items()},
            "alpha": ALPHA,
            "epsilon": self.cost[0],
            "delta": self.cost[1],
            "threshold": self.threshold,
        }


def prepare(query: ValidatedQuery, schema: Schema) -> PreparedQuery:
    """Build the measurement for ``query``, calibrate its noise to the requested loss, verify.

    Raises :class:`SpecError` when OpenDP cannot privatize the query as asked.
    """
    space = input_space(schema)
    epsilon, delta = query.epsilon, query.delta
    measure = dp.max_divergence() if delta == 0 else dp.approximate(dp.max_divergence())
    try:
        compiled = compile_query(query, schema, space)

        def build(scale: float, threshold: int | None) -> Any:
            return dp.m.make_private_lazyframe(
                space.domain,
                space.metric,
                measure,
                lazyframe=compiled.plan,
                global_scale=scale,
                threshold=threshold,
            )

        # Each component's own noise expression: its default scale (at global scale 1) times
        # 1 + i * 2**-20, so no two are equal and polars cannot merge them (see .compile).
        defaults = _noise(build(1.0, NO_THRESHOLD if compiled.thresholded else None))
        compiled = compiled.with_scales(
            {
                c.name: defaults[c.name].scale * (1 + i * _SPREAD)
                for i, c in enumerate(compiled.components)
            }
        )
        calibration = calibrate(
            build,
            space.d_in,
            epsilon,
            delta,
            thresholded=compiled.thresholded,
            min_threshold=(space.truncate or space.d_in) + 1,
        )
        noise = _noise(calibration.measurement)
    except OpenDPException as exc:
        raise _spec_error(exc) from None
    except pl.exceptions.PolarsError as exc:
        # raised while typing the schema-only plan: it names columns and literals, no data
        raise SpecError(f"the query does not fit the dataset's column types: {exc}") from None
    public_rows = None
    if not compiled.group_by and not compiled.filtered:
        public_rows = schema.public_row_count
    summary = summarize(compiled, noise, calibration.threshold, public_rows)
    return PreparedQuery(query, schema, compiled, calibration, noise, summary)


_SPREAD = 2.0**-20  # relative step between the components' scales
ROWS_PER_UNIT = 10_000
CANDIDATES_PER_UNIT = 64


def work(compiled: CompiledQuery, query: ValidatedQuery, schema: Schema) -> int:
    """The work of a release in units of one noisy value drawn for one group (~0.1 ms here).

    Measured with OpenDP 0.16 on 2 cores, the cost of a release is dominated by the noise drawn
    per group and per noisy component (about 85-110 µs each); a quantile's candidates cost
    about 1/64 of that each, and scanning rows about 1/10,000 per row and component. Only
    public facts go in — the number of public keys, the schema's domains and
    ``public_row_count`` — never the private data, whose size must not decide what is refused.
    With unknown keys a group-by column without a public domain counts as
    ``public_row_count`` groups, or ``MAX_GROUPS`` when that is not published.
    """
    components = len(compiled.components)
    candidates = sum(len(a.candidates or ()) for a in query.aggregates if a.op == "quantile")
    per_group = components + candidates // CANDIDATES_PER_UNIT
    rows_known = schema.public_row_count
    groups = _groups(compiled, query, rows_known or MAX_GROUPS, cap=rows_known)
    rows = schema.public_row_count or 0
    return groups * per_group + rows * components // ROWS_PER_UNIT


def _groups(
    compiled: CompiledQuery, query: ValidatedQuery, unbounded: int, *, cap: int | None
) -> int:
    """The most groups a release can have: its public keys, or the product of the grouped
    columns' public domains, a column without one counting as ``unbounded`` groups; never more
    than ``cap`` (a bound on the rows) when one is known."""
    if compiled.keys is not None:
        return int(compiled.keys.height)
    groups = 1
    for g in compiled.group_by:
        info = query.columns[g]
        size = len(info.keys) if info.keys is not None else None
        if size is None and info.type == "bool":
            size = 2
        if size is None:
            size = unbounded
        groups *= size + int(info.nullable)
    return min(groups, cap) if cap else groups


def execute(prepared: PreparedQuery, data: pl.LazyFrame) -> ReleaseResult:
    """Run the measurement on the private rows (scanned lazily) and decode the release."""
    try:
        private = conform(data, prepared.schema, prepared.compiled.columns)
        frame = prepared.measurement(private).collect()
    except (Exception, pl.exceptions.PanicException):
        # (a Rust panic in polars is a BaseException: it must fail here like any error, so
        # that the release path charges it rather than letting it escape uncharged)
        # the cause may quote private values: the owner's log gets it, the scientist does not
        log.exception("executing a prepared query failed")
        raise InternalError(
            "the query failed while running on the private data; nothing was released. "
            "The node owner can find the cause in the node log"
        ) from None
    return _decode(prepared, frame)


def _noise(measurement: Any) -> dict[str, Noise]:
    table = dp.summarize_polars_measurement(measurement)
    return {
        row["column"]: Noise(row["distribution"], float(row["scale"]))
        for row in table.iter_rows(named=True)
    }


def _decode(prepared: PreparedQuery, frame: pl.DataFrame) -> ReleaseResult:
    """The release from the measurement's output frame.

    This runs after the mechanism, on noisy values: it must not fail for any of them (a
    failure would depend on the data). Each value that cannot be decoded is ``None``.
    """
    compiled = prepared.compiled
    by = list(compiled.group_by)
    if compiled.keys is not None:
        # the join does not keep the key order: put the rows back in the public order
        position = _unused("__order", frame.columns)  # a key column may be called __order
        order = compiled.keys.with_row_index(position)
        frame = order.join(frame, on=by, how="left", nulls_equal=True).sort(position)
        frame = frame.drop(position)
    elif by:
        frame = frame.sort(by, nulls_last=True)
    accuracy: dict[str, float | None] = {}
    columns: list[list[Any]] = [frame.get_column(g).to_list() for g in by]
    for out in compiled.outputs:
        parts = [frame.get_column(p).to_list() for p in out.parts]
        try:
            values, accs = _read(out, parts, prepared.noise)
        except Exception:  # pragma: no cover - _read is total; this is the last line of defence
            log.exception("decoding %r failed; it is released as unknown (None)", out.alias)
            values, accs = [None] * frame.height, [None] * frame.height
        columns.append(values)
        finite = [a for a in accs if a is not None]
        accuracy[out.alias] = max(finite) if finite and len(finite) == len(accs) else None
    rows = [list(r) for r in zip(*columns, strict=True)] if columns else []
    names = [*by, *(o.alias for o in compiled.outputs)]
    return ReleaseResult(names, rows, accuracy, prepared.cost, prepared.threshold)


def _number(v: Any) -> float | None:
    """A noisy output as a finite float, or ``None`` if it is missing or not finite."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    x = float(v)  # OpenDP's outputs are i64 or f64, so this cannot overflow
    return x if math.isfinite(x) else None


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _read(
    out: Output, parts: Sequence[list[Any]], noise: Mapping[str, Noise]
) -> tuple[list[Any], list[float | None]]:
    """Decode one aggregate's column from its components; also each row's ±.

    Total: a missing or non-finite part, or a decoded value that is not finite, gives
    ``None`` (the value is unknown), never an exception.
    """
    enc = out.encoding
    if out.op in ("count", "quantile"):
        acc = noise_accuracy(noise[out.parts[0]])
        return list(parts[0]), [acc] * len(parts[0])
    assert enc is not None
    if out.op == "sum":
        base = noise_accuracy(noise[out.parts[0]])
        acc = _finite(base * enc.unit) if base is not None else None
        sums: list[Any] = []
        for v in parts[0]:
            total = _number(v)
            if total is None:
                sums.append(None)
            elif enc.exact:
                sums.append(v)  # the integer itself: exact, and p = 0
            else:
                sums.append(_finite(enc.sum(total)))
        return sums, [acc] * len(sums)
    values: list[Any] = []
    accs: list[float | None] = []
    for row in zip(*parts, strict=True):
        numbers = [_number(v) for v in row]
        if any(x is None for x in numbers):
            values.append(None)
            accs.append(None)
            continue
        *noisy, n_raw = (x for x in numbers if x is not None)
        n = max(n_raw, 1.0)
        if out.op == "mean":
            value = enc.mean(noisy[0] / n)
        else:
            value = enc.variance(noisy[0] / n, noisy[1] / n)
        values.append(_finite(value))
        accs.append(derived_accuracy(out, [*noisy, n], noise))
    return values, accs


def _unused(name: str, taken: Sequence[str]) -> str:
    while name in taken:
        name = "_" + name
    return name


def _json_value(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, date | datetime):
        return v.isoformat()
    return v


_WRAPPED = re.compile(r'\w+\(ErrString\("(.*)"\)\)', re.S)
_NOT_SUPPORTED = re.compile(r"is not recognized at this time|not currently supported|unsupported")


def _spec_error(exc: OpenDPException) -> SpecError:
    """An OpenDP refusal, said so the scientist can act on it.

    These errors come from building on the schema-only plan, so they quote the query (column
    names, literals, bounds), never data.
    """
    message = (exc.message or exc.variant or "").strip()
    message = message.split(" If you would like to see this supported")[0]
    # polars errors come wrapped in Rust's debug form: ComputeError(ErrString("..."))
    wrapped = _WRAPPED.fullmatch(message)
    if wrapped:
        message = wrapped.group(1).replace('\\"', '"')
    if "threshold must be greater than 1" in message:
        return SpecError(
            "grouping with unknown keys needs a larger delta, e.g. delta=1e-6",
            {"opendp": message},
        )
    if "potential for overflow" in message:
        return SpecError(
            "the bounds are too wide to sum without overflow; narrow the bounds",
            {"opendp": message},
        )
    if _NOT_SUPPORTED.search(message):
        return SpecError(
            f"OpenDP cannot make this part of the query private: {message}. "
            "Rewrite it with the supported operations (see the query spec reference)",
            {"opendp": message},
        )
    return SpecError(
        f"OpenDP cannot make this query private: {message}. Simplify the part of the query "
        "this names (derived columns and filters are the usual place)",
        {"opendp": message},
    )
