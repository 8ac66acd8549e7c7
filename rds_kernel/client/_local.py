"""A dataset on your own machine, queried through the same DP layer as a node: for learning.

The course uses it to run an attack thousands of times on a small table it can see, with the
noise a node would add, without a node and without spending anyone's budget::

    staff = rds.LocalDataset(frame, {"columns": {"cvd": {"type": "int", "bounds": [0, 1]}}})
    staff.filter(rds.col("cvd") == 1).agg(rds.count()).release(epsilon=1.0)

A release here is not private in any useful sense — you hold the rows — and no ledger records
it: it shows what a node would answer, and looks like one (a preview is a
:class:`~rds_kernel.client.Preview`, an answer a DataFrame with its ±). Each query is prepared
(compiled, calibrated, verified) once and then only executed, so repeating a release costs
about a millisecond.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from rds_kernel.client._accuracy import at_row_count
from rds_kernel.client._builder import QueryBuilding
from rds_kernel.client._results import Preview, result_frame
from rds_kernel.errors import SpecError
from rds_kernel.schema import Schema
from rds_kernel.spec import QuerySpec, validate

if TYPE_CHECKING:  # pragma: no cover - heavy modules are imported on first use
    import pandas as pd
    import polars as pl

    from rds_kernel.dp import PreparedQuery

LOCAL = "local"
"""What answers of a local dataset give as their node (``df.attrs["node"]``)."""


class LocalDataset(QueryBuilding):
    """A pandas (or polars) DataFrame with a schema, queried like a node's dataset.

    ``schema`` is a :class:`rds_kernel.schema.Schema` or the same mapping a schema file holds
    (``{"columns": {"age": {"type": "int", "bounds": [0, 120]}}}``). The frame is checked
    against it as a node checks its private data. Queries built from it release locally with
    real OpenDP noise; ``preview`` gives each aggregate's mechanism, noise scale and ± accuracy.
    Like a node's dataset it does not act as a DataFrame (``data["age"]`` or ``len(data)``
    raise a :class:`~rds_kernel.client._builder.PrivateRowsError`): keep the frame you gave it.
    """

    def __init__(
        self,
        frame: pd.DataFrame | pl.DataFrame,
        schema: Schema | Mapping[str, Any],
        *,
        name: str = "local",
    ) -> None:
        import polars as pl

        from rds_kernel.mock import check_frame

        if not isinstance(schema, Schema):
            schema = Schema.from_dict({"name": name, **schema}, source=f"schema of {name!r}")
        self.name = name
        self.schema = schema.with_name(name)
        data = frame if isinstance(frame, pl.DataFrame) else pl.from_pandas(frame)
        self._frame = check_frame(data, self.schema, f"local dataset {name!r}")
        self._prepared: dict[str, PreparedQuery] = {}

    def __repr__(self) -> str:
        return f"<LocalDataset {self.name!r}: {len(self.schema.columns)} columns>"

    # ------------------------------------------------------------------ running them (QueryRunner)

    def _private_rows(self) -> str:
        name = self.name if self.name.isidentifier() else "dataset"
        return (
            "rows are private on a node, and a LocalDataset answers as a node would: use "
            f"`{name}.schema` (or build a query: {name}.agg(...)); the frame you gave it is "
            "still yours"
        )

    def preview(self, spec: QuerySpec) -> Preview:
        """What a release would cost, and per aggregate its mechanism, noise scale and ±
        accuracy (95%): a :class:`~rds_kernel.client.Preview`, as a node's, without a budget.

        A mean's or variance's ± is given at the schema's public row count, else at the
        local data's row count (``accuracy_note`` says which).
        """
        prepared = self._prepare(spec)
        n = self.schema.public_row_count
        rows, note = at_row_count(
            prepared.summary,
            prepared,
            self._frame.height if n is None else n,
            "local" if n is None else "public",
        )
        epsilon, delta = prepared.cost
        return Preview(
            node=LOCAL,
            dataset=self.name,
            epsilon=epsilon,
            delta=delta,
            requested_epsilon=spec.epsilon,
            requested_delta=spec.delta,
            rows=rows,
            budget=None,
            accuracy_note=note,
        )

    def release(self, spec: QuerySpec, request_id: str | None = None) -> pd.DataFrame:
        """The answer a node would release for ``spec``, with fresh noise; nothing is charged."""
        from rds_kernel.dp import execute

        prepared = self._prepare(spec)
        result = execute(prepared, self._frame.lazy())
        epsilon, delta = prepared.cost
        return result_frame(
            result.to_dict(),
            node=LOCAL,
            dataset=self.name,
            epsilon_spent=epsilon,
            delta_spent=delta,
            summary=list(prepared.summary),
            mock=False,
            request_id=request_id,
        )

    def run_on_mock(self, spec: QuerySpec) -> pd.DataFrame:
        """The same as :meth:`release`: a local dataset is its own mock."""
        return self.release(spec)

    def _prepare(self, spec: QuerySpec) -> PreparedQuery:
        from rds_kernel.dp import prepare

        if spec.dataset != self.name:
            raise SpecError(
                f"this query is for dataset {spec.dataset!r}, not {self.name!r}; build it from "
                "this dataset"
            )
        key = json.dumps(spec.to_dict(), sort_keys=True)
        if key not in self._prepared:
            self._prepared[key] = prepare(validate(spec, self.schema), self.schema)
        return self._prepared[key]
