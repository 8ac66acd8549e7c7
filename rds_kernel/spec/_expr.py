"""Expressions and aggregates: the vocabulary of a query spec, with their wire limits."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

from rds_kernel.errors import SpecError

SPEC_VERSION = 1
MAX_SPEC_BYTES = 64 * 1024
MAX_DEPTH = 24
MAX_NODES = 1_000
MAX_AGGREGATES = 32
MAX_DERIVED = 32
MAX_VALUES = 1_000
MAX_GROUP_BY = 4
MAX_GROUPS = 10_000
MAX_EPSILON = 1_000.0
MIN_EPSILON = 1e-6  # a count's noise scale is then 1e6; far smaller scales overflow in OpenDP
MAX_STRING = 256
DEFAULT_QUANTILE_CANDIDATES = 101
# The numeric bounds an aggregate may use (given, from the schema, or derived), and its quantile
# candidates and null fill: finite, |x| <= MAX_BOUND, and hi - lo >= MIN_WIDTH. Validation refuses
# the rest, so the DP layer cannot fail after the mechanism has run on private data:
# * MAX_BOUND = 1e15 < 2**53: integer bounds are exact as floats, and every product of two
#   bounds (interval arithmetic, the variance's squares, (width/2)**2 <= 1e30) is finite. The
#   fixed-point step 2**-p of dp.encode is then at most 2**20 for a sum or mean and 2**35 for a
#   variance, so decoding i64 noisy sums (|s| < 2**63) gives at most 2**83 (~1e25), and a
#   variance's (mean u)**2 * step**2 at most 2**196 (~1e59): far from overflow. Unlimited, a
#   mean over [0, 1e308] at epsilon < 1 had an infinite noise scale (its answer could not be
#   stored as JSON after the release ran), and a variance over [0, 1e200] overflowed squaring
#   half its width while decoding.
# * MIN_WIDTH = 1e-9: the finest step of a mean's encoding is 2**-30 (about 9.3e-10), so
#   narrower bounds cannot be told apart; and a sum scales values by 2**p with p about
#   log2(2**30 / max|bound|), which breaks down near max|bound| = 1e-299 (the ratio overflows:
#   bounds=[0, 1e-300] encoded every value as 0 and failed to prepare with a 500). With the
#   minimum width, max|bound| >= 5e-10 and p <= 60.
MAX_BOUND = 1e15
MIN_WIDTH = 1e-9
MAX_INT = 2**63 - 1  # int columns are i64

AGGREGATE_OPS = ("count", "sum", "mean", "variance", "quantile")
COMPARISONS = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}
ARITHMETIC = {"add": "+", "sub": "-", "mul": "*", "div": "/"}
LOGICAL = ("and", "or")
UNARY = ("not", "neg", "abs", "is_null", "is_not_null")
# op -> parameters it takes besides "args"
PARAMS: dict[str, frozenset[str]] = {
    **{op: frozenset() for op in (*COMPARISONS, *ARITHMETIC, *LOGICAL, *UNARY)},
    "is_in": frozenset({"values"}),
    "between": frozenset({"low", "high"}),
    "clip": frozenset({"low", "high"}),
    "bin": frozenset({"edges"}),
    "fill_null": frozenset({"value"}),
}
ARITY: dict[str, int | None] = {
    **{op: 2 for op in (*COMPARISONS, *ARITHMETIC)},
    **{op: None for op in LOGICAL},
    **{op: 1 for op in (*UNARY, "is_in", "between", "clip", "bin", "fill_null")},
}

Literal_ = int | float | bool | str | None
Keys = Literal["public", "unknown"] | dict[str, list[Any]]


def _bad(message: str, **detail: Any) -> SpecError:
    return SpecError(message, detail or None)


# --------------------------------------------------------------------------- expressions


class Expr:
    """A column expression, built with :func:`col` and :func:`lit` and Python operators.

    Comparisons, arithmetic and ``&``/``|``/``~`` build new expressions; nothing is evaluated
    here. ``to_dict()`` is the wire form.
    """

    __slots__ = ("node",)

    def __init__(self, node: dict[str, Any]) -> None:
        self.node = node

    def to_dict(self) -> dict[str, Any]:
        return self.node

    def __repr__(self) -> str:
        return f"Expr({json.dumps(self.node)})"

    def _op(self, op: str, *others: Any, **params: Any) -> Expr:
        args = [self.node, *(_as_expr(o).node for o in others)]
        return Expr({"op": op, "args": args, **params})

    def _rop(self, op: str, other: Any) -> Expr:
        return Expr({"op": op, "args": [_as_expr(other).node, self.node]})

    # comparisons build expressions; Expr is deliberately not hashable
    def __eq__(self, other: object) -> Expr:  # type: ignore[override]
        return self._op("eq", other)

    def __ne__(self, other: object) -> Expr:  # type: ignore[override]
        return self._op("ne", other)

    __hash__ = None  # type: ignore[assignment]

    def __lt__(self, other: Any) -> Expr:
        return self._op("lt", other)

    def __le__(self, other: Any) -> Expr:
        return self._op("le", other)

    def __gt__(self, other: Any) -> Expr:
        return self._op("gt", other)

    def __ge__(self, other: Any) -> Expr:
        return self._op("ge", other)

    def __add__(self, other: Any) -> Expr:
        return self._op("add", other)

    def __radd__(self, other: Any) -> Expr:
        return self._rop("add", other)

    def __sub__(self, other: Any) -> Expr:
        return self._op("sub", other)

    def __rsub__(self, other: Any) -> Expr:
        return self._rop("sub", other)

    def __mul__(self, other: Any) -> Expr:
        return self._op("mul", other)

    def __rmul__(self, other: Any) -> Expr:
        return self._rop("mul", other)

    def __truediv__(self, other: Any) -> Expr:
        return self._op("div", other)

    def __rtruediv__(self, other: Any) -> Expr:
        return self._rop("div", other)

    def __neg__(self) -> Expr:
        return self._op("neg")

    def __abs__(self) -> Expr:
        return self._op("abs")

    def __and__(self, other: Any) -> Expr:
        return self._op("and", other)

    def __or__(self, other: Any) -> Expr:
        return self._op("or", other)

    def __invert__(self) -> Expr:
        return self._op("not")

    def __bool__(self) -> bool:
        raise TypeError(
            "an rds expression has no truth value: combine conditions with & and |, "
            "not 'and'/'or', and wrap each comparison in parentheses"
        )

    def is_in(self, values: Sequence[Literal_]) -> Expr:
        return self._op("is_in", values=list(values))

    def between(self, low: Literal_, high: Literal_) -> Expr:
        """True where ``low <= value <= high``."""
        return self._op("between", low=low, high=high)

    def is_null(self) -> Expr:
        return self._op("is_null")

    def is_not_null(self) -> Expr:
        return self._op("is_not_null")

    def clip(self, low: float, high: float) -> Expr:
        """Clamp values into ``[low, high]``; the result has these as its bounds."""
        return self._op("clip", low=low, high=high)

    def bin(self, edges: Sequence[float]) -> Expr:
        """Bin values by ``edges``; the labels (see :func:`bin_labels`) are public group keys."""
        return self._op("bin", edges=list(edges))

    def fill_null(self, value: Literal_) -> Expr:
        return self._op("fill_null", value=value)


def col(name: str) -> Expr:
    """A reference to a dataset column (or a derived column) by name."""
    return Expr({"col": name})


def lit(value: Literal_) -> Expr:
    """A literal value (number, bool, string, or an ISO date string for date columns)."""
    return Expr({"lit": value})


def _as_expr(value: Any) -> Expr:
    if isinstance(value, Expr):
        return value
    if isinstance(value, date):
        return lit(value.isoformat())
    return lit(value)


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def bin_labels(edges: Sequence[float]) -> list[str]:
    """The group keys produced by ``bin(edges)``: an underflow bin, one per interval, overflow.

    >>> bin_labels([18, 40, 65])
    ['<18', '[18, 40)', '[40, 65)', '>=65']
    """
    inner = [f"[{_fmt(a)}, {_fmt(b)})" for a, b in itertools.pairwise(edges)]
    return [f"<{_fmt(edges[0])}", *inner, f">={_fmt(edges[-1])}"]


# --------------------------------------------------------------------------- aggregates


@dataclass(frozen=True)
class Aggregate:
    """One requested statistic. Build with :func:`count`, :func:`sum`, :func:`mean`, …"""

    op: str
    column: str | None = None
    bounds: tuple[float, float] | None = None
    alpha: float | None = None
    candidates: tuple[float, ...] | None = None
    fill_null: float | None = None
    alias: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "op": self.op,
            "column": self.column,
            "bounds": list(self.bounds) if self.bounds is not None else None,
            "alpha": self.alpha,
            "candidates": list(self.candidates) if self.candidates is not None else None,
            "fill_null": self.fill_null,
            "alias": self.alias,
        }


def _default_alias(op: str, column: str | None, alpha: float | None) -> str:
    if op == "count":
        return "count" if column is None else f"count_{column}"
    if op == "quantile":
        if alpha == 0.5:
            return f"median_{column}"
        return f"quantile_{_fmt(round(100 * (alpha or 0), 6))}_{column}"
    return f"{op}_{column}"


def _agg(
    op: str,
    column: str | None,
    bounds: tuple[float, float] | None = None,
    alpha: float | None = None,
    candidates: Sequence[float] | None = None,
    fill_null: float | None = None,
    alias: str | None = None,
) -> Aggregate:
    return Aggregate(
        op=op,
        column=column,
        bounds=tuple(bounds) if bounds is not None else None,  # type: ignore[arg-type]
        alpha=alpha,
        candidates=tuple(candidates) if candidates is not None else None,
        fill_null=fill_null,
        alias=alias or _default_alias(op, column, alpha),
    )


def count(column: str | None = None, *, alias: str | None = None) -> Aggregate:
    """Count rows (no column) or the non-null values of ``column``."""
    return _agg("count", column, alias=alias)


def sum(
    column: str,
    bounds: tuple[float, float] | None = None,
    *,
    fill_null: float | None = None,
    alias: str | None = None,
) -> Aggregate:
    """Sum of ``column`` with each value clamped into ``bounds`` (default: schema bounds)."""
    return _agg("sum", column, bounds, fill_null=fill_null, alias=alias)


def mean(
    column: str,
    bounds: tuple[float, float] | None = None,
    *,
    fill_null: float | None = None,
    alias: str | None = None,
) -> Aggregate:
    """Mean of ``column`` clamped into ``bounds`` (default: schema bounds)."""
    return _agg("mean", column, bounds, fill_null=fill_null, alias=alias)


def variance(
    column: str,
    bounds: tuple[float, float] | None = None,
    *,
    fill_null: float | None = None,
    alias: str | None = None,
) -> Aggregate:
    """Variance of ``column`` clamped into ``bounds`` (from DP means of x and x²)."""
    return _agg("variance", column, bounds, fill_null=fill_null, alias=alias)


def quantile(
    column: str,
    alpha: float,
    candidates: Sequence[float] | None = None,
    *,
    fill_null: float | None = None,
    alias: str | None = None,
) -> Aggregate:
    """The ``alpha``-quantile of ``column``, chosen among public ``candidates``.

    Without candidates, evenly spaced values across the column's public bounds are used.
    """
    return _agg(
        "quantile", column, alpha=alpha, candidates=candidates, fill_null=fill_null, alias=alias
    )


def median(
    column: str,
    candidates: Sequence[float] | None = None,
    *,
    fill_null: float | None = None,
    alias: str | None = None,
) -> Aggregate:
    """The median of ``column`` (``quantile(column, 0.5)``)."""
    return quantile(column, 0.5, candidates, fill_null=fill_null, alias=alias)
