"""Spec expressions (validated JSON trees) compiled to polars expressions OpenDP accepts.

OpenDP 0.16 privatizes a subset of polars. Where a spec operation has no direct counterpart
it is rewritten into supported ones: ``is_in`` into a balanced ``or`` of equalities,
``between`` into two comparisons, ``neg`` into ``* -1``, ``abs`` into two one-sided clips,
and ISO date literals into ``str.to_date`` with an explicit format.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
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


def _literal(value: Any, as_type: str | None) -> pl.Expr:
    if as_type == "date" and isinstance(value, str):
        return pl.lit(value).str.to_date("%Y-%m-%d")
    return pl.lit(value)


def _balanced(op: Callable[[pl.Expr, pl.Expr], pl.Expr], items: Sequence[pl.Expr]) -> pl.Expr:
    """Combine many expressions with ``op`` as a balanced tree (shallow plans, fast builds)."""
    if len(items) == 1:
        return items[0]
    mid = len(items) // 2
    return op(_balanced(op, items[:mid]), _balanced(op, items[mid:]))


def _equals(x: pl.Expr, value: Any, as_type: str) -> pl.Expr:
    return x.is_null() if value is None else x == _literal(value, as_type)


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
        # a string literal compared with a date column is an ISO date
        ltype, rtype = expr_info(left, columns).type, expr_info(right, columns).type
        if "lit" in right and right["lit"] is None and op in ("eq", "ne"):
            x = compile_expr(left, columns)
            return x.is_null() if op == "eq" else x.is_not_null()
        a = _literal(left["lit"], rtype) if "lit" in left else compile_expr(left, columns)
        b = _literal(right["lit"], ltype) if "lit" in right else compile_expr(right, columns)
        return _COMPARE[op](a, b)
    xs = [compile_expr(a, columns) for a in args]
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
    xtype = expr_info(args[0], columns).type
    if op == "is_in":
        return _balanced(lambda a, b: a | b, [_equals(x, v, xtype) for v in node["values"]])
    if op == "between":
        return (x >= _literal(node["low"], xtype)) & (x <= _literal(node["high"], xtype))
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
        return x.fill_null(_literal(node["value"], xtype))
    raise AssertionError(f"unknown operation {op!r}")  # validation rejects it first
