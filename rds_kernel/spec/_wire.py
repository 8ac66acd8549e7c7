"""The wire form of a query: :class:`QuerySpec` and the strict parser for untrusted JSON."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import dataclass
from typing import Any

from rds_kernel.spec._expr import (
    AGGREGATE_OPS,
    ARITY,
    MAX_AGGREGATES,
    MAX_DEPTH,
    MAX_DERIVED,
    MAX_EPSILON,
    MAX_GROUP_BY,
    MAX_INT,
    MAX_NODES,
    MAX_SPEC_BYTES,
    MAX_STRING,
    MAX_VALUES,
    MIN_EPSILON,
    PARAMS,
    SPEC_VERSION,
    Aggregate,
    Literal_,
    _bad,
    _default_alias,
)

# --------------------------------------------------------------------------- the spec


@dataclass(frozen=True)
class QuerySpec:
    """A complete query: the wire document a client sends and the node validates.

    ``group_by`` is ``None`` or ``{"by": [...], "keys": "public" | "unknown" | {col: [...]}}``.
    """

    dataset: str
    aggregates: tuple[Aggregate, ...]
    epsilon: float
    delta: float = 0.0
    filter: dict[str, Any] | None = None
    with_columns: tuple[tuple[str, dict[str, Any]], ...] = ()
    group_by: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": SPEC_VERSION,
            "dataset": self.dataset,
            "filter": self.filter,
            "with_columns": [{"name": n, "expr": e} for n, e in self.with_columns],
            "group_by": self.group_by,
            "aggregates": [a.to_dict() for a in self.aggregates],
            "epsilon": self.epsilon,
            "delta": self.delta,
        }

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no spaces): equal specs give equal text."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False)

    def hash(self) -> str:
        """SHA-256 of the canonical JSON; identifies a query for retries and caching."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    @classmethod
    def from_json(cls, text: str | bytes) -> QuerySpec:
        if len(text) > MAX_SPEC_BYTES:
            raise _bad(f"the query spec is {len(text)} bytes; the limit is {MAX_SPEC_BYTES}")
        try:
            raw = json.loads(text, parse_constant=_reject_constant)
        except ValueError as exc:
            raise _bad(f"the query spec is not valid JSON: {exc}") from None
        return cls.from_dict(raw)

    @classmethod
    def from_dict(cls, raw: Any) -> QuerySpec:
        """Parse an untrusted wire document; :func:`validate` then checks its meaning."""
        spec = _parse_spec(raw)
        size = len(spec.to_json())  # the same limit as from_json, on the canonical text
        if size > MAX_SPEC_BYTES:
            raise _bad(f"the query spec is {size} bytes; the limit is {MAX_SPEC_BYTES}")
        return spec


def _reject_constant(name: str) -> Any:
    raise _bad(f"{name} is not allowed in a query spec; use finite numbers")


_SPEC_KEYS = {
    "version",
    "dataset",
    "filter",
    "with_columns",
    "group_by",
    "aggregates",
    "epsilon",
    "delta",
}
_AGG_KEYS = {"op", "column", "bounds", "alpha", "candidates", "fill_null", "alias"}


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(f"{what} must be a number, got {type(value).__name__}")
    if isinstance(value, int) and not -MAX_INT - 1 <= value <= MAX_INT:
        # also keeps math.isfinite and float() from raising on huge JSON integers
        raise _bad(
            f"{what}: integers must fit in 64 bits (|x| < 2**63); write a larger number as a "
            "float, e.g. 1e20"
        )
    if not math.isfinite(value):
        raise _bad(f"{what} must be finite, got {value}")
    return value


def number(value: Any, what: str) -> float:
    """An untrusted JSON number as a finite float, or a ``SpecError`` that names ``what``.

    The one rule for every number a scientist sends (queries and code jobs alike): no bools,
    no integers beyond 64 bits (``float()`` of a 401-digit integer raises), nothing infinite.
    """
    return float(_number(value, what))


def _parse_spec(raw: Any) -> QuerySpec:
    if not isinstance(raw, dict):
        raise _bad("a query spec must be a JSON object")
    unknown = set(raw) - _SPEC_KEYS
    if unknown:
        raise _bad(
            f"unknown field(s) {sorted(unknown)} in the query spec", allowed=sorted(_SPEC_KEYS)
        )
    version = raw.get("version", SPEC_VERSION)
    if version != SPEC_VERSION:
        raise _bad(
            f"spec version {version!r} is not supported; this node speaks version "
            f"{SPEC_VERSION} — upgrade rds_kernel on the older side"
        )
    dataset = raw.get("dataset")
    if not isinstance(dataset, str) or not dataset:
        raise _bad("the query spec needs 'dataset', the name of a dataset on the node")
    if "epsilon" not in raw:
        raise _bad("the query spec needs 'epsilon', the privacy loss to spend (e.g. 0.5)")
    epsilon = _number(raw["epsilon"], "epsilon")
    if epsilon <= 0:
        raise _bad(f"epsilon must be greater than 0, got {epsilon}")
    if epsilon < MIN_EPSILON:
        raise _bad(
            f"epsilon {epsilon:g} is below {MIN_EPSILON:g}: the answer would be only noise "
            "(and OpenDP cannot represent its scale); typical values are 0.1–1"
        )
    if epsilon > MAX_EPSILON:
        raise _bad(
            f"epsilon {epsilon} is above {MAX_EPSILON:g}, which protects nothing; "
            "typical values are 0.1–1"
        )
    delta = _number(raw.get("delta", 0.0), "delta")
    if not 0 <= delta < 1:
        raise _bad(f"delta must be in [0, 1), got {delta}; typical values are 0 or 1e-6")

    counter = [0]
    filt = raw.get("filter")
    if filt is not None:
        filt = _parse_expr(filt, "filter", 0, counter)

    wc_raw = raw.get("with_columns", [])
    if not isinstance(wc_raw, list):
        raise _bad("'with_columns' must be a list of {name, expr}")
    if len(wc_raw) > MAX_DERIVED:
        raise _bad(f"at most {MAX_DERIVED} derived columns per query")
    with_columns = []
    for i, item in enumerate(wc_raw):
        if not isinstance(item, dict) or set(item) != {"name", "expr"}:
            raise _bad(f"with_columns[{i}] must be an object with exactly 'name' and 'expr'")
        name = _name(item["name"], f"with_columns[{i}].name")
        with_columns.append((name, _parse_expr(item["expr"], name, 0, counter)))

    group_by = _parse_group_by(raw.get("group_by"))

    aggs_raw = raw.get("aggregates")
    if not isinstance(aggs_raw, list) or not aggs_raw:
        raise _bad("the query spec needs at least one aggregate, e.g. rds.count()")
    if len(aggs_raw) > MAX_AGGREGATES:
        raise _bad(f"at most {MAX_AGGREGATES} aggregates per query")
    aggregates = tuple(_parse_agg(a, i) for i, a in enumerate(aggs_raw))
    return QuerySpec(
        dataset=dataset,
        aggregates=aggregates,
        epsilon=float(epsilon),
        delta=float(delta),
        filter=filt,
        with_columns=tuple(with_columns),
        group_by=group_by,
    )


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 64 or not value.isprintable():
        raise _bad(f"{what} must be a non-empty printable name of at most 64 characters")
    return value


def _literal(value: Any, what: str) -> Literal_:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return _number(value, what)
    if isinstance(value, str):
        if len(value) > MAX_STRING:
            raise _bad(f"{what}: strings are limited to {MAX_STRING} characters")
        return value
    raise _bad(f"{what} must be a number, bool, string or null, got {type(value).__name__}")


def _parse_expr(raw: Any, where: str, depth: int, counter: list[int]) -> dict[str, Any]:
    counter[0] += 1
    if counter[0] > MAX_NODES:
        raise _bad(f"the query has more than {MAX_NODES} expression nodes; simplify it")
    if depth > MAX_DEPTH:
        raise _bad(f"{where}: expressions nest deeper than {MAX_DEPTH} levels; simplify it")
    if not isinstance(raw, dict):
        raise _bad(f'{where}: an expression must be an object such as {{"col": "age"}}')
    if "col" in raw:
        if set(raw) != {"col"}:
            raise _bad(f"{where}: a column reference has only the key 'col'")
        return {"col": _name(raw["col"], f"{where}: column name")}
    if "lit" in raw:
        if set(raw) != {"lit"}:
            raise _bad(f"{where}: a literal has only the key 'lit'")
        return {"lit": _literal(raw["lit"], f"{where}: literal")}
    op = raw.get("op")
    if not isinstance(op, str) or op not in PARAMS:
        raise _bad(f"{where}: unknown operation {op!r}", allowed=sorted(PARAMS))
    extra = set(raw) - {"op", "args"} - PARAMS[op]
    missing = PARAMS[op] - set(raw)
    if extra or missing:
        raise _bad(
            f"{where}: '{op}' takes {sorted(PARAMS[op]) or 'no parameters'}"
            f"{f', not {sorted(extra)}' if extra else ''}"
            f"{f'; missing {sorted(missing)}' if missing else ''}"
        )
    args = raw.get("args")
    if not isinstance(args, list):
        raise _bad(f"{where}: '{op}' needs a list 'args'")
    arity = ARITY[op]
    if (arity is not None and len(args) != arity) or (arity is None and len(args) < 2):
        raise _bad(f"{where}: '{op}' takes {arity or 'at least 2'} argument(s), got {len(args)}")
    node: dict[str, Any] = {
        "op": op,
        "args": [_parse_expr(a, where, depth + 1, counter) for a in args],
    }
    if op == "is_in":
        values = raw["values"]
        if not isinstance(values, list) or not values or len(values) > MAX_VALUES:
            raise _bad(f"{where}: is_in needs a list of 1 to {MAX_VALUES} values")
        node["values"] = [_literal(v, f"{where}: is_in value") for v in values]
    elif op in ("between", "clip"):
        node["low"] = _literal(raw["low"], f"{where}: {op} low")
        node["high"] = _literal(raw["high"], f"{where}: {op} high")
        if op == "clip":
            lo, hi = _number(node["low"], "clip low"), _number(node["high"], "clip high")
            if lo >= hi:
                raise _bad(f"{where}: clip needs low < high, got [{lo}, {hi}]")
    elif op == "bin":
        edges = raw["edges"]
        if not isinstance(edges, list) or not 1 <= len(edges) <= MAX_VALUES:
            raise _bad(f"{where}: bin needs a list of 1 to {MAX_VALUES} edges")
        edges = [_number(e, f"{where}: bin edge") for e in edges]
        # compared as the floats polars will cut with: 2**53 and 2**53 + 1 are one edge there
        if any(float(b) <= float(a) for a, b in itertools.pairwise(edges)):
            raise _bad(f"{where}: bin edges must be strictly increasing (as 64-bit floats)")
        node["edges"] = edges
    elif op == "fill_null":
        node["value"] = _literal(raw["value"], f"{where}: fill_null value")
        if node["value"] is None:
            raise _bad(f"{where}: fill_null needs a non-null value")
    return node


def _parse_group_by(raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or not set(raw) <= {"by", "keys"} or "by" not in raw:
        raise _bad('group_by must be an object {"by": [columns], "keys": ...}')
    by = raw["by"]
    if not isinstance(by, list) or not 1 <= len(by) <= MAX_GROUP_BY:
        raise _bad(f"group_by.by must list 1 to {MAX_GROUP_BY} columns")
    by = [_name(b, "group_by column") for b in by]
    if len(set(by)) != len(by):
        raise _bad("group_by columns must not repeat")
    keys = raw.get("keys", "public")
    if isinstance(keys, dict):
        parsed: dict[str, list[Any]] = {}
        for k, values in keys.items():
            if k not in by:
                raise _bad(f"group_by keys are given for {k!r}, which is not grouped by")
            if not isinstance(values, list) or not values or len(values) > MAX_VALUES:
                raise _bad(f"group_by keys for {k!r} must be a list of 1 to {MAX_VALUES} values")
            vals = [_literal(v, f"group key of {k!r}") for v in values]
            if len({json.dumps(v) for v in vals}) != len(vals):
                raise _bad(f"group_by keys for {k!r} repeat a value")
            parsed[k] = vals
        return {"by": by, "keys": parsed}
    if keys not in ("public", "unknown"):
        raise _bad("group_by.keys must be 'public', 'unknown' or {column: [values]}")
    return {"by": by, "keys": keys}


def _parse_agg(raw: Any, i: int) -> Aggregate:
    where = f"aggregates[{i}]"
    if not isinstance(raw, dict):
        raise _bad(f'{where} must be an object such as {{"op": "count"}}')
    unknown = set(raw) - _AGG_KEYS
    if unknown:
        raise _bad(f"{where}: unknown field(s) {sorted(unknown)}", allowed=sorted(_AGG_KEYS))
    op = raw.get("op")
    if not isinstance(op, str) or op not in AGGREGATE_OPS:
        raise _bad(
            f"{where}: aggregate {op!r} is not supported; use one of {', '.join(AGGREGATE_OPS)}"
        )
    column = raw.get("column")
    if column is not None:
        column = _name(column, f"{where}.column")
    elif op != "count":
        raise _bad(f"{where}: '{op}' needs a column")
    bounds = raw.get("bounds")
    if bounds is not None:
        if not isinstance(bounds, list) or len(bounds) != 2:
            raise _bad(f"{where}: bounds must be [lower, upper]")
        lo, hi = (_number(b, f"{where}: bound") for b in bounds)
        if lo >= hi:
            raise _bad(f"{where}: the lower bound {lo} must be below the upper bound {hi}")
        bounds = (lo, hi)
    alpha = raw.get("alpha")
    if op == "quantile":
        alpha = _number(alpha, f"{where}: alpha") if alpha is not None else None
        if alpha is None or not 0 <= alpha <= 1:
            raise _bad(f"{where}: a quantile needs alpha between 0 and 1 (0.5 is the median)")
    elif alpha is not None:
        raise _bad(f"{where}: alpha only applies to quantiles")
    candidates = raw.get("candidates")
    if candidates is not None:
        if op != "quantile":
            raise _bad(f"{where}: candidates only apply to quantiles")
        if not isinstance(candidates, list) or not 2 <= len(candidates) <= MAX_VALUES:
            raise _bad(f"{where}: candidates must be a list of 2 to {MAX_VALUES} numbers")
        candidates = tuple(_number(c, f"{where}: candidate") for c in candidates)
        if any(b <= a for a, b in itertools.pairwise(candidates)):
            raise _bad(f"{where}: candidates must be strictly increasing")
    fill = raw.get("fill_null")
    if fill is not None:
        fill = _number(fill, f"{where}: fill_null")
    alias = raw.get("alias")
    alias = (
        _name(alias, f"{where}.alias") if alias is not None else _default_alias(op, column, alpha)
    )
    return Aggregate(
        op=op,
        column=column,
        bounds=bounds,
        alpha=alpha,
        candidates=candidates,
        fill_null=fill,
        alias=alias,
    )
