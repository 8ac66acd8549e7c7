"""A preview's ± for means and variances at a row count, computed here from public facts.

A mean (or variance) is a noisy sum over the noisy row count ``n``, so its ± depends on ``n``,
which is private. The node's preview gives the ± only when ``n`` is public (the schema's
``public_row_count``, and a query that neither filters nor groups); otherwise it sends ``None``
and the formula in the row's note. The client then fills in a number without changing what
the node sent: it prepares the same query here, on the public schema alone (compile and
calibrate; no data), checks that its noise scales are the node's, and computes the ± the node
would give at ``n`` — the worst case over the data, by the DP layer's own
:func:`rds_kernel.dp.accuracy.summarize`. ``n`` is the public row count when the schema
declares one, else the mock data's row count (a :class:`~rds_kernel.client.LocalDataset`'s
own). A row filled in here has ``accuracy_n`` (the ``n`` used), and the preview says which
``n`` that is in :attr:`~rds_kernel.client.Preview.accuracy_note`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from rds_kernel.errors import RdsError
from rds_kernel.schema import Schema
from rds_kernel.spec import QuerySpec, validate

if TYPE_CHECKING:  # pragma: no cover - the DP layer is imported when first needed
    from rds_kernel.dp import PreparedQuery

Basis = Literal["public", "mock", "local"]

DEPENDS_ON_N = frozenset({"mean", "variance"})
"""Statistics whose ± depends on the (private) row count."""

_WHY = {
    "public": "the dataset's public row count",
    "mock": "the mock's size; the private n is not public",
    "local": "the size of the local data",
}


def needs_row_count(rows: Sequence[Mapping[str, Any]]) -> bool:
    """Whether some row is a mean or variance the node gave no ± for."""
    return any(r.get("statistic") in DEPENDS_ON_N and r.get("accuracy") is None for r in rows)


def prepare_here(spec: QuerySpec, schema: Schema) -> PreparedQuery | None:
    """``spec`` prepared on this machine from the public schema (``None`` if that fails)."""
    from rds_kernel.dp import prepare

    try:
        return prepare(validate(spec, schema), schema)
    except RdsError:  # the node accepted it; a client of another version may not: no estimate
        return None


def at_row_count(
    rows: Sequence[Mapping[str, Any]], prepared: PreparedQuery, n: int, basis: Basis
) -> tuple[tuple[dict[str, Any], ...], str]:
    """``rows`` with the missing ± of means and variances computed at ``n`` rows, and the note
    that says so (``""`` when none was filled in)."""
    from rds_kernel.dp.accuracy import summarize

    out = tuple(dict(r) for r in rows)
    if n < 1 or not needs_row_count(out):
        return out, ""
    here = {r["aggregate"]: r for r in prepared.summary}
    compiled = prepared.compiled
    at_n = {r["aggregate"]: r for r in summarize(compiled, prepared.noise, prepared.threshold, n)}
    filled = False
    for row in out:
        name = row.get("aggregate")
        mine, estimate = here.get(name), at_n.get(name)
        if (
            row.get("statistic") in DEPENDS_ON_N
            and row.get("accuracy") is None
            and mine is not None
            and estimate is not None
            and estimate["accuracy"] is not None
            and mine["statistic"] == row.get("statistic")
            and _same(mine["scale"], row.get("scale"))
        ):
            row.update(accuracy=estimate["accuracy"], accuracy_n=n)
            filled = True
    if not filled:
        return out, ""
    note = f"± at n = {n} ({_WHY[basis]})"
    if compiled.filtered or compiled.group_by:
        note += "; a filter or a group keeps fewer rows, and their ± is larger"
    return out, note


def _same(a: Any, b: Any) -> bool:
    """Whether two noise scales are the same (the node's and ours, through JSON)."""
    if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in (a, b)):
        return False
    return math.isclose(float(a), float(b), rel_tol=1e-9)
