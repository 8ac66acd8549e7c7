"""A dataset on your own machine, queried through the same DP layer as a node: for learning.

The course uses it to run an attack thousands of times on a small table it can see, with the
noise a node would add, without a node and without spending anyone's budget::

    staff = rds.LocalDataset(frame, {"columns": {"cvd": {"type": "int", "bounds": [0, 1]}}})
    staff.filter(rds.col("cvd") == 1).agg(rds.count()).release(epsilon=1.0)

A release here is not private in any useful sense — you hold the rows — and no ledger records
it: it shows what a node would answer. Each query is prepared (compiled, calibrated, verified)
once and then only executed, so repeating a release costs about a millisecond.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from rds_kernel.client._builder import QueryBuilding
from rds_kernel.client._results import result_frame
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

    def preview(self, spec: QuerySpec) -> pd.DataFrame:
        """Per aggregate: mechanism, noise scale and ± accuracy (95%); ``attrs`` has the cost."""
        import pandas as pd

        prepared = self._prepare(spec)
        frame = pd.DataFrame([dict(row) for row in prepared.summary])
        frame.attrs.update(epsilon=prepared.cost[0], delta=prepared.cost[1])
        return frame

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
