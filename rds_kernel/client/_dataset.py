"""A dataset on a node: its public schema, its mock data, and the queries run against it."""

from __future__ import annotations

import dataclasses
import io
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rds_kernel.client._accuracy import at_row_count, needs_row_count, prepare_here
from rds_kernel.client._builder import QueryBuilding
from rds_kernel.client._events import notify_budget
from rds_kernel.client._results import Preview, release_frame, result_frame
from rds_kernel.client._transport import RELEASE_RETRIES, may_have_reached, path
from rds_kernel.errors import (
    NodeUnavailable,
    ProtocolError,
    RdsError,
    SpecError,
    TooManyRequests,
)
from rds_kernel.schema import Schema
from rds_kernel.spec import QuerySpec, validate

if TYPE_CHECKING:  # pragma: no cover - heavy modules are imported on first use
    import pandas as pd
    import polars as pl

    from rds_kernel.client._node import Node


class RemoteDataset(QueryBuilding):
    """A dataset on a node. Build queries from it; they preview, release and run on mock here::

        q = patients.filter(rds.col("age") >= 50).group_by("sex").agg(rds.count())
        q.preview(epsilon=0.5)

    ``schema`` is the owner's public schema (``columns``: its column names). ``mock`` is the
    owner's public mock data (made without looking at private rows), downloaded once and kept.
    The rows themselves are private: ``patients["age"]``, ``patients.head()`` or
    ``len(patients)`` raise a :class:`~rds_kernel.client._builder.PrivateRowsError` saying so.
    """

    sends_jobs = True
    """Whether ``rds.submit`` may send code jobs on this dataset to its node (a ``%%rds --mock``
    or ``--preview`` cell's handle says no: those cells never spend budget)."""

    def __init__(self, node: Node, name: str, schema: Schema) -> None:
        self.node = node
        self.name = name
        self.schema = schema
        self._mock: pl.DataFrame | None = None

    def __repr__(self) -> str:
        n = len(self.schema.columns)
        return f"<RemoteDataset {self.name!r} on {self.node.name}: {n} columns>"

    # ------------------------------------------------------------------ mock data

    @property
    def mock(self) -> pd.DataFrame:
        """The mock data as a pandas DataFrame (a fresh copy each time; downloaded once)."""
        return self.mock_frame().to_pandas()

    def mock_frame(self) -> pl.DataFrame:
        """The mock data as a polars DataFrame, typed per the schema (what run_on_mock uses)."""
        if self._mock is None:
            import polars as pl

            from rds_kernel.mock import check_frame

            route = path("v1", "datasets", self.name, "mock")
            data = self.node._transport.get_bytes(route, params={"format": "parquet"})
            try:
                frame = pl.read_parquet(io.BytesIO(data))
            except (pl.exceptions.PolarsError, OSError) as exc:
                raise ProtocolError(
                    f"the mock data of {self.name!r} from {self.node.name} is not a Parquet "
                    f"file ({type(exc).__name__}); ask the node owner to check the node"
                ) from None
            self._mock = check_frame(frame, self.schema, f"mock data of {self.name!r}")
        return self._mock

    # ------------------------------------------------------------------ running them (QueryRunner)

    def preview(self, spec: QuerySpec) -> Preview:
        """Ask the node what ``spec`` would cost and how accurate it would be. Free.

        A mean's or variance's ± depends on the private row count; where the node could not
        give it, it is computed here at the schema's public row count, else at the mock's
        (:mod:`rds_kernel.client._accuracy`; the rows say ``accuracy_n``).
        """
        from rds_kernel import wire

        self._check(spec)
        answer = self.node._transport.post(
            "/v1/queries/preview", spec.to_dict(), wire.Preview, busy_retries=RELEASE_RETRIES
        )
        preview = Preview.from_wire(answer, self.node.name)
        rows, note = self._accuracy_at_row_count(spec, preview.rows)
        preview = dataclasses.replace(preview, rows=rows, accuracy_note=note)
        notify_budget(self.node.name, answer.budget)
        return preview

    def _accuracy_at_row_count(
        self, spec: QuerySpec, rows: Sequence[Mapping[str, Any]]
    ) -> tuple[tuple[dict[str, Any], ...], str]:
        """Preview ``rows`` with the ± of means and variances the node could not give, at
        the public row count, else the mock's; and the note that says which (see
        :func:`rds_kernel.client._accuracy.at_row_count`). Best effort: unchanged if the
        query cannot be prepared here or the mock data cannot be had."""
        unchanged = tuple(dict(r) for r in rows), ""
        if not needs_row_count(rows):
            return unchanged
        prepared = prepare_here(spec, self.schema)
        if prepared is None:
            return unchanged
        if self.schema.public_row_count is not None:
            return at_row_count(rows, prepared, self.schema.public_row_count, "public")
        try:
            n = self.mock_frame().height
        except RdsError:
            return unchanged
        return at_row_count(rows, prepared, n, "mock")

    def release(self, spec: QuerySpec, request_id: str | None = None) -> pd.DataFrame:
        """Run ``spec`` on the private data; the node charges its exact cost to your budget.

        The ``request_id`` (a fresh random one unless given) is chosen before the first try,
        and lost connections and timeouts are retried with it, so the node charges the
        release once. Budget listeners (:func:`rds_kernel.client.add_budget_listener`) then
        hear your budget after the charge.
        """
        from rds_kernel.wire import ReleaseAnswer

        self._check(spec)
        request_id = request_id if request_id is not None else uuid.uuid4().hex
        body = {"request_id": request_id, "spec": spec.to_dict()}
        transport = self.node._transport
        try:
            answer = transport.post("/v1/queries", body, ReleaseAnswer, retries=RELEASE_RETRIES)
        except (NodeUnavailable, TooManyRequests) as exc:  # keeps its kind
            if isinstance(exc, TooManyRequests) and exc.detail.get("sent") is not True:
                raise  # the node ran nothing, and no earlier try may have reached it
            detail = {**exc.detail, "request_id": request_id}
            if not may_have_reached(exc):
                raise type(exc)(
                    f"{exc.message}. Nothing reached the node, so nothing was charged",
                    detail,
                ) from None
            raise type(exc)(
                f"{exc.message}. The release may have been charged; run it again with "
                f"request_id={request_id!r} to get its answer without paying twice",
                detail,
            ) from None
        frame = release_frame(answer, self.node.name)
        notify_budget(self.node.name, answer.budget)
        return frame

    def run_on_mock(self, spec: QuerySpec) -> pd.DataFrame:
        """Run ``spec`` locally on the mock data through the same DP layer. Sends nothing.

        The answer has the shape of a release; ``attrs["epsilon_spent"]`` is what a release
        would cost, and ``attrs["mock"]`` is True.
        """
        from rds_kernel.dp import execute, prepare

        self._check(spec)
        prepared = prepare(validate(spec, self.schema), self.schema)
        result = execute(prepared, self.mock_frame().lazy())
        epsilon, delta = prepared.cost
        return result_frame(
            result.to_dict(),
            node=self.node.name,
            dataset=self.name,
            epsilon_spent=epsilon,
            delta_spent=delta,
            summary=list(prepared.summary),
            mock=True,
        )

    def _check(self, spec: QuerySpec) -> None:
        if spec.dataset != self.name:
            raise SpecError(
                f"this query is for dataset {spec.dataset!r}, not {self.name!r}; "
                f"build it from node.dataset({spec.dataset!r})"
            )
