"""The query-building entry points shared by every dataset handle (remote and local)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rds_kernel.spec import Aggregate, Expr, Query

if TYPE_CHECKING:  # pragma: no cover
    from rds_kernel.spec import QueryRunner
    from rds_kernel.spec._expr import Keys


class QueryBuilding:
    """Starts queries bound to ``self`` as their runner; the subclass runs them."""

    name: str

    def query(self) -> Query:
        """An empty query on this dataset (``count()`` of all rows until you add aggregates)."""
        runner: QueryRunner = self  # type: ignore[assignment]
        return Query(self.name, runner=runner)

    def filter(self, *conditions: Expr) -> Query:
        """Keep rows where every condition holds, e.g. ``filter(rds.col("age") >= 50)``."""
        return self.query().filter(*conditions)

    def with_columns(self, **exprs: Expr) -> Query:
        """Add derived columns, e.g. ``with_columns(age_band=rds.col("age").bin([40, 65]))``."""
        return self.query().with_columns(**exprs)

    def group_by(self, *columns: str, keys: Keys = "public") -> Query:
        """Group by columns with public keys; see :meth:`rds_kernel.Query.group_by`."""
        return self.query().group_by(*columns, keys=keys)

    def agg(self, *aggregates: Aggregate) -> Query:
        """Aggregates over all rows, e.g. ``agg(rds.count(), rds.mean("age"))``."""
        return self.query().agg(*aggregates)

    def histogram(self, column: str, edges: Sequence[float], *, name: str | None = None) -> Query:
        """Counts per bin of ``column``, with underflow and overflow bins."""
        return self.query().histogram(column, edges, name=name)
