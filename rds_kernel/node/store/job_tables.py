"""The tables of code jobs and budget top-up requests, on the node's shared ``metadata``.

- ``jobs``: one row per code job (DP or reviewed), unique per (user, request_id). It holds the
  scientist's source text (data, never executed by the node), the declared parameters, the
  status, progress, the public mock output, the private output (released or not), the
  automatic output checks and the owner-only log of the runs. ``heartbeat_at`` (owner-only,
  never in a scientist's view) is written every few seconds by the node process running the
  job, so that a job whose process died is settled promptly (``jobs_queue``).
- ``budget_requests``: a scientist's request for more privacy budget, with a reason, and the
  owner's decision.

Importing this module registers both tables, so ``Store.create_all`` creates them;
:func:`create_job_tables` does it for one engine without touching other tables.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from rds_kernel.node.store.tables import UtcDateTime, metadata

__all__ = ["budget_requests", "create_job_tables", "jobs"]

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


def create_job_tables(engine: Engine) -> None:
    """Create the two tables if they do not exist (the node's other tables are left alone).

    A ``jobs`` table from before heartbeats gets its ``heartbeat_at`` column.
    """
    metadata.create_all(engine, tables=[jobs, budget_requests])
    if "heartbeat_at" in {c["name"] for c in sa.inspect(engine).get_columns("jobs")}:
        return
    kind = engine.dialect.type_compiler_instance.process(jobs.c.heartbeat_at.type)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f"ALTER TABLE jobs ADD COLUMN heartbeat_at {kind}"))
    except sa.exc.DBAPIError:
        # another node process added it first
        if "heartbeat_at" not in {c["name"] for c in sa.inspect(engine).get_columns("jobs")}:
            raise
