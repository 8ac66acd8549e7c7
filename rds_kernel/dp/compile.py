"""A validated query compiled to one polars plan of DP aggregates, on a schema-only frame.

Each requested aggregate becomes one or more noisy *components* (OpenDP DP expressions, under
internal names) and a recipe to read it back:

* ``count()`` is the noisy row count (``dp.len``), ``count(col)`` a noisy non-null count;
* ``sum`` is a noisy sum of the fixed-point integers of :mod:`.encode`;
* ``mean`` divides a noisy centred sum by the noisy row count, and ``variance`` adds a noisy
  sum of squares. Means and variances share one row count with each other and with
  ``count()``: each component costs the same share of the budget, so sharing the denominator
  leaves more for the numerators than OpenDP's ``dp.mean`` (which carries its own count);
* ``quantile`` is OpenDP's exponential-mechanism quantile over the public candidates.

The plan is: derived columns, the filter, the per-identifier truncation (user-level privacy),
then ``select`` or ``group_by(...).agg``, then a left join onto the public key set (whose rows
are checked to be unique: a repeated key would reveal whether it is in the data). Unknown
keys are released through OpenDP's threshold on the noisy row count, which is added when the
query has none.

**Every component has a noise expression of its own** (:meth:`CompiledQuery.with_scales`).
OpenDP fills a public key without rows with ``0.repeat(len()).noise(scale)``, one expression
for every component of one kind and scale, and polars' common-subexpression elimination then
evaluates it once: ``count()`` and ``count(col)`` of an absent key came back equal, those of a
present key did not — whether a key is in the data, at any ε. So each component's scale is set
explicitly, ``1 + i * 2**-20`` times its default, which makes every expression distinct (and
costs a millionth of the budget's precision).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

import polars as pl

from rds_kernel.dp._opendp import dp_count, dp_quantile, dp_row_count, dp_sum
from rds_kernel.dp.encode import Encoding, encode
from rds_kernel.dp.expr import compile_expr
from rds_kernel.dp.space import InputSpace, empty_frame
from rds_kernel.errors import SpecError
from rds_kernel.schema import Schema
from rds_kernel.spec import ResolvedAggregate, ValidatedQuery

__all__ = ["CompiledQuery", "Component", "Output", "compile_query"]

Kind = Literal["len", "count", "sum", "quantile"]


Maker = Callable[[float | None], pl.Expr]
"""Builds a component's DP expression for an explicit noise scale (``None``: OpenDP's default)."""


@dataclass(frozen=True)
class Component:
    """One noisy aggregate in the plan, under an internal column name."""

    name: str
    kind: Kind
    make: Maker

    @property
    def expr(self) -> pl.Expr:
        return self.make(None).alias(self.name)


@dataclass(frozen=True)
class Output:
    """One requested aggregate: the components it is read from, in order, and its encoding.

    ``parts`` are component names: ``(n,)`` for a count, ``(s,)`` for a sum, ``(s, n)`` for a
    mean, ``(s, s2, n)`` for a variance, ``(q,)`` for a quantile.
    """

    alias: str
    op: str
    parts: tuple[str, ...]
    encoding: Encoding | None = None


@dataclass(frozen=True)
class CompiledQuery:
    """The plan to privatize and what is needed to read its output back."""

    plan: pl.LazyFrame
    components: tuple[Component, ...]
    outputs: tuple[Output, ...]
    group_by: tuple[str, ...]
    keys: pl.DataFrame | None
    thresholded: bool
    filtered: bool
    columns: frozenset[str]
    """The dataset columns the plan reads (at least one, so the frame keeps its length)."""
    rows: pl.LazyFrame
    """The rows the aggregates see: derived columns, filter and truncation applied."""

    def with_scales(self, scales: Mapping[str, float]) -> CompiledQuery:
        """The same query with an explicit noise scale for each component (by name)."""
        aggs = [c.make(scales[c.name]).alias(c.name) for c in self.components]
        return replace(self, plan=_aggregate(self.rows, self.group_by, self.keys, aggs))


class _Components:
    def __init__(self, taken: set[str]) -> None:
        prefix = "__rds_"
        while any(name.startswith(prefix) for name in taken):
            prefix = "_" + prefix
        self.prefix = prefix
        self.items: list[Component] = []
        self.len_name: str | None = None

    def add(self, kind: Kind, make: Maker) -> str:
        name = f"{self.prefix}{len(self.items)}"
        self.items.append(Component(name, kind, make))
        return name

    def row_count(self) -> str:
        if self.len_name is None:
            self.len_name = self.add("len", dp_row_count)
        return self.len_name


def _output(agg: ResolvedAggregate, parts: _Components) -> Output:
    if agg.op == "count":
        if agg.column is None:
            return Output(agg.alias, agg.op, (parts.row_count(),))
        column = agg.column
        name = parts.add("count", lambda scale: dp_count(pl.col(column), scale))
        return Output(agg.alias, agg.op, (name,))
    assert agg.input is not None and agg.column is not None  # validation resolves them
    x = pl.col(agg.column)
    if agg.op == "quantile":
        assert agg.candidates is not None and agg.alpha is not None
        return Output(agg.alias, agg.op, (parts.add("quantile", _quantile(agg, x)),))
    assert agg.bounds is not None
    purpose = {"sum": "sum", "mean": "mean", "variance": "variance"}[agg.op]
    enc = encode(x, agg.input.type, agg.bounds, agg.fill_null, purpose)  # type: ignore[arg-type]
    s = parts.add("sum", lambda scale: dp_sum(enc.value, enc.bounds, scale))
    if agg.op == "sum":
        return Output(agg.alias, agg.op, (s,), enc)
    if agg.op == "mean":
        return Output(agg.alias, agg.op, (s, parts.row_count()), enc)
    assert enc.square is not None and enc.square_bounds is not None
    square, square_bounds = enc.square, enc.square_bounds
    s2 = parts.add("sum", lambda scale: dp_sum(square, square_bounds, scale))
    return Output(agg.alias, agg.op, (s, s2, parts.row_count()), enc)


def _quantile(agg: ResolvedAggregate, x: pl.Expr) -> Maker:
    assert agg.input is not None and agg.candidates is not None and agg.alpha is not None
    candidates = agg.candidates
    fill = candidates[0] if agg.fill_null is None else agg.fill_null
    if agg.input.type in ("int", "bool") and all(
        float(v).is_integer() for v in (*candidates, fill)
    ):
        if agg.input.type == "bool":
            x = x.cast(pl.Int64)
        ints = [int(c) for c in candidates]
        filled, alpha = x.fill_null(int(fill)), agg.alpha
        return lambda scale: dp_quantile(filled, alpha, ints, scale)
    fill = float(fill)
    floats, alpha = x.cast(pl.Float64).fill_nan(fill).fill_null(fill), agg.alpha
    values = [float(c) for c in candidates]
    return lambda scale: dp_quantile(floats, alpha, values, scale)


def _key_frame(query: ValidatedQuery, schema: dict[str, Any]) -> pl.DataFrame:
    """Every combination of the public keys, in the order given, typed like the plan.

    Validation gives typed, unique keys; the frame is checked again after the cast to the
    plan's types (a repeated key row would come back equal exactly when the key is present in
    the data, revealing it), here at prepare time, before any data is read.
    """
    assert query.keys is not None
    by = query.group_by
    combos = list(itertools.product(*(query.keys[g] for g in by)))
    columns = [pl.Series(g, [c[i] for c in combos]).cast(schema[g]) for i, g in enumerate(by)]
    frame = pl.DataFrame(columns)
    repeated = frame.is_duplicated()
    if repeated.any():
        rows = frame.filter(repeated).unique(maintain_order=True).head(3).rows()
        raise SpecError(
            f"the public keys of {list(by)} repeat {rows} once converted to the column "
            "types; give each key once (a repeated key would reveal whether it is in the data)",
            {"group_by": list(by)},
        )
    return frame


def compile_query(query: ValidatedQuery, schema: Schema, space: InputSpace) -> CompiledQuery:
    """Compile ``query`` into a plan rooted at the schema-only frame of ``schema``."""
    lf = empty_frame(schema)
    for name, node, _info in query.derived:
        lf = lf.with_columns(compile_expr(node, query.columns).alias(name))
    spec = query.spec
    if spec.filter is not None:
        lf = lf.filter(compile_expr(spec.filter, query.columns))
    truncation = space.truncation()
    if truncation is not None:
        lf = lf.filter(truncation)

    parts = _Components(set(query.columns) | {a.alias for a in query.aggregates})
    outputs = tuple(_output(agg, parts) for agg in query.aggregates)
    by = query.group_by
    thresholded = bool(by) and query.keys is None
    if thresholded:
        parts.row_count()  # OpenDP thresholds unknown keys on a noisy row count
    keys = _key_frame(query, dict(lf.collect_schema())) if by and query.keys is not None else None
    return CompiledQuery(
        plan=_aggregate(lf, by, keys, [c.expr for c in parts.items]),
        components=tuple(parts.items),
        outputs=outputs,
        group_by=by,
        keys=keys,
        thresholded=thresholded,
        filtered=spec.filter is not None or truncation is not None,
        columns=_columns_read(query, schema),
        rows=lf,
    )


def _aggregate(
    lf: pl.LazyFrame, by: tuple[str, ...], keys: pl.DataFrame | None, aggs: list[pl.Expr]
) -> pl.LazyFrame:
    if not by:
        return lf.select(aggs)
    plan = lf.group_by(list(by)).agg(aggs)
    if keys is not None:
        plan = keys.lazy().join(plan, on=list(by), how="left", nulls_equal=True)
    return plan


def _referenced(node: dict[str, Any]) -> set[str]:
    if "col" in node:
        return {node["col"]}
    return set().union(*(_referenced(a) for a in node.get("args", [])))


def _columns_read(query: ValidatedQuery, schema: Schema) -> frozenset[str]:
    """Every dataset column a derived column, the filter, a key or an aggregate refers to."""
    names = set(query.group_by) | {a.column for a in query.aggregates if a.column is not None}
    for _name, node, _info in query.derived:
        names |= _referenced(node)
    if query.spec.filter is not None:
        names |= _referenced(query.spec.filter)
    if schema.identifier is not None:
        names.add(schema.identifier)
    read = frozenset(names & set(schema.names))
    return read or frozenset({schema.columns[0].name})
