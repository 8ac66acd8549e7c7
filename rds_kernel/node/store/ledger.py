"""The privacy-budget ledger: budgets, caps, and ``charge``, the one write path for spending.

Three scopes limit a release, checked in this order:

- ``user``: the scientist's node-wide total. A user without one has nothing to spend.
- ``dataset``: an optional cap for one scientist on one dataset.
- ``global``: an optional cap on one dataset for all scientists together.

Spending is recorded in every scope whether or not it has a cap, so a cap set later counts what
was spent before it. ``spent + cost <= total`` is checked exactly (no tolerance), and the tables
repeat that check as a ``CHECK`` constraint. Every amount it is given becomes a
:class:`~rds_kernel.node.store.records.PrivacyLoss` (finite, ≥ 0, δ below 1) and every request
id it stores passes ``check_request_id``: the store's one rule for each (``records.py``).

Concurrency: on SQLite every writing transaction starts with ``BEGIN IMMEDIATE`` (see
``tables.py``), so writers run one at a time. On PostgreSQL (READ COMMITTED) a charge locks its
budget rows with ``SELECT ... FOR UPDATE``, always in the order user, user/dataset, dataset, so
two charges cannot deadlock and the later one reads the balance the earlier one committed.
"""

from __future__ import annotations

import math
from dataclasses import replace
from fractions import Fraction
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine

from rds_kernel.errors import AuthenticationError, BadRequest, BudgetExceeded, Conflict
from rds_kernel.node.store.records import (
    BudgetLine,
    BudgetView,
    ChargeResult,
    PrivacyLoss,
    Release,
    User,
    check_request_id,
)
from rds_kernel.node.store.tables import (
    append_audit,
    dataset_budgets,
    json_safe,
    positive_limit,
    reading,
    releases,
    user_budgets,
    user_dataset_budgets,
    users,
    utcnow,
)

__all__ = [
    "budget_view",
    "charge",
    "check",
    "dataset_caps",
    "find_release",
    "list_releases",
    "raise_budget",
    "record_answer",
    "refund",
    "set_budget",
    "set_dataset_cap",
]

Limit = Literal["user", "dataset", "global"]

_WHERE: dict[Limit, str] = {
    "user": "on this node",
    "dataset": "for you on dataset {dataset!r}",
    "global": "on dataset {dataset!r} for all scientists together",
}
_TODO: dict[Limit, str] = {
    "user": "spend at most what is left, or ask the owner for more with "
    "rds.request_budget(node, epsilon=..., reason=...)",
    "dataset": "spend at most what is left, or ask the owner to raise your cap on {dataset!r}",
    "global": "ask the owner whether the global cap on {dataset!r} can be raised",
}


def charge(
    engine: Engine,
    *,
    user: User,
    dataset: str,
    request_id: str,
    spec_hash: str,
    epsilon: float,
    delta: float,
    answer: dict[str, Any],
) -> ChargeResult:
    """Check and debit every budget scope, record the release and its audit row; one transaction.

    A retry with the same ``request_id`` and ``spec_hash`` returns the stored release and charges
    nothing; the same ``request_id`` with another ``spec_hash`` is a ``Conflict``.
    """
    dataset = _text("dataset", dataset)
    request_id = check_request_id(request_id)
    spec_hash = _text("spec_hash", spec_hash)
    loss = PrivacyLoss(epsilon, delta)
    if loss.zero:
        raise BadRequest("a release must cost some privacy loss; got ε=0 and δ=0")
    epsilon, delta = loss.epsilon, loss.delta
    stored = json_safe(answer, "the answer")
    if not isinstance(stored, dict):
        raise BadRequest(f"the answer must be a JSON object, got {type(answer).__name__}")
    try:
        with engine.begin() as conn:
            result = _charge(conn, user, dataset, request_id, spec_hash, epsilon, delta, stored)
            # the balance after this charge, read in the same transaction (no second round trip)
            return replace(result, budget=_view(conn, user))
    except sa.exc.IntegrityError:
        # The backstop for twins: a concurrent request with the same request_id committed its
        # release between our check and our insert (the user-row lock normally prevents this).
        # The unique (user_id, request_id) constraint refused ours; answer as its replay.
        existing = find_release(engine, user, request_id)
        if existing is None:
            raise
        return _replay(existing, spec_hash)


def _charge(
    conn: sa.Connection,
    user: User,
    dataset: str,
    request_id: str,
    spec_hash: str,
    epsilon: float,
    delta: float,
    answer: dict[str, Any],
) -> ChargeResult:
    disabled = conn.scalar(sa.select(users.c.disabled).where(users.c.id == user.id))
    if disabled is None or disabled:
        raise AuthenticationError(
            f"user {user.name!r} has been disabled on this node; ask the owner for access"
        )
    (_, _, node_key), (_, ud_table, ud_key), (_, ds_table, ds_key) = scopes = _scopes(user, dataset)
    node_row = _lock(conn, user_budgets, node_key)
    # Checked after taking the user's row lock, so a concurrent twin has committed by now.
    existing = _find(conn, user, request_id)
    if existing is not None:
        return _replay(existing, spec_hash)
    if node_row is None:
        raise _exceeded("user", dataset, (epsilon, delta), (0.0, 0.0), (epsilon > 0, delta > 0))
    rows = [
        node_row,
        _lock_or_create(conn, ud_table, ud_key, {"user_id": user.id, "dataset": dataset}),
        _lock_or_create(conn, ds_table, ds_key, {"dataset": dataset}),
    ]
    for (limit, _table, _key), row in zip(scopes, rows, strict=True):
        assert row is not None  # every row exists: checked or just ensured above
        _refuse_if_over(limit, dataset, row, epsilon, delta)
    for (_limit, table, key), row in zip(scopes, rows, strict=True):
        assert row is not None
        conn.execute(
            table.update()
            .where(key)
            .values(
                epsilon_spent=_spent_after(row.epsilon_spent, epsilon, row.epsilon_total),
                delta_spent=_spent_after(row.delta_spent, delta, row.delta_total),
            )
        )

    release = Release(
        request_id=request_id,
        user=user.name,
        dataset=dataset,
        spec_hash=spec_hash,
        epsilon=epsilon,
        delta=delta,
        answer=answer,
        created_at=utcnow(),
    )
    conn.execute(
        releases.insert().values(
            user_id=user.id,
            request_id=request_id,
            dataset=dataset,
            spec_hash=spec_hash,
            epsilon=epsilon,
            delta=delta,
            answer=answer,
            created_at=release.created_at,
        )
    )
    append_audit(
        conn,
        user.name,
        "release",
        {
            "user": user.name,
            "dataset": dataset,
            "request_id": request_id,
            "spec_hash": spec_hash,
            "epsilon": epsilon,
            "delta": delta,
        },
    )
    return ChargeResult(release=release, replayed=False)


def _replay(existing: Release, spec_hash: str) -> ChargeResult:
    if existing.spec_hash != spec_hash:
        raise Conflict(
            f"request_id {existing.request_id!r} was already used for a different query; "
            "a retry must send the same query, and a new query needs a new request_id",
            {"request_id": existing.request_id},
        )
    return ChargeResult(release=existing, replayed=True)


def check(engine: Engine, *, user: User, dataset: str, epsilon: float, delta: float) -> None:
    """Raise ``BudgetExceeded`` if any scope (user, user on dataset, dataset) cannot cover a cost.

    Reads only: the check to make *before* anything touches private data, with the same rules
    and message as :func:`charge`, which checks again inside its transaction.
    """
    dataset = _text("dataset", dataset)
    loss = PrivacyLoss(epsilon, delta)
    epsilon, delta = loss.epsilon, loss.delta
    with reading(engine) as conn:
        for limit, table, key in _scopes(user, dataset):
            row = conn.execute(sa.select(table).where(key)).one_or_none()
            if row is None and limit == "user":
                raise _exceeded(
                    limit, dataset, (epsilon, delta), (0.0, 0.0), (epsilon > 0, delta > 0)
                )
            if row is not None:
                _refuse_if_over(limit, dataset, row, epsilon, delta)


def refund(
    engine: Engine, *, user: User, request_id: str, actor: str, reason: str
) -> Release | None:
    """Give back what the release ``request_id`` was charged and delete it; one transaction.

    Only for a charge taken in advance (a DP job's reservation) whose work stopped for a reason
    that cannot depend on the private data. Returns the release, or None if there was none.
    """
    request_id = check_request_id(request_id)
    with engine.begin() as conn:
        _lock(conn, user_budgets, user_budgets.c.user_id == user.id)  # charge()'s lock order
        existing = _find(conn, user, request_id)
        if existing is None:
            return None
        for _limit, table, key in _scopes(user, existing.dataset):
            row = _lock(conn, table, key)
            if row is None:
                continue
            conn.execute(
                table.update()
                .where(key)
                .values(
                    epsilon_spent=_spent_before(row.epsilon_spent, existing.epsilon),
                    delta_spent=_spent_before(row.delta_spent, existing.delta),
                )
            )
        conn.execute(
            releases.delete().where(
                releases.c.user_id == user.id, releases.c.request_id == request_id
            )
        )
        append_audit(
            conn,
            actor,
            "release.refund",
            {
                "user": user.name,
                "dataset": existing.dataset,
                "request_id": request_id,
                "epsilon": existing.epsilon,
                "delta": existing.delta,
                "reason": reason,
            },
        )
    return existing


def record_answer(
    engine: Engine, *, user: User, request_id: str, answer: dict[str, Any]
) -> Release:
    """Store the answer of a release charged in advance; the charge itself does not change."""
    stored = json_safe(answer, "the answer")
    with engine.begin() as conn:
        result = conn.execute(
            releases.update()
            .where(releases.c.user_id == user.id, releases.c.request_id == request_id)
            .values(answer=stored)
        )
        if result.rowcount != 1:
            raise BadRequest(f"no release {request_id!r} of {user.name!r} to record an answer for")
        existing = _find(conn, user, request_id)
    assert existing is not None
    return existing


def _scopes(user: User, dataset: str) -> list[tuple[Limit, sa.Table, sa.ColumnElement[bool]]]:
    """The budget rows that limit a release, in the order they are locked."""
    return [
        ("user", user_budgets, user_budgets.c.user_id == user.id),
        (
            "dataset",
            user_dataset_budgets,
            sa.and_(
                user_dataset_budgets.c.user_id == user.id,
                user_dataset_budgets.c.dataset == dataset,
            ),
        ),
        ("global", dataset_budgets, dataset_budgets.c.dataset == dataset),
    ]


def _refuse_if_over(
    limit: Limit, dataset: str, row: sa.Row[Any], epsilon: float, delta: float
) -> None:
    """``BudgetExceeded`` unless ``spent + cost <= total`` exactly, for ε and for δ."""
    if row.epsilon_total is None:
        return
    over_epsilon = Fraction(row.epsilon_spent) + Fraction(epsilon) > Fraction(row.epsilon_total)
    over_delta = Fraction(row.delta_spent) + Fraction(delta) > Fraction(row.delta_total)
    if over_epsilon or over_delta:
        left = (row.epsilon_total - row.epsilon_spent, row.delta_total - row.delta_spent)
        raise _exceeded(limit, dataset, (epsilon, delta), left, (over_epsilon, over_delta))


def _spent_after(spent: float, cost: float, total: float | None) -> float:
    """``spent + cost`` as a float never below the exact sum (floats are binary fractions).

    Rounding to nearest could store a spend a hair below the truth, and many such hairs add up;
    rounding up cannot. When the exact sum fits the total (checked before), the total itself
    is a valid upper bound, which keeps the tables' ``spent <= total`` constraint.
    """
    exact = Fraction(spent) + Fraction(cost)
    value = spent + cost
    if Fraction(value) < exact:
        value = math.nextafter(value, math.inf)
    if total is not None and value > total and exact <= Fraction(total):
        value = total
    return value


def _spent_before(spent: float, cost: float) -> float:
    """``spent - cost`` (a refund) as a float never below the exact difference, nor below 0."""
    exact = Fraction(spent) - Fraction(cost)
    value = spent - cost
    if Fraction(value) < exact:
        value = math.nextafter(value, math.inf)
    return max(value, 0.0)


def _exceeded(
    limit: Limit,
    dataset: str,
    needed: tuple[float, float],
    left: tuple[float, float],
    over: tuple[bool, bool],
) -> BudgetExceeded:
    needs: list[str] = []
    lefts: list[str] = []
    for symbol, need, have, is_over in zip("εδ", needed, left, over, strict=True):
        if is_over:
            shown_need, shown_have = _pair(need, have)
            needs.append(f"{symbol}={shown_need}")
            lefts.append(f"{symbol}={shown_have}")
    where = _WHERE[limit].format(dataset=dataset)
    todo = _TODO[limit].format(dataset=dataset)
    detail: dict[str, Any] = {
        "needed": {"epsilon": needed[0], "delta": needed[1]},
        "limit": limit,
        "dataset": dataset,
    }
    if limit == "global":
        # what is left of a cap shared by everyone tells one scientist what the others spent
        return BudgetExceeded(
            f"needs {', '.join(needs)}, more than is left {where}; nothing was charged — {todo}",
            detail,
        )
    detail["remaining"] = {"epsilon": left[0], "delta": left[1]}
    return BudgetExceeded(
        f"needs {', '.join(needs)}, {', '.join(lefts)} left {where}; nothing was charged — {todo}",
        detail,
    )


def set_budget(
    engine: Engine,
    user: User,
    epsilon: float,
    delta: float,
    *,
    dataset: str | None,
    actor: str,
) -> None:
    """Set a user's node-wide total, or their cap on one dataset; never below what is spent."""
    loss = PrivacyLoss(epsilon, delta)
    epsilon, delta = loss.epsilon, loss.delta
    ident: dict[str, Any] = {"user_id": user.id}
    if dataset is None:
        table, key = user_budgets, user_budgets.c.user_id == user.id
        scope = "on this node"
    else:
        dataset = _text("dataset", dataset)
        table = user_dataset_budgets
        key = sa.and_(table.c.user_id == user.id, table.c.dataset == dataset)
        ident["dataset"] = dataset
        scope = f"on dataset {dataset!r}"
    with engine.begin() as conn:
        previous = _set_totals(conn, table, key, ident, epsilon, delta, f"{user.name} has", scope)
        append_audit(
            conn,
            actor,
            "budget.set",
            {
                "user": user.name,
                "dataset": dataset,
                "epsilon": epsilon,
                "delta": delta,
                "previous": previous,
            },
        )


def set_dataset_cap(
    engine: Engine, dataset: str, epsilon: float, delta: float, *, actor: str
) -> None:
    """Cap what all scientists together may spend on one dataset; never below what is spent."""
    dataset = _text("dataset", dataset)
    loss = PrivacyLoss(epsilon, delta)
    epsilon, delta = loss.epsilon, loss.delta
    key = dataset_budgets.c.dataset == dataset
    with engine.begin() as conn:
        previous = _set_totals(
            conn,
            dataset_budgets,
            key,
            {"dataset": dataset},
            epsilon,
            delta,
            "all scientists together have",
            f"on dataset {dataset!r}",
        )
        append_audit(
            conn,
            actor,
            "dataset_cap.set",
            {"dataset": dataset, "epsilon": epsilon, "delta": delta, "previous": previous},
        )


# -- raising a total inside the caller's transaction (budget requests: budget_requests.py) ----


def raise_budget(
    conn: sa.Connection, user: User, epsilon: float, delta: float, *, actor: str
) -> dict[str, float]:
    """Add ``epsilon`` and ``delta`` to a user's node-wide total, in the caller's transaction.

    The total is read under the row's lock (SQLite: the caller's ``BEGIN IMMEDIATE``;
    PostgreSQL: ``FOR UPDATE``), so a concurrent :func:`set_budget` or ``raise_budget`` is
    never lost: each applies to the total the other committed. Audited as ``budget.set``, in
    the same transaction. Returns the new totals.
    """
    loss = PrivacyLoss(epsilon, delta)
    epsilon, delta = loss.epsilon, loss.delta
    ident: dict[str, Any] = {"user_id": user.id}
    key = user_budgets.c.user_id == user.id
    row = _lock_or_create(conn, user_budgets, key, ident)
    assert row is not None
    total = {"epsilon": row.epsilon_total + epsilon, "delta": row.delta_total + delta}
    if not math.isfinite(total["epsilon"]) or total["delta"] >= 1:
        raise BadRequest(
            f"{user.name}'s total would become ε={total['epsilon']}, δ={total['delta']}; "
            "ε must stay finite and δ below 1"
        )
    previous = _set_totals(
        conn,
        user_budgets,
        key,
        ident,
        total["epsilon"],
        total["delta"],
        f"{user.name} has",
        "on this node",
    )
    append_audit(
        conn,
        actor,
        "budget.set",
        {"user": user.name, "dataset": None, **total, "previous": previous},
    )
    return total


def _set_totals(
    conn: sa.Connection,
    table: sa.Table,
    key: sa.ColumnElement[bool],
    ident: dict[str, Any],
    epsilon: float,
    delta: float,
    who: str,
    scope: str,
) -> dict[str, float] | None:
    _ensure(conn, table, ident)
    row = _lock(conn, table, key)
    assert row is not None
    if epsilon < row.epsilon_spent or delta < row.delta_spent:
        spent_epsilon, new_epsilon = _pair(row.epsilon_spent, epsilon)
        spent_delta, new_delta = _pair(row.delta_spent, delta)
        raise BadRequest(
            f"{who} already spent ε={spent_epsilon}, δ={spent_delta} {scope}; a total of "
            f"ε={new_epsilon}, δ={new_delta} would be below that — set at least what is spent",
            {
                "spent": {"epsilon": row.epsilon_spent, "delta": row.delta_spent},
                "requested": {"epsilon": epsilon, "delta": delta},
            },
        )
    conn.execute(table.update().where(key).values(epsilon_total=epsilon, delta_total=delta))
    if row.epsilon_total is None:
        return None
    return {"epsilon": row.epsilon_total, "delta": row.delta_total}


def budget_view(engine: Engine, user: User) -> BudgetView:
    """The user's node-wide budget and their per-dataset caps (datasets without a cap omitted)."""
    with reading(engine) as conn:
        return _view(conn, user)


def _view(conn: sa.Connection, user: User) -> BudgetView:
    node = conn.execute(
        sa.select(user_budgets).where(user_budgets.c.user_id == user.id)
    ).one_or_none()
    capped = conn.execute(
        sa.select(user_dataset_budgets)
        .where(
            user_dataset_budgets.c.user_id == user.id,
            user_dataset_budgets.c.epsilon_total.is_not(None),
        )
        .order_by(user_dataset_budgets.c.dataset)
    ).all()
    line = _line(node) if node is not None else BudgetLine.of(0.0, 0.0, 0.0, 0.0)
    return BudgetView(
        user=user.name,
        per_dataset={row.dataset: _line(row) for row in capped},
        **vars(line),
    )


def dataset_caps(engine: Engine) -> dict[str, BudgetLine]:
    """Every dataset's global cap across all scientists, with what they spent together."""
    with reading(engine) as conn:
        rows = conn.execute(
            sa.select(dataset_budgets)
            .where(dataset_budgets.c.epsilon_total.is_not(None))
            .order_by(dataset_budgets.c.dataset)
        ).all()
    return {row.dataset: _line(row) for row in rows}


def _line(row: sa.Row[Any]) -> BudgetLine:
    return BudgetLine.of(row.epsilon_total, row.delta_total, row.epsilon_spent, row.delta_spent)


def find_release(engine: Engine, user: User, request_id: str) -> Release | None:
    """The user's release stored under ``request_id``, if any."""
    with reading(engine) as conn:
        return _find(conn, user, request_id)


def list_releases(engine: Engine, user: User, *, limit: int) -> list[Release]:
    """The user's own releases, newest first."""
    with reading(engine) as conn:
        rows = conn.execute(
            sa.select(releases)
            .where(releases.c.user_id == user.id)
            .order_by(releases.c.id.desc())
            .limit(positive_limit(limit))
        ).all()
    return [_release(row, user) for row in rows]


def _find(conn: sa.Connection, user: User, request_id: str) -> Release | None:
    row = conn.execute(
        sa.select(releases).where(
            releases.c.user_id == user.id, releases.c.request_id == request_id
        )
    ).one_or_none()
    return None if row is None else _release(row, user)


def _release(row: sa.Row[Any], user: User) -> Release:
    return Release(
        request_id=row.request_id,
        user=user.name,
        dataset=row.dataset,
        spec_hash=row.spec_hash,
        epsilon=row.epsilon,
        delta=row.delta,
        answer=row.answer,
        created_at=row.created_at,
    )


def _ensure(conn: sa.Connection, table: sa.Table, ident: dict[str, Any]) -> None:
    """Insert the budget row ``ident`` with no cap and nothing spent, unless it exists."""
    insert = postgresql_insert if conn.dialect.name == "postgresql" else sqlite_insert
    conn.execute(insert(table).values(**ident).on_conflict_do_nothing())


def _lock_or_create(
    conn: sa.Connection, table: sa.Table, key: sa.ColumnElement[bool], ident: dict[str, Any]
) -> sa.Row[Any] | None:
    """Lock the budget row ``ident``, creating it first if this is its first charge."""
    row = _lock(conn, table, key)
    if row is None:
        _ensure(conn, table, ident)
        row = _lock(conn, table, key)
    return row


def _lock(conn: sa.Connection, table: sa.Table, key: sa.ColumnElement[bool]) -> sa.Row[Any] | None:
    # FOR UPDATE is PostgreSQL's row lock; SQLite omits it and relies on BEGIN IMMEDIATE.
    return conn.execute(sa.select(table).where(key).with_for_update()).one_or_none()


def _text(name: str, value: object) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= 128 or not value.isprintable():
        raise BadRequest(f"{name} must be 1 to 128 printable characters, got {value!r:.80}")
    return value


def _pair(a: float, b: float) -> tuple[str, str]:
    """``a`` and ``b`` printed short, but with enough digits to tell them apart."""
    for digits in range(6, 18):
        shown_a, shown_b = f"{a:.{digits}g}", f"{b:.{digits}g}"
        if shown_a != shown_b:
            return shown_a, shown_b
    return f"{a:.6g}", f"{b:.6g}"
