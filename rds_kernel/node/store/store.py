"""The node's persistent store: users and tokens, the privacy-budget ledger, releases, audit log.

One interface over SQLite (the embedded default) and PostgreSQL, tested by one contract suite
against both. Everything it returns is a plain frozen record (``records.py``), never an object
tied to a database session. It holds the node's one database engine: the job store and the
budget requests work on it too (:attr:`Store.engine`), so a grant is one transaction.

>>> import tempfile, pathlib
>>> store = Store(f"sqlite:///{pathlib.Path(tempfile.mkdtemp()) / 'node.db'}")
>>> store.create_all()
>>> alice, token = store.add_user("alice", "scientist")
>>> store.authenticate(token) == alice
True
>>> store.set_budget("alice", 1.0, actor="owner")
>>> store.charge(user=alice, dataset="patients", request_id="r1", spec_hash="h",
...              epsilon=0.25, delta=0.0, answer={"count": 41}).replayed
False
>>> store.budget("alice").epsilon_remaining
0.75
>>> store.close()
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
from contextlib import AbstractContextManager, nullcontext
from typing import Any, cast

import sqlalchemy as sa

from rds_kernel.errors import BadRequest, Conflict, NotFound
from rds_kernel.node.store import ledger
from rds_kernel.node.store.records import (
    AuditEntry,
    BudgetLine,
    BudgetView,
    ChargeResult,
    Release,
    Role,
    User,
)
from rds_kernel.node.store.tables import (
    append_audit,
    audit_log,
    make_engine,
    positive_limit,
    reading,
    users,
    utcnow,
)

__all__ = [
    "AuditEntry",
    "BudgetLine",
    "BudgetView",
    "ChargeResult",
    "Release",
    "Store",
    "User",
]

_ROLES = ("owner", "scientist")
_USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
TOKEN_PREFIX = "rds_"  # noqa: S105 (a prefix that marks our tokens, not a secret)


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Store:
    """Users, tokens, budgets, releases and the audit log of one node, in one SQL database.

    ``database_url`` is ``sqlite:///PATH/node.db`` or
    ``postgresql+psycopg://USER@HOST:PORT/DBNAME``. Call :meth:`create_all` once to create or
    upgrade the tables (it keeps every row) and :meth:`close` when done: whoever makes the
    ``Store`` closes it, and nothing else disposes of its engine.
    """

    def __init__(self, database_url: str) -> None:
        self._engine = make_engine(database_url)
        # SQLite lets one writer in at a time and makes the others poll with growing sleeps;
        # queueing this process's charges on a lock hands the write lock over at once (it
        # tripled release throughput under 4 concurrent clients). Other processes still
        # serialize through BEGIN IMMEDIATE. PostgreSQL locks rows and needs no help.
        sqlite = self._engine.dialect.name == "sqlite"
        self._charge_lock: AbstractContextManager[Any] = (
            threading.Lock() if sqlite else nullcontext()
        )

    @property
    def engine(self) -> sa.Engine:
        """The node's database engine, for the parts of the store that share it (jobs, budget
        requests). Its owner is this ``Store``: :meth:`close` disposes of it."""
        return self._engine

    def create_all(self) -> None:
        """Bring the database to the newest schema: create it, or upgrade it, keeping every row.

        Runs the migrations (``migrations/``) to their newest revision, in one transaction that
        one node process at a time runs; a database made before migrations is adopted first.
        Safe to call at every start: a database at the newest revision is left as it is.
        ``InternalError`` (and nothing changed) for a database it cannot upgrade.
        """
        # Imported here: Alembic loads only where the schema is made, not with the store.
        from rds_kernel.node.store import migrations

        migrations.upgrade(self._engine)

    def close(self) -> None:
        """Close every pooled database connection."""
        self._engine.dispose()

    # -- users and tokens ---------------------------------------------------------------------

    def add_user(self, name: str, role: str, *, actor: str = "cli") -> tuple[User, str]:
        """Create a user; returns it with its API token, which is shown this once only."""
        if not isinstance(name, str) or not _USER_NAME.fullmatch(name):
            raise BadRequest(
                f"user name {name!r:.80} is not allowed; use 1 to 64 letters, digits and "
                "_ . @ -, starting with a letter or digit"
            )
        if role not in _ROLES:
            raise BadRequest(f"role must be 'owner' or 'scientist', got {role!r:.80}")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        try:
            with self._engine.begin() as conn:
                if conn.scalar(sa.select(users.c.id).where(users.c.name == name)) is not None:
                    raise _name_taken(name)
                user_id = conn.scalar(
                    users.insert()
                    .values(
                        name=name,
                        role=role,
                        token_hash=_token_hash(token),
                        disabled=False,
                        created_at=utcnow(),
                    )
                    .returning(users.c.id)
                )
                append_audit(conn, actor, "user.add", {"user": name, "role": role})
        except sa.exc.IntegrityError:
            # Another process added the same name between our check and our insert.
            raise _name_taken(name) from None
        return self._user_by_id(user_id), token

    def authenticate(self, token: str) -> User | None:
        """The enabled user holding ``token``, or None (unknown, rotated or disabled)."""
        if not isinstance(token, str) or not token.startswith(TOKEN_PREFIX) or len(token) > 100:
            return None
        digest = _token_hash(token)
        # The lookup is by hash, so timing reveals nothing about the stored token; the compare
        # is constant-time anyway in case an index lookup ever is not.
        with reading(self._engine) as conn:
            row = conn.execute(sa.select(users).where(users.c.token_hash == digest)).one_or_none()
        if row is None or not hmac.compare_digest(row.token_hash, digest) or row.disabled:
            return None
        return _user(row)

    def get_user(self, name: str) -> User:
        """The user called ``name``; ``NotFound`` if there is none."""
        with reading(self._engine) as conn:
            row = conn.execute(sa.select(users).where(users.c.name == name)).one_or_none()
        if row is None:
            raise NotFound(
                f"no user named {name!r:.80} on this node; check the name, "
                "or add the user with `rds user add`"
            )
        return _user(row)

    def list_users(self) -> list[User]:
        """Every user, disabled ones included, by name."""
        with reading(self._engine) as conn:
            rows = conn.execute(sa.select(users).order_by(users.c.name)).all()
        return [_user(row) for row in rows]

    def rotate_token(self, name: str, *, actor: str) -> str:
        """Give ``name`` a new token (returned, shown once); the old one stops working."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        self._update_user(name, "user.rotate_token", actor, token_hash=_token_hash(token))
        return token

    def disable_user(self, name: str, *, actor: str) -> None:
        """Stop ``name``'s token from working; their history and budget stay."""
        self._update_user(name, "user.disable", actor, disabled=True)

    def enable_user(self, name: str, *, actor: str) -> None:
        """Let a disabled user's token work again (rotate it too if it may have leaked)."""
        self._update_user(name, "user.enable", actor, disabled=False)

    def _update_user(self, name: str, action: str, actor: str, **values: Any) -> None:
        user = self.get_user(name)
        with self._engine.begin() as conn:
            conn.execute(users.update().where(users.c.id == user.id).values(**values))
            append_audit(conn, actor, action, {"user": name})

    def _user_by_id(self, user_id: int) -> User:
        with reading(self._engine) as conn:
            return _user(conn.execute(sa.select(users).where(users.c.id == user_id)).one())

    # -- privacy budget -----------------------------------------------------------------------

    def set_budget(
        self,
        user: str,
        epsilon: float,
        delta: float = 0.0,
        *,
        dataset: str | None = None,
        actor: str,
    ) -> None:
        """Set ``user``'s node-wide total, or with ``dataset`` their cap on that dataset.

        Totals, not increments; a total below what the user already spent is refused.
        """
        ledger.set_budget(
            self._engine, self.get_user(user), epsilon, delta, dataset=dataset, actor=actor
        )

    def set_dataset_cap(
        self, dataset: str, epsilon: float, delta: float = 0.0, *, actor: str
    ) -> None:
        """Cap what all scientists together may spend on ``dataset``."""
        ledger.set_dataset_cap(self._engine, dataset, epsilon, delta, actor=actor)

    def budget(self, user: str) -> BudgetView:
        """``user``'s node-wide budget and per-dataset caps; no budget set means zero."""
        return self.budget_of(self.get_user(user))

    def budget_of(self, user: User) -> BudgetView:
        """Like :meth:`budget`, for a user already at hand (saves the lookup by name)."""
        return ledger.budget_view(self._engine, user)

    def dataset_caps(self) -> dict[str, BudgetLine]:
        """The global per-dataset caps, with what all scientists together spent on each."""
        return ledger.dataset_caps(self._engine)

    def charge(
        self,
        *,
        user: User,
        dataset: str,
        request_id: str,
        spec_hash: str,
        epsilon: float,
        delta: float,
        answer: dict[str, Any],
    ) -> ChargeResult:
        """Charge a release to every budget that limits it and record it; the only way to spend.

        Raises ``BudgetExceeded`` (nothing charged, nothing recorded) if any budget would be
        overspent. A retry with the same ``request_id`` and ``spec_hash`` returns the stored
        release with ``replayed=True`` and charges nothing; another ``spec_hash`` is a
        ``Conflict``.
        """
        with self._charge_lock:
            return ledger.charge(
                self._engine,
                user=user,
                dataset=dataset,
                request_id=request_id,
                spec_hash=spec_hash,
                epsilon=epsilon,
                delta=delta,
                answer=answer,
            )

    def precheck(self, user: User, dataset: str, epsilon: float, delta: float = 0.0) -> None:
        """Raise ``BudgetExceeded`` unless every budget that limits a release could cover it now.

        Call it before anything touches private data; :meth:`charge` checks again atomically.
        """
        ledger.check(self._engine, user=user, dataset=dataset, epsilon=epsilon, delta=delta)

    def refund(self, user: User, request_id: str, *, reason: str, actor: str = "node") -> bool:
        """Undo a charge taken in advance whose work stopped for a data-independent reason.

        Returns whether there was such a release. Never for a failure that could depend on the
        private data: that would let a scientist learn a bit for free.
        """
        with self._charge_lock:
            return (
                ledger.refund(
                    self._engine, user=user, request_id=request_id, actor=actor, reason=reason
                )
                is not None
            )

    def record_answer(self, user: User, request_id: str, answer: dict[str, Any]) -> Release:
        """Store the answer of a release that was charged before it was computed."""
        return ledger.record_answer(self._engine, user=user, request_id=request_id, answer=answer)

    def find_release(self, user: User, request_id: str) -> Release | None:
        """``user``'s release stored under ``request_id``, or None."""
        return ledger.find_release(self._engine, user, request_id)

    def releases(self, user: User, *, limit: int = 100) -> list[Release]:
        """``user``'s own releases, newest first."""
        return ledger.list_releases(self._engine, user, limit=limit)

    # -- audit log ----------------------------------------------------------------------------

    def audit(self, actor: str, action: str, detail: dict[str, Any]) -> None:
        """Append one entry to the audit log (which cannot be changed or deleted)."""
        with self._engine.begin() as conn:
            append_audit(conn, actor, action, detail)

    def audit_log(self, *, limit: int = 100) -> list[AuditEntry]:
        """The latest audit entries, newest first."""
        with reading(self._engine) as conn:
            rows = conn.execute(
                sa.select(audit_log).order_by(audit_log.c.id.desc()).limit(positive_limit(limit))
            ).all()
        return [
            AuditEntry(
                id=row.id,
                created_at=row.created_at,
                actor=row.actor,
                action=row.action,
                detail=row.detail,
            )
            for row in rows
        ]


def _user(row: sa.Row[Any]) -> User:
    return User(
        id=row.id,
        name=row.name,
        role=cast(Role, row.role),
        disabled=row.disabled,
        created_at=row.created_at,
    )


def _name_taken(name: str) -> Conflict:
    return Conflict(
        f"a user named {name!r} already exists; pick another name, or use "
        "`rds user` commands to manage the existing one",
        {"user": name},
    )
