"""What the client hands back: :class:`Budget`, :class:`Preview` and result DataFrames.

A released answer is a pandas DataFrame (group keys, then one column per aggregate) whose
``attrs`` record where it came from and what it cost:

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

import html
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rds_kernel.errors import NodeUnavailable

if TYPE_CHECKING:  # pragma: no cover - pandas is imported when a result is built
    import pandas as pd

SUMMARY_COLUMNS = ("aggregate", "statistic", "mechanism", "scale", "accuracy", "threshold")
RELEASE_COLUMNS = ("request_id", "dataset", "epsilon", "delta", "created_at", "spec")


def require(body: Any, key: str, where: str) -> Any:
    """``body[key]``, or NodeUnavailable when the node's answer does not have it."""
    if not isinstance(body, Mapping) or key not in body:
        raise NodeUnavailable(
            f"the node's answer to {where} has no {key!r}; the node may run another version "
            "of rds_kernel than this client (see node.info['version'])"
        )
    return body[key]


@dataclass(frozen=True)
class Budget:
    """Privacy loss allowed, spent and left, for you on one node (or one dataset of it).

    ``per_dataset`` holds the caps the owner set on single datasets, as ``Budget`` values of
    their own (with an empty ``per_dataset``).
    """

    user: str
    epsilon_total: float
    epsilon_spent: float
    epsilon_remaining: float
    delta_total: float
    delta_spent: float
    delta_remaining: float
    per_dataset: Mapping[str, Budget] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: Any) -> Budget:
        where = "GET /v1/budget"
        user = str(require(raw, "user", where))
        per = raw.get("per_dataset") or {}
        return cls(
            **_line(raw, user, where),
            per_dataset={
                str(name): cls(**_line(line, user, f"{where} per_dataset[{name!r}]"))
                for name, line in per.items()
            },
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "user": self.user,
            "epsilon_total": self.epsilon_total,
            "epsilon_spent": self.epsilon_spent,
            "epsilon_remaining": self.epsilon_remaining,
            "delta_total": self.delta_total,
            "delta_spent": self.delta_spent,
            "delta_remaining": self.delta_remaining,
            "per_dataset": {n: b.to_dict() for n, b in self.per_dataset.items()},
        }

    def __str__(self) -> str:
        return (
            f"{self.user}: ε {self.epsilon_remaining:g} left of {self.epsilon_total:g} "
            f"(spent {self.epsilon_spent:g}), δ {self.delta_remaining:g} left of "
            f"{self.delta_total:g}"
        )


_BUDGET_KEYS = (
    "epsilon_total",
    "epsilon_spent",
    "epsilon_remaining",
    "delta_total",
    "delta_spent",
    "delta_remaining",
)


def _line(raw: Any, user: str, where: str) -> dict[str, Any]:
    return {"user": user, **{k: float(require(raw, k, where)) for k in _BUDGET_KEYS}}


@dataclass(frozen=True, eq=False)
class Preview:
    """What a release would cost and how accurate it would be. Getting it spends nothing.

    ``epsilon``/``delta`` are the exact cost the node would charge (at most what was
    requested); ``summary`` has one row per aggregate with its mechanism, noise scale and
    ± accuracy (95%); ``budget`` is your budget now, before any release.
    """

    node: str
    dataset: str
    epsilon: float
    delta: float
    requested_epsilon: float
    requested_delta: float
    rows: tuple[Mapping[str, Any], ...]
    budget: Budget

    @classmethod
    def from_dict(cls, raw: Any, node: str) -> Preview:
        where = "POST /v1/queries/preview"
        cost, requested = require(raw, "cost", where), require(raw, "requested", where)
        return cls(
            node=node,
            dataset=str(require(raw, "dataset", where)),
            epsilon=float(require(cost, "epsilon", where)),
            delta=float(require(cost, "delta", where)),
            requested_epsilon=float(require(requested, "epsilon", where)),
            requested_delta=float(require(requested, "delta", where)),
            rows=tuple(dict(r) for r in require(raw, "summary", where)),
            budget=Budget.from_dict(require(raw, "budget", where)),
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
        """Whether your node-wide budget covers this release now."""
        return (
            self.epsilon <= self.budget.epsilon_remaining
            and self.delta <= self.budget.delta_remaining
        )

    def _headline(self) -> str:
        cost = f"ε={self.epsilon:g}" + (f", δ={self.delta:g}" if self.delta else "")
        left = f"ε {self.budget.epsilon_remaining:g} of {self.budget.epsilon_total:g} left"
        warn = "" if self.affordable else " — more than your remaining budget"
        return f"Preview of {self.dataset!r} on {self.node}: costs {cost} ({left}){warn}"

    def __repr__(self) -> str:
        if not self.rows:
            return self._headline()
        return f"{self._headline()}\n{self.summary.to_string(index=False)}"

    def _repr_html_(self) -> str:
        table = self.summary.to_html(index=False, na_rep="", border=0) if self.rows else ""
        return f"<div><p><b>{html.escape(self._headline())}</b></p>{table}</div>"


def result_frame(
    result: Any,
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
    """The DataFrame of one answer (``{"columns", "rows", "accuracy"}``), with its attrs."""
    import pandas as pd

    where = "the query"
    columns = [str(c) for c in require(result, "columns", where)]
    frame = pd.DataFrame(list(require(result, "rows", where)), columns=columns)
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


def release_frame(raw: Any, node: str) -> pd.DataFrame:
    """The DataFrame of a ``POST /v1/queries`` answer."""
    where = "POST /v1/queries"
    cost = require(raw, "cost", where)
    return result_frame(
        require(raw, "result", where),
        node=node,
        dataset=str(require(raw, "dataset", where)),
        epsilon_spent=float(require(cost, "epsilon", where)),
        delta_spent=float(require(cost, "delta", where)),
        summary=list(raw.get("summary") or []),
        mock=False,
        request_id=str(require(raw, "request_id", where)),
        replayed=bool(raw.get("replayed", False)),
        created_at=raw.get("created_at"),
    )


def releases_frame(raw: Any) -> pd.DataFrame:
    """Your past releases on a node, newest first as the node sends them."""
    import pandas as pd

    rows = list(require(raw, "releases", "GET /v1/releases"))
    frame = pd.DataFrame(rows, columns=list(RELEASE_COLUMNS) if not rows else None)
    if "created_at" in frame.columns:
        frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True, format="ISO8601")
    return frame
