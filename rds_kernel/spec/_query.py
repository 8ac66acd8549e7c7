"""The fluent, immutable query builder a scientist uses."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from rds_kernel.spec._expr import Aggregate, Expr, Keys, _as_expr, _bad, col, count
from rds_kernel.spec._wire import QuerySpec

if TYPE_CHECKING:  # pragma: no cover - pandas is imported lazily on the scientist side
    import pandas as pd

# --------------------------------------------------------------------------- the builder


class QueryRunner(Protocol):
    """Whatever can run a query: a remote dataset on a node, or its mock stand-in."""

    def preview(self, spec: QuerySpec) -> Any: ...

    def release(self, spec: QuerySpec, request_id: str | None = None) -> pd.DataFrame: ...

    def run_on_mock(self, spec: QuerySpec) -> pd.DataFrame: ...


@dataclass(frozen=True)
class Query:
    """An immutable query builder; every method returns a new query.

    A query made from a dataset handle (``node.dataset("patients")``) carries its runner, so
    ``preview``/``release``/``run_on_mock`` work directly on it.
    """

    dataset: str
    filters: tuple[dict[str, Any], ...] = ()
    derived: tuple[tuple[str, dict[str, Any]], ...] = ()
    grouping: dict[str, Any] | None = None
    aggregates: tuple[Aggregate, ...] = ()
    runner: QueryRunner | None = field(default=None, compare=False, repr=False)

    def filter(self, *conditions: Expr) -> Query:
        """Keep rows where every condition holds."""
        return replace(self, filters=(*self.filters, *(_as_expr(c).node for c in conditions)))

    def with_columns(self, **exprs: Expr) -> Query:
        """Add derived columns, e.g. ``with_columns(age_band=rds.col("age").bin([40, 65]))``."""
        new = tuple((name, _as_expr(e).node) for name, e in exprs.items())
        return replace(self, derived=(*self.derived, *new))

    def group_by(self, *columns: str, keys: Keys = "public") -> Query:
        """Group by columns with public keys (schema categories, bools, bins, or ``keys=``).

        ``keys="unknown"`` releases only groups that pass a noisy threshold; it needs delta > 0.
        """
        return replace(self, grouping={"by": list(columns), "keys": keys})

    def agg(self, *aggregates: Aggregate) -> Query:
        return replace(self, aggregates=(*self.aggregates, *aggregates))

    def histogram(self, column: str, edges: Sequence[float], *, name: str | None = None) -> Query:
        """Counts per bin of ``column`` (with underflow and overflow bins); keys are public."""
        name = name or f"{column}_bin"
        return self.with_columns(**{name: col(column).bin(edges)}).group_by(name).agg(count())

    def spec(self, epsilon: float, delta: float = 0.0) -> QuerySpec:
        """The wire spec of this query at the given privacy loss (shape-checked)."""
        filt: dict[str, Any] | None = None
        if len(self.filters) == 1:
            filt = self.filters[0]
        elif self.filters:
            filt = {"op": "and", "args": list(self.filters)}
        raw = QuerySpec(
            dataset=self.dataset,
            aggregates=self.aggregates or (count(),),
            epsilon=epsilon,
            delta=delta,
            filter=filt,
            with_columns=self.derived,
            group_by=self.grouping,
        ).to_dict()
        return QuerySpec.from_dict(raw)

    def _runner(self) -> QueryRunner:
        if self.runner is None:
            raise _bad(
                "this query is not bound to a dataset; build it from "
                "node.dataset(name) to preview or release it"
            )
        return self.runner

    def preview(self, epsilon: float, delta: float = 0.0) -> Any:
        """Cost and ± accuracy of each aggregate at this privacy loss. Spends nothing."""
        return self._runner().preview(self.spec(epsilon, delta))

    def release(
        self, epsilon: float, delta: float = 0.0, request_id: str | None = None
    ) -> pd.DataFrame:
        """Run on the private data and spend the privacy loss. Returns noisy values."""
        return self._runner().release(self.spec(epsilon, delta), request_id)

    def run_on_mock(self, epsilon: float = 1.0, delta: float = 0.0) -> pd.DataFrame:
        """Run the same spec locally on the mock data, through the same DP layer. Free."""
        return self._runner().run_on_mock(self.spec(epsilon, delta))
