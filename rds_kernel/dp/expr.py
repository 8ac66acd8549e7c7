"""Spec expressions (validated JSON trees) compiled to polars expressions OpenDP accepts.

OpenDP 0.16 privatizes a subset of polars. Where a spec operation has no direct counterpart
it is rewritten into supported ones: ``is_in`` into a balanced ``or`` of equalities,
``between`` into two comparisons, ``neg`` into ``* -1``, ``abs`` into two one-sided clips,
and date literals into ``str.to_date`` with an explicit format. Literals compared with a column
are first parsed into the column's type, exactly as validation parsed them
(:meth:`~rds_kernel.spec.ColumnInfo.value_of`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import date
from functools import reduce
from typing import Any

import polars as pl

from rds_kernel.spec import ColumnInfo, bin_labels, expr_info

__all__ = ["compile_expr"]

_COMPARE: dict[str, Callable[[pl.Expr, pl.Expr], pl.Expr]] = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
}
_ARITHMETIC: dict[str, Callable[[pl.Expr, pl.Expr], pl.Expr]] = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
}
_INT_MAX = 2**63 - 1
_FLOAT_MAX = 1.7976931348623157e308


def _literal(value: Any, info: ColumnInfo) -> pl.Expr:
    """A literal compared with (or filling) an expression of ``info``'s type, as that type's
    value (validation checked it parses: whole numbers for ints, ``YYYY-MM-DD`` dates)."""
    if value is None or info.type == "null":
        return pl.lit(value)
    typed = info.value_of(value)
    if isinstance(typed, date):
        return pl.lit(typed.isoformat()).str.to_date("%Y-%m-%d")
    return pl.lit(typed)


def _balanced(op: Callable[[pl.Expr, pl.Expr], pl.Expr], items: Sequence[pl.Expr]) -> pl.Expr:
    """Combine many expressions with ``op`` as a balanced tree (shallow plans, fast builds)."""
    if len(items) == 1:
        return items[0]
    mid = len(items) // 2
    return op(_balanced(op, items[:mid]), _balanced(op, items[mid:]))


def _equals(x: pl.Expr, value: Any, info: ColumnInfo) -> pl.Expr:
    return x.is_null() if value is None else x == _literal(value, info)


def compile_expr(node: dict[str, Any], columns: Mapping[str, ColumnInfo]) -> pl.Expr:
    """The polars expression of a validated spec expression over ``columns``."""
    if "col" in node:
        return pl.col(node["col"])
    if "lit" in node:
        return pl.lit(node["lit"])
    op: str = node["op"]
    args: list[dict[str, Any]] = node["args"]
    if op in _COMPARE:
        left, right = args
        # a literal takes the type of what it is compared with (a string with a date is a date)
        linfo, rinfo = expr_info(left, columns), expr_info(right, columns)
        if "lit" in right and right["lit"] is None and op in ("eq", "ne"):
            x = compile_expr(left, columns)
            return x.is_null() if op == "eq" else x.is_not_null()
        a = _literal(left["lit"], rinfo) if "lit" in left else compile_expr(left, columns)
        b = _literal(right["lit"], linfo) if "lit" in right else compile_expr(right, columns)
        return _COMPARE[op](a, b)
    xs = [compile_expr(a, columns) for a in args]
    if op in _ARITHMETIC or op in ("neg", "abs", "clip"):
        # give the operands the type validation inferred for the result: a bool in arithmetic
        # is an Int64 (polars would type `bool * 1` as i32, and as "unknown" in a lazy plan),
        # and an int clipped to float bounds is a Float64 (polars would keep it an int)
        numeric = pl.Float64 if expr_info(node, columns).type == "float" else pl.Int64
        xs = [
            x.cast(numeric) if expr_info(a, columns).type == "bool" or op == "clip" else x
            for a, x in zip(args, xs, strict=True)
        ]
    x = xs[0]
    if op in _ARITHMETIC:
        return _ARITHMETIC[op](xs[0], xs[1])
    if op == "and":
        return reduce(lambda a, b: a & b, xs)
    if op == "or":
        return reduce(lambda a, b: a | b, xs)
    if op == "not":
        return ~x
    if op == "is_null":
        return x.is_null()
    if op == "is_not_null":
        return x.is_not_null()
    info = expr_info(args[0], columns)
    xtype = info.type
    if op == "is_in":
        return _balanced(lambda a, b: a | b, [_equals(x, v, info) for v in node["values"]])
    if op == "between":
        return (x >= _literal(node["low"], info)) & (x <= _literal(node["high"], info))
    if op == "neg":
        return x * (-1.0 if xtype == "float" else -1)
    if op == "abs":
        top: float = _FLOAT_MAX if xtype == "float" else _INT_MAX
        zero: float = 0.0 if xtype == "float" else 0
        return x.clip(zero, top) + (x * (-1.0 if xtype == "float" else -1)).clip(zero, top)
    if op == "clip":
        return x.clip(node["low"], node["high"])
    if op == "bin":
        edges = node["edges"]
        labels = bin_labels(edges)
        return x.cut(edges, labels=labels, left_closed=True).cast(pl.String)
    if op == "fill_null":
        return x.fill_null(_literal(node["value"], info))
    raise AssertionError(f"unknown operation {op!r}")  # validation rejects it first
