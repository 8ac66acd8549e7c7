"""What the store hands out: plain frozen records, detached from any database session.

Each record has ``to_dict()`` giving a JSON-safe dict (timestamps as ISO 8601 strings in UTC),
which is what the HTTP app sends and the CLI prints.
"""

from __future__ import annotations

import copy
import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["AuditEntry", "BudgetLine", "BudgetView", "ChargeResult", "Release", "Role", "User"]

Role = Literal["owner", "scientist"]


@dataclass(frozen=True)
class User:
    """A person with an API token: the data owner or a data scientist."""

    id: int
    name: str
    role: Role
    disabled: bool
    created_at: dt.datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "disabled": self.disabled,
            "created_at": self.created_at.isoformat(),
        }


@dataclass(frozen=True)
class Release:
    """An answer that was charged to the ledger, stored under the scientist's ``request_id``."""

    request_id: str
    user: str
    dataset: str
    spec_hash: str
    epsilon: float
    delta: float
    answer: dict[str, Any]
    created_at: dt.datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "user": self.user,
            "dataset": self.dataset,
            "spec_hash": self.spec_hash,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "answer": copy.deepcopy(self.answer),
            "created_at": self.created_at.isoformat(),
        }


@dataclass(frozen=True)
class ChargeResult:
    """The outcome of a charge: the release, and whether it was a replay that cost nothing."""

    release: Release
    replayed: bool
    budget: BudgetView | None = None  # the user's balance right after the charge

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"release": self.release.to_dict(), "replayed": self.replayed}
        if self.budget is not None:
            out["budget"] = self.budget.to_dict()
        return out


@dataclass(frozen=True)
class AuditEntry:
    """One row of the append-only audit log."""

    id: int
    created_at: dt.datetime
    actor: str
    action: str
    detail: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "created_at": self.created_at.isoformat(),
            "actor": self.actor,
            "action": self.action,
            "detail": copy.deepcopy(self.detail),
        }


@dataclass(frozen=True)
class BudgetLine:
    """Total, spent and remaining privacy loss (epsilon, delta) of one budget scope."""

    epsilon_total: float
    epsilon_spent: float
    epsilon_remaining: float
    delta_total: float
    delta_spent: float
    delta_remaining: float

    @classmethod
    def of(
        cls, epsilon_total: float, delta_total: float, epsilon_spent: float, delta_spent: float
    ) -> BudgetLine:
        return cls(
            epsilon_total=epsilon_total,
            epsilon_spent=epsilon_spent,
            epsilon_remaining=epsilon_total - epsilon_spent,
            delta_total=delta_total,
            delta_spent=delta_spent,
            delta_remaining=delta_total - delta_spent,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "epsilon_total": self.epsilon_total,
            "epsilon_spent": self.epsilon_spent,
            "epsilon_remaining": self.epsilon_remaining,
            "delta_total": self.delta_total,
            "delta_spent": self.delta_spent,
            "delta_remaining": self.delta_remaining,
        }


@dataclass(frozen=True)
class BudgetView(BudgetLine):
    """A user's node-wide budget, plus the per-dataset caps the owner set for them."""

    user: str
    per_dataset: dict[str, BudgetLine]

    def to_dict(self) -> dict[str, Any]:
        return {
            "user": self.user,
            **super().to_dict(),
            "per_dataset": {name: line.to_dict() for name, line in self.per_dataset.items()},
        }
