"""The node database: every table, on one ``metadata``, and engine setup.

SQLite is the embedded default and PostgreSQL the server option; both get the same tables:

- ``users``: name, role, the sha256 of the current API token, disabled flag.
- ``user_budgets``: per user, the node-wide privacy budget (totals and spent).
- ``user_dataset_budgets``: per (user, dataset), an optional cap and what was spent there.
- ``dataset_budgets``: per dataset, an optional global cap across users and what was spent.
- ``releases``: every charged answer, unique per (user, request_id).
- ``audit_log``: append-only; the database itself refuses UPDATE and DELETE on it (triggers).
- ``jobs``: one row per code job (DP or reviewed), unique per (user, request_id). It holds the
  scientist's source text (data, never executed by the node), the declared parameters, the
  status, progress, the public mock output, the private output (released or not), the
  automatic output checks and the owner-only log of the runs. ``heartbeat_at`` (owner-only,
  never in a scientist's view) is written every few seconds by the node process running the
  job, so that a job whose process died is settled promptly (``node/jobs/queue.py``).
- ``budget_requests``: a scientist's request for more privacy budget, with a reason, and the
  owner's decision.

Budget rows carry ``CHECK (spent <= total)``, so even a buggy writer cannot overspend.

This module describes the tables for the code that reads and writes them; it never creates or
changes them. The migrations do (``migrations/``, run by ``Store.create_all``), and a test
checks that a database upgraded to their newest revision has exactly these tables.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.schema import SchemaItem

from rds_kernel.errors import BadRequest, InternalError

__all__ = [
    "JOB_STATUSES",
    "append_audit",
    "audit_log",
    "budget_requests",
    "dataset_budgets",
    "jobs",
    "json_safe",
    "make_engine",
    "metadata",
    "positive_limit",
    "reading",
    "releases",
    "user_budgets",
    "user_dataset_budgets",
    "users",
    "utcnow",
]

# Connection execution option that lets a read-only transaction on SQLite use a deferred BEGIN.
SQLITE_BUSY_SECONDS = 30.0
"""How long a SQLite connection waits for another process's lock before it gives up."""


READ_ONLY = "rds_read_only"


class UtcDateTime(sa.TypeDecorator[dt.datetime]):
    """Timezone-aware UTC timestamps on both databases (SQLite keeps no offset, so store UTC)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        utc = value.astimezone(dt.UTC)
        return utc if dialect.name == "postgresql" else utc.replace(tzinfo=None)

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


metadata = sa.MetaData()

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("disabled", sa.Boolean, nullable=False, default=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.CheckConstraint("role IN ('owner', 'scientist')", name="users_role"),
)


def _amounts(table: str, *, capped: bool) -> list[SchemaItem]:
    """Totals and spent for one budget scope; a capped scope's NULL totals mean "no cap"."""
    return [
        sa.Column("epsilon_total", sa.Double, nullable=capped, default=None if capped else 0.0),
        sa.Column("delta_total", sa.Double, nullable=capped, default=None if capped else 0.0),
        sa.Column("epsilon_spent", sa.Double, nullable=False, default=0.0),
        sa.Column("delta_spent", sa.Double, nullable=False, default=0.0),
        sa.CheckConstraint("epsilon_spent >= 0 AND delta_spent >= 0", name=f"{table}_spent"),
        sa.CheckConstraint(
            "epsilon_total IS NULL OR epsilon_spent <= epsilon_total", name=f"{table}_epsilon"
        ),
        sa.CheckConstraint(
            "delta_total IS NULL OR delta_spent <= delta_total", name=f"{table}_delta"
        ),
    ]


user_budgets = sa.Table(
    "user_budgets",
    metadata,
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), primary_key=True),
    *_amounts("user_budgets", capped=False),
)

user_dataset_budgets = sa.Table(
    "user_dataset_budgets",
    metadata,
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), primary_key=True),
    sa.Column("dataset", sa.String(128), primary_key=True),
    *_amounts("user_dataset_budgets", capped=True),
)

dataset_budgets = sa.Table(
    "dataset_budgets",
    metadata,
    sa.Column("dataset", sa.String(128), primary_key=True),
    *_amounts("dataset_budgets", capped=True),
)

releases = sa.Table(
    "releases",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
    sa.Column("request_id", sa.String(128), nullable=False),
    sa.Column("dataset", sa.String(128), nullable=False),
    sa.Column("spec_hash", sa.String(128), nullable=False),
    sa.Column("epsilon", sa.Double, nullable=False),
    sa.Column("delta", sa.Double, nullable=False),
    sa.Column("answer", sa.JSON, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.UniqueConstraint("user_id", "request_id", name="releases_user_request"),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("detail", sa.JSON, nullable=False),
)

JOB_STATUSES = (
    # DP jobs
    "queued",
    "running",
    "done",
    # reviewed jobs
    "submitted",
    "mock_running",
    "pending_review",
    "approved",
    "output_review",
    "released",
    "denied",
    # both
    "failed",
)

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
    sa.Column("user_name", sa.String(64), nullable=False),
    sa.Column("request_id", sa.String(128), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("dataset", sa.String(128), nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("entry", sa.String(128), nullable=False),
    sa.Column("message", sa.Text, nullable=False, default=""),
    sa.Column("params", sa.JSON, nullable=False),
    sa.Column("spec_hash", sa.String(64), nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("progress_done", sa.Integer, nullable=False, default=0),
    sa.Column("progress_total", sa.Integer, nullable=False, default=0),
    sa.Column("mock", sa.JSON, nullable=True),
    sa.Column("output", sa.JSON, nullable=True),
    sa.Column("checks", sa.JSON, nullable=True),
    sa.Column("owner_log", sa.Text, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("error_code", sa.String(32), nullable=True),
    sa.Column("reviewer", sa.String(64), nullable=True),
    sa.Column("review_note", sa.Text, nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Column("heartbeat_at", UtcDateTime, nullable=True),
    sa.UniqueConstraint("user_id", "request_id", name="jobs_user_request"),
    sa.CheckConstraint("kind IN ('dp', 'reviewed')", name="jobs_kind"),
    sa.CheckConstraint(
        "status IN (" + ", ".join(f"'{s}'" for s in JOB_STATUSES) + ")", name="jobs_status"
    ),
)
sa.Index("jobs_status_created", jobs.c.status, jobs.c.created_at)

budget_requests = sa.Table(
    "budget_requests",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
    sa.Column("user_name", sa.String(64), nullable=False),
    sa.Column("epsilon", sa.Double, nullable=False),
    sa.Column("delta", sa.Double, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("decided_by", sa.String(64), nullable=True),
    sa.Column("note", sa.Text, nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("decided_at", UtcDateTime, nullable=True),
    sa.CheckConstraint("epsilon >= 0 AND delta >= 0", name="budget_requests_amounts"),
    sa.CheckConstraint(
        "status IN ('pending', 'granting', 'granted', 'denied')", name="budget_requests_status"
    ),
)


def json_safe(value: Any, what: str) -> Any:
    """``value`` as the database will give it back (plain JSON: no NaN, tuples become lists)."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise InternalError(
            f"{what} is not plain JSON ({type(exc).__name__}); nothing was written"
        ) from None


def append_audit(conn: sa.Connection, actor: str, action: str, detail: dict[str, Any]) -> None:
    """Add one audit row inside the caller's transaction."""
    conn.execute(
        audit_log.insert().values(
            created_at=utcnow(),
            actor=actor,
            action=action,
            detail=json_safe(detail, "the audit detail"),
        )
    )


def positive_limit(limit: int) -> int:
    """``limit`` for a listing, refused unless it is a positive integer."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise BadRequest(f"limit must be a positive integer, got {limit!r:.80}")
    return limit


def make_engine(database_url: str) -> Engine:
    """An engine for ``sqlite:///PATH`` or ``postgresql+psycopg://...`` with our settings."""
    try:
        url = sa.make_url(database_url)
        backend = url.get_backend_name()
    except sa.exc.ArgumentError:
        backend = None
    if backend == "postgresql":
        # psycopg 3 is the driver we ship; a bare postgresql:// would ask for psycopg2.
        return sa.create_engine(url.set(drivername="postgresql+psycopg"), pool_pre_ping=True)
    if backend == "sqlite":
        _create_private_file(url.database)
        engine = sa.create_engine(url, connect_args={"timeout": SQLITE_BUSY_SECONDS})
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    raise BadRequest(
        f"cannot use database_url {database_url!r}; use sqlite:///PATH/node.db or "
        "postgresql+psycopg://USER@HOST:PORT/DBNAME"
    )


def _create_private_file(path: str | None) -> None:
    """Create the SQLite file 0600 before SQLite does (it would follow the umask, often 0644).

    SQLite gives its ``-wal`` and ``-shm`` files the mode of the database file, so they are
    0600 too. The database holds unreleased job outputs and every answer ever released.
    """
    if not path or path == ":memory:" or path.startswith("file:"):
        return
    with suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


@contextmanager
def reading(engine: Engine) -> Iterator[sa.Connection]:
    """A read-only transaction (on SQLite a deferred one that does not wait for writers)."""
    with engine.connect() as conn:
        conn.execution_options(**{READ_ONLY: True})
        with conn.begin():
            yield conn


def _sqlite_connect(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    # Take transaction control away from the sqlite3 module; _sqlite_begin issues BEGIN itself.
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA foreign_keys = ON")
    _use_wal(cursor)
    # FULL, not NORMAL: a release returned to a scientist must survive a power cut with its charge.
    cursor.execute("PRAGMA synchronous = FULL")
    cursor.close()


def _use_wal(cursor: Any, wait: float = 0.05) -> None:
    """Switch the database to WAL (a setting stored in the file) unless it is already there.

    Switching needs an exclusive lock, and when two processes switch at the same moment SQLite
    answers one of them "database is locked" at once instead of waiting (its deadlock rule), so
    that one retries until :data:`SQLITE_BUSY_SECONDS`, as a busy lock would wait.
    """
    if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
        return
    deadline = time.monotonic() + SQLITE_BUSY_SECONDS
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(wait)


def _sqlite_begin(conn: sa.Connection) -> None:
    # IMMEDIATE takes the write lock up front, so two charges can never both read the old
    # balance; read-only transactions stay deferred and read a WAL snapshot without waiting.
    read_only = conn.get_execution_options().get(READ_ONLY, False)
    conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")
