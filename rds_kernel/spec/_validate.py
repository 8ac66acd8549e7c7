"""Validation of a parsed spec against a dataset schema; resolves types, bounds and keys.

Literals compared with a column (comparisons, ``is_in``, ``between``, ``fill_null``) and group
keys are parsed strictly into values of the column's type (:meth:`ColumnInfo.value_of`): whole
numbers for int columns, one zero for floats, dates written ``YYYY-MM-DD`` only. A key list
whose typed values repeat is refused: OpenDP noises a present group once, so two copies of one
present key would come back equal and reveal that the key is in the data. Every bound an
aggregate uses is finite, within ``±MAX_BOUND`` and at least ``MIN_WIDTH`` wide, so nothing in
the DP layer can overflow after the mechanism has run on private data.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date
from typing import Any

from rds_kernel.schema import Column, Schema
from rds_kernel.spec._expr import (
    ARITHMETIC,
    COMPARISONS,
    DEFAULT_QUANTILE_CANDIDATES,
    LOGICAL,
    MAX_BOUND,
    MAX_GROUPS,
    MAX_INT,
    MAX_VALUES,
    MIN_WIDTH,
    Aggregate,
    Literal_,
    _bad,
    bin_labels,
)
from rds_kernel.spec._wire import QuerySpec

# --------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class ColumnInfo:
    """What is known about a column or expression: type, public bounds, nullability, keys."""

    type: str
    bounds: tuple[Any, Any] | None = None
    nullable: bool = False
    keys: tuple[Any, ...] | None = None

    @property
    def is_numeric(self) -> bool:
        return self.type in ("int", "float", "bool")

    def value_of(self, value: Literal_, where: str = "literal") -> Any:
        """``value`` as a value of this type, parsed strictly; raises :class:`SpecError`.

        ``None`` stays ``None``. Int: a whole number in i64 (``30.0`` is ``30``; no bools).
        Float: any number, with ``-0.0`` read as ``0.0``. Bool: ``true``/``false`` only. Date:
        a :class:`~datetime.date` from text written exactly ``YYYY-MM-DD``. Category: one of
        the categories. String: any text. Two literals that are one value of the column give
        equal results, so checks on typed values see what the data layer will see.
        """
        return _typed(value, self, where)

    @classmethod
    def of(cls, column: Column) -> ColumnInfo:
        return cls(
            type=column.type,
            bounds=column.bounds,
            nullable=column.nullable,
            keys=column.public_keys,
        )


@dataclass(frozen=True)
class ResolvedAggregate:
    """An aggregate with everything resolved: numeric bounds, candidates, null fill.

    ``bounds`` are the clamp range of a sum, mean or variance, or the range a quantile's
    default candidates span (``None`` for a count, or a quantile with given candidates). They,
    the candidates and the fill are finite and within ``±MAX_BOUND``; bounds are at least
    ``MIN_WIDTH`` wide.
    """

    op: str
    alias: str
    column: str | None
    input: ColumnInfo | None
    bounds: tuple[float, float] | None
    alpha: float | None
    candidates: tuple[float, ...] | None
    fill_null: float | None


@dataclass(frozen=True)
class ValidatedQuery:
    """A spec checked against a schema; the DP layer compiles only these.

    ``columns`` maps every column visible to the aggregates (schema + derived) to its info;
    ``keys`` maps each group-by column to its public key list, or is ``None`` for unknown keys.
    Keys are typed values of their column (see :meth:`ColumnInfo.value_of`: ``int``,
    ``float``, ``bool``, ``str``, :class:`~datetime.date` or ``None``), unique per column.
    """

    spec: QuerySpec
    columns: dict[str, ColumnInfo]
    derived: tuple[tuple[str, dict[str, Any], ColumnInfo], ...]
    group_by: tuple[str, ...]
    keys: dict[str, tuple[Any, ...]] | None
    aggregates: tuple[ResolvedAggregate, ...]

    @property
    def epsilon(self) -> float:
        return self.spec.epsilon

    @property
    def delta(self) -> float:
        return self.spec.delta


def _lit_info(value: Literal_) -> ColumnInfo:
    if value is None:
        return ColumnInfo("null", nullable=True)
    if isinstance(value, bool):
        return ColumnInfo("bool", (value, value))
    if isinstance(value, int):
        return ColumnInfo("int", (value, value))
    if isinstance(value, float):
        return ColumnInfo("float", (value, value))
    return ColumnInfo("string")


_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _typed(value: Literal_, info: ColumnInfo, where: str) -> Any:
    """See :meth:`ColumnInfo.value_of`."""
    if value is None:
        return None
    t = info.type
    if isinstance(value, bool):
        if t == "bool":
            return value
        if t in ("int", "float"):
            raise _bad(f"{where}: {value!r} is a bool, not a number; a {t} column needs numbers")
    elif isinstance(value, int | float):
        if t == "int":
            if isinstance(value, float) and not value.is_integer():
                raise _bad(
                    f"{where}: {value!r} is not a whole number, so it is not a value of an int "
                    f"column; use a whole number such as {math.floor(value)} or {math.ceil(value)}"
                )
            number = int(value)
            if not -MAX_INT - 1 <= number <= MAX_INT:
                raise _bad(f"{where}: {value!r} does not fit in a 64-bit int column")
            return number
        if t == "float":
            return float(value) + 0.0  # -0.0 + 0.0 is 0.0: a float column has one zero
    elif isinstance(value, str):
        if t == "category":
            if info.keys is not None and value not in info.keys:
                raise _bad(
                    f"{where}: {value!r} is not a category of this column; "
                    f"the categories are {list(info.keys)}"
                )
            return value
        if t == "string":
            return value
        if t == "date":
            # date.fromisoformat alone also reads "19500304" and "1950-W10-6"
            if _ISO_DATE.fullmatch(value):
                try:
                    return date.fromisoformat(value)
                except ValueError:
                    pass
            raise _bad(
                f"{where}: {value!r} is not a date written YYYY-MM-DD; write dates in exactly "
                "that form, e.g. '2020-01-31'"
            )
    raise _bad(f"{where}: {value!r} cannot be compared with a {t} column")


def _typed_keys(
    column: str, raw: Sequence[Literal_], info: ColumnInfo, where: str
) -> tuple[Any, ...]:
    """The typed keys of ``column``; refused if two of them are one value of its type."""
    typed = tuple(_typed(v, info, where) for v in raw)
    seen: dict[Any, Literal_] = {}
    for value, key in zip(raw, typed, strict=True):
        if key in seen:
            raise _bad(
                f"{where}: {seen[key]!r} and {value!r} are the same {info.type} key; give "
                "each key once (a repeated key would reveal whether it is in the data)",
                column=column,
            )
        seen[key] = value
    return typed


def _num(x: float) -> str:
    return repr(float(x))  # every digit: 1e15 and 1e15 + 1 must not read the same


def _check_bounds(lo: float, hi: float, where: str, source: str, fix: str) -> None:
    """Refuse bounds outside what the DP layer computes with exactly (see ``MAX_BOUND``)."""
    if (
        math.isfinite(lo)
        and math.isfinite(hi)
        and lo >= -MAX_BOUND
        and hi <= MAX_BOUND
        and hi - lo >= MIN_WIDTH
    ):
        return
    raise _bad(
        f"{where}: the bounds {source} are ({_num(lo)}, {_num(hi)}); bounds must be finite, "
        f"within ±{MAX_BOUND:g} and at least {MIN_WIDTH:g} apart: {fix}"
    )


def _check_value(value: float, where: str, what: str) -> None:
    if not (math.isfinite(value) and -MAX_BOUND <= value <= MAX_BOUND):
        raise _bad(
            f"{where}: {what} {_num(value)} is beyond ±{MAX_BOUND:g}; give a value within it"
        )


def _interval(
    op: str,
    a: tuple[Any, Any] | None,
    b: tuple[Any, Any] | None,
) -> tuple[float, float] | None:
    if a is None or b is None:
        return None
    (alo, ahi), (blo, bhi) = (float(a[0]), float(a[1])), (float(b[0]), float(b[1]))
    if op == "add":
        return alo + blo, ahi + bhi
    if op == "sub":
        return alo - bhi, ahi - blo
    if op == "mul":
        products = [alo * blo, alo * bhi, ahi * blo, ahi * bhi]
        return min(products), max(products)
    if op == "div" and (blo > 0 or bhi < 0):
        quotients = [alo / blo, alo / bhi, ahi / blo, ahi / bhi]
        return min(quotients), max(quotients)
    return None


def expr_info(
    node: dict[str, Any],
    columns: Mapping[str, ColumnInfo],
    where: str = "expression",
) -> ColumnInfo:
    """Type-check a (shape-valid) expression against known columns and infer its info."""
    if "col" in node:
        name = node["col"]
        if name not in columns:
            raise _bad(
                f"{where}: unknown column {name!r}; the dataset has {', '.join(sorted(columns))}",
                column=name,
            )
        return columns[name]
    if "lit" in node:
        return _lit_info(node["lit"])
    op: str = node["op"]
    args = [expr_info(a, columns, where) for a in node["args"]]
    nullable = any(a.nullable for a in args)
    if op in COMPARISONS:
        left, right = args
        for mine, _other, other_node in (
            (left, right, node["args"][1]),
            (right, left, node["args"][0]),
        ):
            if "lit" in other_node and mine.type != "null":
                _typed(other_node["lit"], mine, where)
        if "lit" not in node["args"][0] and "lit" not in node["args"][1]:
            numeric = left.is_numeric and right.is_numeric
            if not numeric and left.type != right.type:
                raise _bad(f"{where}: cannot compare a {left.type} column with a {right.type}")
        return ColumnInfo("bool", nullable=nullable)
    if op in LOGICAL or op == "not":
        for a in args:
            if a.type != "bool":
                raise _bad(f"{where}: '{op}' combines conditions (bool), got a {a.type}")
        return ColumnInfo("bool", nullable=nullable)
    if op in ("is_null", "is_not_null"):
        return ColumnInfo("bool")
    if op in ("is_in", "between"):
        params = node["values"] if op == "is_in" else [node["low"], node["high"]]
        for v in params:
            _typed(v, args[0], f"{where}: {op}")
        return ColumnInfo("bool", nullable=nullable)
    if op in ARITHMETIC or op in ("neg", "abs"):
        for a in args:
            if not a.is_numeric:
                raise _bad(f"{where}: '{op}' needs numbers, got a {a.type}")
        floaty = op == "div" or any(a.type == "float" for a in args)
        if op in ARITHMETIC:
            bounds = _interval(op, args[0].bounds, args[1].bounds)
        elif args[0].bounds is None:
            bounds = None
        else:
            lo, hi = float(args[0].bounds[0]), float(args[0].bounds[1])
            bounds = (
                (-hi, -lo)
                if op == "neg"
                else ((0.0 if lo <= 0 <= hi else min(abs(lo), abs(hi))), max(abs(lo), abs(hi)))
            )
        if bounds is not None and not floaty and all(math.isfinite(b) for b in bounds):
            # (bounds that overflowed stay floats; an aggregate over them is refused)
            bounds = (int(bounds[0]), int(bounds[1]))
        return ColumnInfo("float" if floaty else "int", bounds, nullable)
    if op == "clip":
        if not args[0].is_numeric:
            raise _bad(f"{where}: clip needs a number column, got a {args[0].type}")
        lo, hi = node["low"], node["high"]
        t = (
            "int"
            if args[0].type in ("int", "bool") and isinstance(lo, int) and isinstance(hi, int)
            else "float"
        )
        return ColumnInfo(t, (lo, hi) if t == "int" else (float(lo), float(hi)), nullable)
    if op == "bin":
        if not args[0].is_numeric:
            raise _bad(f"{where}: bin needs a number column, got a {args[0].type}")
        return ColumnInfo("category", nullable=nullable, keys=tuple(bin_labels(node["edges"])))
    if op == "fill_null":
        _typed(node["value"], args[0], f"{where}: fill_null")
        return replace(args[0], nullable=False)
    raise _bad(f"{where}: unknown operation {op!r}")  # pragma: no cover - parse rejects it


def _candidates(info: ColumnInfo, bounds: tuple[float, float]) -> tuple[float, ...]:
    """Default quantile candidates: every integer of a short int range, else 101 even steps."""
    lo, hi = bounds
    if info.type in ("int", "bool") and hi - lo + 1 <= MAX_VALUES:
        return tuple(float(v) for v in range(math.ceil(lo), math.floor(hi) + 1))
    step = (hi - lo) / (DEFAULT_QUANTILE_CANDIDATES - 1)
    return tuple(lo + i * step for i in range(DEFAULT_QUANTILE_CANDIDATES))


def _resolve_agg(
    agg: Aggregate, columns: Mapping[str, ColumnInfo], derived: Mapping[str, object]
) -> ResolvedAggregate:
    where = f"aggregate {agg.alias!r}"
    info = expr_info({"col": agg.column}, columns, where) if agg.column is not None else None
    bounds: tuple[float, float] | None = None
    candidates = agg.candidates
    if agg.op != "count" and info is not None:
        if not info.is_numeric:
            raise _bad(
                f"{where}: {agg.op} needs a number column; {agg.column!r} is a "
                f"{info.type}. Count per group instead (group_by + rds.count())"
            )
        example = f"rds.{agg.op}({agg.column!r}, bounds=(0, 100))"
        if agg.op == "quantile":
            example = f"rds.quantile({agg.column!r}, {agg.alpha}, candidates=[...])"
        if agg.bounds is not None:
            bounds = (float(agg.bounds[0]), float(agg.bounds[1]))
            source, fix = "given", f"give bounds=(lo, hi) in that range, e.g. {example}"
        elif info.bounds is not None:
            bounds = (float(info.bounds[0]), float(info.bounds[1]))
            if agg.column in derived:
                source = f"of {agg.column!r}, derived by interval arithmetic,"
                fix = (
                    f"give bounds=(lo, hi), e.g. {example}, or clip the inputs of "
                    f"{agg.column!r} first, e.g. rds.col('x').clip(lo, hi)"
                )
            else:
                source = f"of {agg.column!r} from the schema"
                fix = f"give bounds=(lo, hi) that its values fit in, e.g. {example}"
        elif info.type == "bool":
            bounds, source, fix = (0.0, 1.0), "", ""
        elif agg.op != "quantile" or candidates is None:
            raise _bad(
                f"{where}: {agg.column!r} has no public bounds; pass them, e.g. "
                f"rds.{agg.op}({agg.column!r}, bounds=(0, 100))",
                column=agg.column,
            )
        if info.nullable and agg.fill_null is None:
            raise _bad(
                f"{where}: {agg.column!r} may contain nulls; say what they count as "
                f"with fill_null=..., or filter with rds.col({agg.column!r}).is_not_null()"
                " and fill_null"
            )
        if agg.fill_null is not None:
            _check_value(agg.fill_null, where, "fill_null")
        if agg.op == "quantile" and candidates is not None:
            for c in candidates:
                _check_value(c, where, "the candidate")
            bounds = None  # given candidates are the whole output range; no bounds are used
        elif bounds is not None:
            _check_bounds(bounds[0], bounds[1], where, source, fix)
            if agg.op == "quantile":
                candidates = _candidates(info, bounds)
    return ResolvedAggregate(
        op=agg.op,
        alias=agg.alias,
        column=agg.column,
        input=info,
        bounds=bounds,
        alpha=agg.alpha,
        candidates=candidates,
        fill_null=agg.fill_null,
    )


def validate(spec: QuerySpec, schema: Schema) -> ValidatedQuery:
    """Check a parsed spec against a dataset schema and resolve everything the DP layer needs.

    Raises :class:`~rds_kernel.errors.SpecError` with a message that says how to fix the query.
    """
    if schema.name and spec.dataset != schema.name:
        raise _bad(f"the spec is for dataset {spec.dataset!r}, not {schema.name!r}")
    columns: dict[str, ColumnInfo] = {c.name: ColumnInfo.of(c) for c in schema.columns}
    # Derived columns come first, so the filter may use them (the DP layer compiles in
    # this order: with_columns, then filter, then group-by/aggregates).
    derived: list[tuple[str, dict[str, Any], ColumnInfo]] = []
    for name, node in spec.with_columns:
        if name in columns:
            raise _bad(f"derived column {name!r} already exists; choose another name")
        info = expr_info(node, columns, f"derived column {name!r}")
        columns[name] = info
        derived.append((name, node, info))
    if spec.filter is not None:
        info = expr_info(spec.filter, columns, "filter")
        if info.type != "bool":
            raise _bad(f"the filter must be a condition (bool), got a {info.type} expression")

    group_by: tuple[str, ...] = ()
    keys: dict[str, tuple[Any, ...]] | None = None
    if spec.group_by is not None:
        group_by = tuple(spec.group_by["by"])
        requested = spec.group_by["keys"]
        for g in group_by:
            expr_info({"col": g}, columns, "group_by")
        if requested == "unknown":
            if spec.delta <= 0:
                raise _bad(
                    "grouping with unknown keys reveals which groups exist, so it needs "
                    "delta > 0 (e.g. delta=1e-6); or give the keys publicly with keys="
                )
        else:
            given = requested if isinstance(requested, dict) else {}
            keys = {}
            for g in group_by:
                if g in given:
                    keys[g] = _typed_keys(g, given[g], columns[g], f"group key of {g!r}")
                elif columns[g].keys is not None:
                    public = columns[g].keys or ()
                    keys[g] = _typed_keys(g, public, columns[g], f"public key of {g!r}")
                else:
                    raise _bad(
                        f"{g!r} has no public keys: give them (keys={{{g!r}: [...]}}), "
                        f"bin it (rds.col({g!r}).bin([...])), or use keys='unknown' "
                        "with delta > 0"
                    )
            total = math.prod(len(v) for v in keys.values())
            if total > MAX_GROUPS:
                raise _bad(f"the group-by has {total} key combinations; the limit is {MAX_GROUPS}")

    derived_names = {name: info for name, _node, info in derived}
    aggregates = tuple(_resolve_agg(a, columns, derived_names) for a in spec.aggregates)
    aliases = [a.alias for a in aggregates]
    clash = {a for a in aliases if aliases.count(a) > 1} | (set(aliases) & set(group_by))
    if clash:
        raise _bad(f"output names {sorted(clash)} are used twice; give aggregates alias=...")
    return ValidatedQuery(
        spec=spec,
        columns=columns,
        derived=tuple(derived),
        group_by=group_by,
        keys=keys,
        aggregates=aggregates,
    )
