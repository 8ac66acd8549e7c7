"""What the store hands out and takes in: plain frozen records, and the rules for its values.

Each record it hands out is detached from any database session and has ``to_wire()``, its body
in the HTTP API (a model of :mod:`rds_kernel.wire`, timestamps as ISO 8601 strings in UTC), and
``to_dict()``, that body as JSON (what the CLI prints). The budget records are the wire's own:
:class:`BudgetLine` and :class:`BudgetView` (``wire.Budget``), defined once for the node, the
client and the JupyterLab sidebar. What it takes in has one rule each, here: a privacy loss is a
:class:`PrivacyLoss` (ε and δ finite and ≥ 0, δ below 1) and a request id passes
:func:`check_request_id`.
"""

from __future__ import annotations

import copy
import datetime as dt
import math
import re
from dataclasses import dataclass
from typing import Any, Literal

from rds_kernel import wire
from rds_kernel.errors import BadRequest
from rds_kernel.wire import Budget, BudgetLine

__all__ = [
    "AuditEntry",
    "BudgetLine",
    "BudgetView",
    "ChargeResult",
    "PrivacyLoss",
    "Release",
    "Role",
    "User",
    "check_request_id",
]

Role = Literal["owner", "scientist"]

BudgetView = Budget
"""A user's node-wide budget and per-dataset caps: :class:`rds_kernel.wire.Budget`."""

_REQUEST_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


def check_request_id(value: object, per: str = "release") -> str:
    """``value`` if it is a request id: 1-128 letters, digits or ``_.:-``; else ``BadRequest``.

    The client picks a fresh one ``per`` release (or job) and reuses it only to retry: the
    store keeps one release and one job per (user, request id).
    """
    if not isinstance(value, str) or not _REQUEST_ID.fullmatch(value):
        raise BadRequest(
            "request_id must be 1-128 letters, digits or '_.:-'; the client picks a fresh "
            f"one per {per} and reuses it only to retry"
        )
    return value


@dataclass(frozen=True)
class PrivacyLoss:
    """A privacy loss (ε, δ) the store is given: checked when it is made, so every one is valid.

    Both are finite numbers ≥ 0 (ints become floats) and δ is below 1; anything else is a
    ``BadRequest`` saying which and why.
    """

    epsilon: float
    delta: float = 0.0

    def __post_init__(self) -> None:
        delta = self.delta
        object.__setattr__(self, "epsilon", _amount("epsilon", self.epsilon))
        object.__setattr__(self, "delta", _amount("delta", delta))
        if self.delta >= 1:
            raise BadRequest(f"delta (δ) must be below 1, got {delta!r}")

    @property
    def zero(self) -> bool:
        """Whether it costs nothing at all (ε = δ = 0)."""
        return self.epsilon == 0 and self.delta == 0


def _amount(name: str, value: object) -> float:
    symbol = {"epsilon": "ε", "delta": "δ"}[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"{name} ({symbol}) must be a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise BadRequest(f"{name} ({symbol}) must be a finite number ≥ 0, got {value!r}")
    return number


@dataclass(frozen=True)
class User:
    """A person with an API token: the data owner or a data scientist."""

    id: int
    name: str
    role: Role
    disabled: bool
    created_at: dt.datetime

    def to_wire(self) -> wire.UserView:
        """The user as the owner's API shows it (never the token or its hash)."""
        return wire.UserView(
            name=self.name,
            role=self.role,
            disabled=self.disabled,
            created_at=self.created_at.isoformat(),
        )

    def to_dict(self) -> dict[str, Any]:
        return self.to_wire().to_dict()


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

    def to_wire(self) -> wire.ReleaseRecord:
        """The release as its scientist's history lists it (``GET /v1/releases``)."""
        return wire.ReleaseRecord(
            request_id=self.request_id,
            dataset=self.dataset,
            epsilon=self.epsilon,
            delta=self.delta,
            created_at=self.created_at.isoformat(),
            spec=self.answer.get("spec"),
        )

    def to_dict(self) -> dict[str, Any]:
        """Everything stored, answer and spec hash included (for the owner's tools and tests)."""
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

    def to_wire(self) -> wire.AuditEntry:
        return wire.AuditEntry(
            id=self.id,
            created_at=self.created_at.isoformat(),
            actor=self.actor,
            action=self.action,
            detail=copy.deepcopy(self.detail),
        )

    def to_dict(self) -> dict[str, Any]:
        return self.to_wire().to_dict()
