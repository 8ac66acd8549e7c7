"""The query spec: what a scientist asks for, as data.

A query is a small JSON document (never code, never pickled or polars-serialized plans): a
filter, derived columns, an optional group-by and a list of aggregates, plus the privacy loss
(``epsilon``, ``delta``) the scientist is willing to spend. The same module serves both sides:

* the scientist builds specs with a fluent API (:func:`col`, :func:`count`, :class:`Query`, …);
* the node parses untrusted JSON with :meth:`QuerySpec.from_dict` and checks it against the
  dataset schema with :func:`validate`, which resolves every type, bound, candidate list and
  group key so the DP layer compiles a fully-known query. Literals and group keys are parsed
  strictly into their column's type (and keys must then be unique); an aggregate's bounds must
  be finite, within ``±MAX_BOUND`` and at least ``MIN_WIDTH`` apart.

>>> q = Query("patients").filter(col("age") >= 50).group_by("sex")
>>> q = q.agg(count(), mean("cvd", bounds=(0, 1)))
>>> q.spec(epsilon=0.5).to_dict()["aggregates"][1]["op"]
'mean'
"""

from rds_kernel.spec._expr import (
    AGGREGATE_OPS,
    MAX_BOUND,
    MAX_EPSILON,
    MAX_GROUPS,
    MIN_EPSILON,
    MIN_WIDTH,
    Aggregate,
    Expr,
    bin_labels,
    col,
    count,
    lit,
    mean,
    median,
    quantile,
    sum,
    variance,
)
from rds_kernel.spec._query import Query, QueryRunner
from rds_kernel.spec._validate import (
    ColumnInfo,
    ResolvedAggregate,
    ValidatedQuery,
    expr_info,
    validate,
)
from rds_kernel.spec._wire import QuerySpec, number

__all__ = [
    "AGGREGATE_OPS",
    "MAX_BOUND",
    "MAX_EPSILON",
    "MAX_GROUPS",
    "MIN_EPSILON",
    "MIN_WIDTH",
    "Aggregate",
    "ColumnInfo",
    "Expr",
    "Query",
    "QueryRunner",
    "QuerySpec",
    "ResolvedAggregate",
    "ValidatedQuery",
    "bin_labels",
    "col",
    "count",
    "expr_info",
    "lit",
    "mean",
    "median",
    "number",
    "quantile",
    "sum",
    "validate",
    "variance",
]
