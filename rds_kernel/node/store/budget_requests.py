"""Budget top-up requests: a scientist asks for more privacy budget; the owner grants or denies.

A grant is one transaction on one connection (the store's one engine serves the ledger and
these requests alike): it claims the request with a guarded update (``pending`` →
``granted``), raises the scientist's node-wide total by the amount asked with
``ledger.raise_budget`` (which reads the total under its lock and audits the new one) and
audits the grant. So two owners granting at
once raise it once, a concurrent ``rds budget set`` is applied before or after the grant and
never lost, and a crash leaves either nothing or all of it. (Older versions went through a
``granting`` status in three transactions; a request a crash left there is shown as it is.)
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from rds_kernel.errors import BadRequest, Conflict, NotFound
from rds_kernel.node.store import Store, ledger
from rds_kernel.node.store.records import PrivacyLoss, User
from rds_kernel.node.store.tables import (
    append_audit,
    budget_requests,
    positive_limit,
    reading,
    utcnow,
)

__all__ = ["BudgetRequests"]

_MAX_REASON = 2000
_PENDING = 20  # open requests one scientist may have at once


class BudgetRequests:
    """The ``budget_requests`` table, on the engine of the node's ``Store``."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.engine = store.engine

    def ask(self, user: User, epsilon: float, delta: float, reason: str) -> dict[str, Any]:
        """Record a scientist's request for ``epsilon`` (and ``delta``) more, with a reason."""
        loss = PrivacyLoss(epsilon, delta)
        if loss.zero:
            raise BadRequest("ask for some budget: epsilon or delta must be above 0")
        epsilon, delta = loss.epsilon, loss.delta
        if not isinstance(reason, str) or not reason.strip() or "\x00" in reason:
            raise BadRequest("say why you need more budget (reason='...'); the owner reads it")
        if len(reason) > _MAX_REASON:
            raise BadRequest(f"the reason is longer than {_MAX_REASON} characters; shorten it")
        with self.engine.begin() as conn:
            open_requests = conn.scalar(
                sa.select(sa.func.count())
                .select_from(budget_requests)
                .where(budget_requests.c.user_id == user.id, budget_requests.c.status == "pending")
            )
            if open_requests is not None and open_requests >= _PENDING:
                raise Conflict(
                    f"you already have {open_requests} pending budget requests; wait for the "
                    "owner to decide on them"
                )
            request_id = conn.scalar(
                budget_requests.insert()
                .values(
                    user_id=user.id,
                    user_name=user.name,
                    epsilon=epsilon,
                    delta=delta,
                    reason=reason.strip(),
                    status="pending",
                    created_at=utcnow(),
                )
                .returning(budget_requests.c.id)
            )
            append_audit(
                conn,
                user.name,
                "budget.request",
                {"request": request_id, "epsilon": epsilon, "delta": delta, "reason": reason},
            )
        return self.get(int(request_id))

    def get(self, request_id: int, user: User | None = None) -> dict[str, Any]:
        query = sa.select(budget_requests).where(budget_requests.c.id == request_id)
        if user is not None:
            query = query.where(budget_requests.c.user_id == user.id)
        with reading(self.engine) as conn:
            row = conn.execute(query).one_or_none()
        if row is None:
            raise NotFound(f"no budget request {request_id} on this node", {"request": request_id})
        return _view(row)

    def list(
        self, *, user: User | None = None, status: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        query = (
            sa.select(budget_requests)
            .order_by(budget_requests.c.id.desc())
            .limit(positive_limit(limit))
        )
        if user is not None:
            query = query.where(budget_requests.c.user_id == user.id)
        if status is not None:
            query = query.where(budget_requests.c.status == status)
        with reading(self.engine) as conn:
            return [_view(row) for row in conn.execute(query).all()]

    def grant(self, request_id: int, *, actor: str, note: str | None = None) -> dict[str, Any]:
        """Raise the scientist's node-wide total by what they asked for: all in one transaction."""
        request = self.get(request_id)
        user = self.store.get_user(request["user"])
        with self.engine.begin() as conn:
            if not self._set_in(conn, request_id, "pending", "granted", actor, note, None):
                raise self._not_pending(request_id)
            ledger.raise_budget(conn, user, request["epsilon"], request["delta"], actor=actor)
            detail = {"request": request_id, "note": note}
            append_audit(conn, actor, "budget.request.grant", detail)
        return self.get(request_id)

    def deny(self, request_id: int, *, actor: str, note: str | None = None) -> dict[str, Any]:
        self._claim(request_id, "denied", actor=actor, note=note, audit="deny")
        return self.get(request_id)

    def _claim(
        self,
        request_id: int,
        to: str,
        *,
        actor: str | None = None,
        note: str | None = None,
        audit: str | None = None,
    ) -> dict[str, Any]:
        request = self.get(request_id)
        if not self._set(request_id, "pending", to, actor=actor, note=note, audit=audit):
            raise self._not_pending(request_id)
        return request

    def _not_pending(self, request_id: int) -> Conflict:
        return Conflict(
            f"budget request {request_id} is {self.get(request_id)['status']}, not pending; "
            "only a pending request can be granted or denied"
        )

    def _set(
        self,
        request_id: int,
        frm: str,
        to: str,
        *,
        actor: str | None = None,
        note: str | None = None,
        audit: str | None = None,
    ) -> bool:
        with self.engine.begin() as conn:
            return self._set_in(conn, request_id, frm, to, actor, note, audit)

    def _set_in(
        self,
        conn: sa.Connection,
        request_id: int,
        frm: str,
        to: str,
        actor: str | None,
        note: str | None,
        audit: str | None,
    ) -> bool:
        """The guarded status change, and its audit row, in ``conn``'s transaction."""
        values: dict[str, Any] = {"status": to}
        if actor is not None:
            values.update(decided_by=actor, decided_at=utcnow(), note=note)
        done = conn.execute(
            budget_requests.update()
            .where(budget_requests.c.id == request_id, budget_requests.c.status == frm)
            .values(**values)
        )
        if done.rowcount != 1:
            return False
        if audit is not None:
            append_audit(
                conn,
                actor or "node",
                f"budget.request.{audit}",
                {"request": request_id, "note": note},
            )
        return True


def _view(row: sa.Row[Any]) -> dict[str, Any]:
    return {
        "id": row.id,
        "user": row.user_name,
        "epsilon": row.epsilon,
        "delta": row.delta,
        "reason": row.reason,
        "status": row.status,
        "decided_by": row.decided_by,
        "note": row.note,
        "created_at": row.created_at.isoformat(),
        "decided_at": row.decided_at.isoformat() if row.decided_at else None,
    }
