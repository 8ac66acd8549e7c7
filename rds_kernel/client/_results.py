"""What the client hands back: :class:`Preview` and result DataFrames (the budget is
:class:`rds_kernel.wire.Budget`, the node's own record, exported as ``rds.Budget``).

A released answer is a pandas DataFrame (group keys, then one column per aggregate) whose
``attrs`` record where it came from and what it cost. It is a
:class:`~rds_kernel.client._frame.ResultFrame`, a DataFrame that a notebook shows with each
value's ± (frames derived from it are plain DataFrames):

=================  ===============================================================
``node``           the node's name (as given to ``rds.connect``)
``dataset``        the dataset queried
``epsilon_spent``  privacy loss charged (the exact cost, not the requested epsilon)
``delta_spent``    delta charged
``accuracy``       ``{alias: ±}`` half-width of the 95% interval per aggregate (or None)
``summary``        one dict per aggregate: statistic, mechanism, scale, accuracy, threshold
``request_id``     the id the node stored the answer under (None for mock runs)
``replayed``       True when the node returned a stored answer and charged nothing
``mock``           True when computed locally on mock data; nothing was sent to the node
``created_at``     when the node recorded the release (None for mock runs)
=================  ===============================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rds_kernel.client._html import preview_html, preview_table

if TYPE_CHECKING:  # pragma: no cover - pandas and pydantic are imported when a result is built
    import pandas as pd

    from rds_kernel import wire
    from rds_kernel.wire import Budget

SUMMARY_COLUMNS = ("aggregate", "statistic", "mechanism", "scale", "accuracy", "threshold")
RELEASE_COLUMNS = ("request_id", "dataset", "epsilon", "delta", "created_at", "spec")


@dataclass(frozen=True, eq=False)
class Preview:
    """What a release would cost and how accurate it would be. Getting it spends nothing.

    ``epsilon``/``delta`` are the exact cost the node would charge (at most what was
    requested); ``summary`` has one row per aggregate with its mechanism, noise scale and
    ± accuracy (95%); ``budget`` is your budget now, before any release (``None`` for a
    :class:`~rds_kernel.client.LocalDataset`, which keeps no budget).

    A mean's or variance's ± depends on the private row count n. Where the node could not give
    it, the client computes it at a row count it can know (:mod:`rds_kernel.client._accuracy`):
    such rows have ``accuracy_n``, and ``accuracy_note`` says which n that is.
    """

    node: str
    dataset: str
    epsilon: float
    delta: float
    requested_epsilon: float
    requested_delta: float
    rows: tuple[Mapping[str, Any], ...]
    budget: Budget | None
    accuracy_note: str = ""

    @classmethod
    def from_wire(cls, answer: wire.Preview, node: str) -> Preview:
        """The preview of a node's ``POST /v1/queries/preview`` answer."""
        return cls(
            node=node,
            dataset=answer.dataset,
            epsilon=answer.cost.epsilon,
            delta=answer.cost.delta,
            requested_epsilon=answer.requested.epsilon,
            requested_delta=answer.requested.delta,
            rows=tuple(_rows(answer.summary)),
            budget=answer.budget,
        )

    @property
    def summary(self) -> pd.DataFrame:
        """One row per aggregate: statistic, mechanism, noise scale, ± accuracy, threshold."""
        import pandas as pd

        frame = pd.DataFrame([dict(r) for r in self.rows])
        known = [c for c in SUMMARY_COLUMNS if c in frame.columns]
        return frame[known + [c for c in frame.columns if c not in SUMMARY_COLUMNS]]

    @property
    def affordable(self) -> bool:
        """Whether your node-wide budget covers this release now (always, locally)."""
        if self.budget is None:
            return True
        return (
            self.epsilon <= self.budget.epsilon_remaining
            and self.delta <= self.budget.delta_remaining
        )

    def __repr__(self) -> str:
        """The card as text: the cost, then per aggregate its mechanism, scale and ±."""
        return repr(preview_table(self))

    def _repr_html_(self) -> str:
        """The same card as ``%load_ext rds_kernel`` shows (:func:`~._html.preview_table`)."""
        return preview_html(self)


def result_frame(
    result: Mapping[str, Any],
    *,
    node: str,
    dataset: str,
    epsilon_spent: float,
    delta_spent: float,
    summary: list[dict[str, Any]],
    mock: bool,
    request_id: str | None = None,
    replayed: bool = False,
    created_at: str | None = None,
) -> pd.DataFrame:
    """The DataFrame of one answer (``{"columns", "rows", "accuracy"}``), with its attrs.

    A :class:`~rds_kernel.client._frame.ResultFrame`: a notebook shows its ± without
    ``%load_ext rds_kernel``.
    """
    from rds_kernel.client._frame import ResultFrame

    columns = [str(c) for c in result["columns"]]
    frame = ResultFrame(list(result["rows"]), columns=columns)
    frame.attrs.update(
        node=node,
        dataset=dataset,
        epsilon_spent=float(epsilon_spent),
        delta_spent=float(delta_spent),
        accuracy=dict(result.get("accuracy") or {}),
        summary=[dict(r) for r in summary],
        request_id=request_id,
        replayed=bool(replayed),
        mock=mock,
        created_at=created_at,
    )
    return frame


def release_frame(answer: wire.ReleaseAnswer, node: str) -> pd.DataFrame:
    """The DataFrame of a ``POST /v1/queries`` answer."""
    return result_frame(
        answer.result.model_dump(),
        node=node,
        dataset=answer.dataset,
        epsilon_spent=answer.cost.epsilon,
        delta_spent=answer.cost.delta,
        summary=_rows(answer.summary),
        mock=False,
        request_id=answer.request_id,
        replayed=answer.replayed,
        created_at=answer.created_at,
    )


def releases_frame(answer: wire.Releases) -> pd.DataFrame:
    """Your past releases on a node, newest first as the node sends them."""
    import pandas as pd

    rows = [r.model_dump() for r in answer.releases]
    frame = pd.DataFrame(rows, columns=list(RELEASE_COLUMNS) if not rows else None)
    if "created_at" in frame.columns:
        frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True, format="ISO8601")
    return frame


def _rows(summary: list[wire.SummaryRow]) -> list[dict[str, Any]]:
    """Summary rows as dicts, without the keys the node left out (older nodes send no note)."""
    return [row.model_dump(exclude_unset=True) for row in summary]
