"""The query-building entry points shared by every dataset handle (remote and local).

A handle is not a DataFrame: its rows are private. Used like one (``patients["age"]``,
``patients.head()``, ``len(patients)``, iterating it) it says where the public parts are and
how to ask for an answer, with a :class:`PrivateRowsError` (a ``TypeError``; for a DataFrame
attribute, :class:`PrivateRowsAttributeError`, also an ``AttributeError``, so ``hasattr``
says False).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from rds_kernel.spec import Aggregate, Expr, Query

if TYPE_CHECKING:  # pragma: no cover
    from rds_kernel.schema import Schema
    from rds_kernel.spec import QueryRunner
    from rds_kernel.spec._expr import Keys


class PrivateRowsError(TypeError):
    """A dataset handle was used like a DataFrame; its rows are private."""


class PrivateRowsAttributeError(PrivateRowsError, AttributeError):
    """A DataFrame attribute (``head``, ``shape``, ``iloc``...) asked of a dataset handle."""


FRAME_ATTRIBUTES = frozenset(
    {
        # pandas
        *("head", "tail", "shape", "size", "ndim", "empty", "index", "values", "dtypes"),
        *("iloc", "loc", "at", "iat", "T", "info", "describe", "sample", "nunique"),
        *("value_counts", "unique", "groupby", "pivot_table", "merge", "sort_values"),
        *("iterrows", "itertuples", "items", "to_numpy", "to_dict", "to_csv", "to_parquet"),
        *("to_excel", "to_json", "to_string", "to_records", "to_list", "tolist", "plot"),
        *("mean", "sum", "count", "min", "max", "median", "std", "var", "quantile", "corr"),
        # polars
        *("height", "width", "rows", "row", "iter_rows", "glimpse", "select", "collect"),
        *("lazy", "sort", "join", "n_unique", "null_count", "to_pandas", "to_polars"),
        *("to_arrow", "write_csv", "write_parquet"),
        # a frame a handle might be thought to hold
        *("data", "df", "frame"),
    }
)
"""DataFrame attributes that a dataset handle answers with :class:`PrivateRowsAttributeError`."""


class QueryBuilding:
    """Starts queries bound to ``self`` as their runner; the subclass runs them."""

    name: str
    schema: Schema

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

    # ------------------------------------------------------------------ not a DataFrame

    @property
    def columns(self) -> list[str]:
        """The names of the dataset's columns (public: they are in the schema)."""
        return self.schema.names

    def _private_rows(self) -> str:
        """What to use instead of the rows (the handle's class says what it has)."""
        name = self.name if self.name.isidentifier() else "dataset"
        return (
            f"rows are private: use `{name}.mock` or `{name}.schema` (or build a query: "
            f"{name}.agg(...))"
        )

    def __getitem__(self, key: object) -> NoReturn:
        raise PrivateRowsError(f"{self.name}[{key!r}]: {self._private_rows()}")

    def __len__(self) -> NoReturn:
        raise PrivateRowsError(
            f"len({self.name}): {self._private_rows()}; a DP count is {self.name}.agg(rds.count())"
        )

    def __iter__(self) -> Iterator[Any]:
        raise PrivateRowsError(f"iterating over {self.name}: {self._private_rows()}")

    def __bool__(self) -> bool:
        return True  # a handle is always there (without this, `if ds:` would call __len__)

    if not TYPE_CHECKING:  # (hidden from mypy, which would accept any attribute otherwise)

        def __getattr__(self, attribute: str) -> NoReturn:
            # only for attributes the class and the instance lack
            if attribute in FRAME_ATTRIBUTES:
                message = f"{self.name}.{attribute}: {self._private_rows()}"
                error = PrivateRowsAttributeError(message)
                error.name, error.obj = attribute, self
                raise error
            raise AttributeError(
                f"{type(self).__name__!r} object has no attribute {attribute!r}",
                name=attribute,
                obj=self,
            )
