"""0001: the node's schema when migrations began — every table, constraint, index and trigger.

The store's tables (``users``, ``user_budgets``, ``user_dataset_budgets``, ``dataset_budgets``,
``releases``, ``audit_log`` with its append-only triggers) and the jobs' (``jobs`` with
``heartbeat_at`` and the ``jobs_status_created`` index, ``budget_requests``), exactly as
``tables.py`` described them then and ``metadata.create_all`` made them.

Written out in full, not imported from ``tables.py``: a revision is a fixed point of the past,
and ``tables.py`` moves on. :func:`schema` gives the same tables as a ``MetaData``, which is
what a database made before migrations is checked against before it is adopted.

Revision ID: 0001
Revises: (none, the first)
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.schema import SchemaItem

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APPEND_ONLY = "audit_log is append-only: rows can be added, never changed or removed"
APPEND_ONLY_DDL = {
    "sqlite": [
        f"CREATE TRIGGER audit_log_no_{op_.lower()} BEFORE {op_} ON audit_log "
        f"BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}'); END"
        for op_ in ("UPDATE", "DELETE")
    ],
    "postgresql": [
        "CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql "
        f"AS $$ BEGIN RAISE EXCEPTION '{APPEND_ONLY}'; END $$",
        "CREATE TRIGGER audit_log_no_update_delete BEFORE UPDATE OR DELETE ON audit_log "
        "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()",
        "CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log "
        "FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()",
    ],
}
# the triggers on audit_log that APPEND_ONLY_DDL makes, by dialect
TRIGGERS = {
    "sqlite": {"audit_log_no_update", "audit_log_no_delete"},
    "postgresql": {"audit_log_no_update_delete", "audit_log_no_truncate"},
}

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
INDEX = ("jobs_status_created", "jobs", ["status", "created_at"])


def _amounts(table: str, *, capped: bool) -> list[SchemaItem]:
    return [
        sa.Column("epsilon_total", sa.Double, nullable=capped),
        sa.Column("delta_total", sa.Double, nullable=capped),
        sa.Column("epsilon_spent", sa.Double, nullable=False),
        sa.Column("delta_spent", sa.Double, nullable=False),
        sa.CheckConstraint("epsilon_spent >= 0 AND delta_spent >= 0", name=f"{table}_spent"),
        sa.CheckConstraint(
            "epsilon_total IS NULL OR epsilon_spent <= epsilon_total", name=f"{table}_epsilon"
        ),
        sa.CheckConstraint(
            "delta_total IS NULL OR delta_spent <= delta_total", name=f"{table}_delta"
        ),
    ]


def _tables() -> dict[str, list[SchemaItem]]:
    """Every table's columns and constraints, in an order that creates referenced tables first
    (new objects at each call: a column belongs to one table)."""
    when = sa.DateTime(timezone=True)
    statuses = ", ".join(f"'{s}'" for s in JOB_STATUSES)
    return {
        "users": [
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("name", sa.String(64), nullable=False, unique=True),
            sa.Column("role", sa.String(16), nullable=False),
            sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
            sa.Column("disabled", sa.Boolean, nullable=False),
            sa.Column("created_at", when, nullable=False),
            sa.CheckConstraint("role IN ('owner', 'scientist')", name="users_role"),
        ],
        "user_budgets": [
            sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), primary_key=True),
            *_amounts("user_budgets", capped=False),
        ],
        "user_dataset_budgets": [
            sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), primary_key=True),
            sa.Column("dataset", sa.String(128), primary_key=True),
            *_amounts("user_dataset_budgets", capped=True),
        ],
        "dataset_budgets": [
            sa.Column("dataset", sa.String(128), primary_key=True),
            *_amounts("dataset_budgets", capped=True),
        ],
        "releases": [
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
            sa.Column("request_id", sa.String(128), nullable=False),
            sa.Column("dataset", sa.String(128), nullable=False),
            sa.Column("spec_hash", sa.String(128), nullable=False),
            sa.Column("epsilon", sa.Double, nullable=False),
            sa.Column("delta", sa.Double, nullable=False),
            sa.Column("answer", sa.JSON, nullable=False),
            sa.Column("created_at", when, nullable=False),
            sa.UniqueConstraint("user_id", "request_id", name="releases_user_request"),
        ],
        "audit_log": [
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("created_at", when, nullable=False),
            sa.Column("actor", sa.String(128), nullable=False),
            sa.Column("action", sa.String(64), nullable=False),
            sa.Column("detail", sa.JSON, nullable=False),
        ],
        "jobs": [
            sa.Column("id", sa.String(32), primary_key=True),
            sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
            sa.Column("user_name", sa.String(64), nullable=False),
            sa.Column("request_id", sa.String(128), nullable=False),
            sa.Column("kind", sa.String(16), nullable=False),
            sa.Column("dataset", sa.String(128), nullable=False),
            sa.Column("source", sa.Text, nullable=False),
            sa.Column("entry", sa.String(128), nullable=False),
            sa.Column("message", sa.Text, nullable=False),
            sa.Column("params", sa.JSON, nullable=False),
            sa.Column("spec_hash", sa.String(64), nullable=False),
            sa.Column("status", sa.String(32), nullable=False),
            sa.Column("progress_done", sa.Integer, nullable=False),
            sa.Column("progress_total", sa.Integer, nullable=False),
            sa.Column("mock", sa.JSON, nullable=True),
            sa.Column("output", sa.JSON, nullable=True),
            sa.Column("checks", sa.JSON, nullable=True),
            sa.Column("owner_log", sa.Text, nullable=True),
            sa.Column("error", sa.Text, nullable=True),
            sa.Column("error_code", sa.String(32), nullable=True),
            sa.Column("reviewer", sa.String(64), nullable=True),
            sa.Column("review_note", sa.Text, nullable=True),
            sa.Column("created_at", when, nullable=False),
            sa.Column("updated_at", when, nullable=False),
            sa.Column("heartbeat_at", when, nullable=True),
            sa.UniqueConstraint("user_id", "request_id", name="jobs_user_request"),
            sa.CheckConstraint("kind IN ('dp', 'reviewed')", name="jobs_kind"),
            sa.CheckConstraint(f"status IN ({statuses})", name="jobs_status"),
        ],
        "budget_requests": [
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
            sa.Column("user_name", sa.String(64), nullable=False),
            sa.Column("epsilon", sa.Double, nullable=False),
            sa.Column("delta", sa.Double, nullable=False),
            sa.Column("reason", sa.Text, nullable=False),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("decided_by", sa.String(64), nullable=True),
            sa.Column("note", sa.Text, nullable=True),
            sa.Column("created_at", when, nullable=False),
            sa.Column("decided_at", when, nullable=True),
            sa.CheckConstraint("epsilon >= 0 AND delta >= 0", name="budget_requests_amounts"),
            sa.CheckConstraint(
                "status IN ('pending', 'granting', 'granted', 'denied')",
                name="budget_requests_status",
            ),
        ],
    }


def schema() -> sa.MetaData:
    """The tables of this revision (not its triggers) as a ``MetaData``."""
    metadata = sa.MetaData()
    for name, items in _tables().items():
        sa.Table(name, metadata, *items)
    index, table, columns = INDEX
    sa.Index(index, *(metadata.tables[table].c[c] for c in columns))
    return metadata


def upgrade() -> None:
    for name, items in _tables().items():
        op.create_table(name, *items)
    op.create_index(*INDEX)
    for statement in APPEND_ONLY_DDL.get(op.get_context().dialect.name, []):
        op.execute(statement)


def downgrade() -> None:
    raise NotImplementedError(
        "0001 is the first revision: going below it would drop the node's ledger and its "
        "append-only audit log; restore a backup instead"
    )
