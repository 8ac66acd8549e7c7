"""A node database as rds_kernel made it before migrations, to test that one is adopted.

The statements are what ``metadata.create_all`` and the audit log's ``after_create`` hook
executed at commit b21dc5a (captured from both databases, re-wrapped), table by table in the
order they ran. Older databases are parts of it: ``rds node init`` made the store's six tables
only (the job service made ``jobs`` and ``budget_requests`` when it first started), and a
``jobs`` table from before heartbeats has no ``heartbeat_at``. Not generated from the package:
this is the fixed past that the migrations must accept.
"""

from __future__ import annotations

import sqlalchemy as sa

__all__ = ["JOB_TABLES", "STORE_TABLES", "create_legacy"]

APPEND_ONLY = "audit_log is append-only: rows can be added, never changed or removed"
STORE_TABLES = (
    "users",
    "dataset_budgets",
    "audit_log",
    "user_budgets",
    "user_dataset_budgets",
    "releases",
)
JOB_TABLES = ("jobs", "budget_requests")

SQLITE: dict[str, list[str]] = {
    "users": [
        """
        CREATE TABLE users (
            id INTEGER NOT NULL,
            name VARCHAR(64) NOT NULL,
            role VARCHAR(16) NOT NULL,
            token_hash VARCHAR(64) NOT NULL,
            disabled BOOLEAN NOT NULL,
            created_at DATETIME NOT NULL,
            PRIMARY KEY (id),
            CONSTRAINT users_role CHECK (role IN ('owner', 'scientist')),
            UNIQUE (name),
            UNIQUE (token_hash)
        )
        """,
    ],
    "dataset_budgets": [
        """
        CREATE TABLE dataset_budgets (
            dataset VARCHAR(128) NOT NULL,
            epsilon_total DOUBLE,
            delta_total DOUBLE,
            epsilon_spent DOUBLE NOT NULL,
            delta_spent DOUBLE NOT NULL,
            PRIMARY KEY (dataset),
            CONSTRAINT dataset_budgets_spent CHECK (epsilon_spent >= 0 AND delta_spent >= 0),
            CONSTRAINT dataset_budgets_epsilon CHECK (epsilon_total IS NULL OR epsilon_spent <=
            epsilon_total),
            CONSTRAINT dataset_budgets_delta CHECK (delta_total IS NULL OR delta_spent <=
            delta_total)
        )
        """,
    ],
    "audit_log": [
        """
        CREATE TABLE audit_log (
            id INTEGER NOT NULL,
            created_at DATETIME NOT NULL,
            actor VARCHAR(128) NOT NULL,
            action VARCHAR(64) NOT NULL,
            detail JSON NOT NULL,
            PRIMARY KEY (id)
        )
        """,
        f"""
        CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log BEGIN SELECT RAISE(ABORT,
            '{APPEND_ONLY}'); END
        """,
        f"""
        CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log BEGIN SELECT RAISE(ABORT,
            '{APPEND_ONLY}'); END
        """,
    ],
    "user_budgets": [
        """
        CREATE TABLE user_budgets (
            user_id INTEGER NOT NULL,
            epsilon_total DOUBLE NOT NULL,
            delta_total DOUBLE NOT NULL,
            epsilon_spent DOUBLE NOT NULL,
            delta_spent DOUBLE NOT NULL,
            PRIMARY KEY (user_id),
            CONSTRAINT user_budgets_spent CHECK (epsilon_spent >= 0 AND delta_spent >= 0),
            CONSTRAINT user_budgets_epsilon CHECK (epsilon_total IS NULL OR epsilon_spent <=
            epsilon_total),
            CONSTRAINT user_budgets_delta CHECK (delta_total IS NULL OR delta_spent <=
            delta_total),
            FOREIGN KEY(user_id) REFERENCES users (id)
        )
        """,
    ],
    "user_dataset_budgets": [
        """
        CREATE TABLE user_dataset_budgets (
            user_id INTEGER NOT NULL,
            dataset VARCHAR(128) NOT NULL,
            epsilon_total DOUBLE,
            delta_total DOUBLE,
            epsilon_spent DOUBLE NOT NULL,
            delta_spent DOUBLE NOT NULL,
            PRIMARY KEY (user_id, dataset),
            CONSTRAINT user_dataset_budgets_spent CHECK (epsilon_spent >= 0 AND delta_spent >=
            0),
            CONSTRAINT user_dataset_budgets_epsilon CHECK (epsilon_total IS NULL OR
            epsilon_spent <= epsilon_total),
            CONSTRAINT user_dataset_budgets_delta CHECK (delta_total IS NULL OR delta_spent <=
            delta_total),
            FOREIGN KEY(user_id) REFERENCES users (id)
        )
        """,
    ],
    "releases": [
        """
        CREATE TABLE releases (
            id INTEGER NOT NULL,
            user_id INTEGER NOT NULL,
            request_id VARCHAR(128) NOT NULL,
            dataset VARCHAR(128) NOT NULL,
            spec_hash VARCHAR(128) NOT NULL,
            epsilon DOUBLE NOT NULL,
            delta DOUBLE NOT NULL,
            answer JSON NOT NULL,
            created_at DATETIME NOT NULL,
            PRIMARY KEY (id),
            CONSTRAINT releases_user_request UNIQUE (user_id, request_id),
            FOREIGN KEY(user_id) REFERENCES users (id)
        )
        """,
    ],
    "jobs": [
        """
        CREATE TABLE jobs (
            id VARCHAR(32) NOT NULL,
            user_id INTEGER NOT NULL,
            user_name VARCHAR(64) NOT NULL,
            request_id VARCHAR(128) NOT NULL,
            kind VARCHAR(16) NOT NULL,
            dataset VARCHAR(128) NOT NULL,
            source TEXT NOT NULL,
            entry VARCHAR(128) NOT NULL,
            message TEXT NOT NULL,
            params JSON NOT NULL,
            spec_hash VARCHAR(64) NOT NULL,
            status VARCHAR(32) NOT NULL,
            progress_done INTEGER NOT NULL,
            progress_total INTEGER NOT NULL,
            mock JSON,
            output JSON,
            checks JSON,
            owner_log TEXT,
            error TEXT,
            error_code VARCHAR(32),
            reviewer VARCHAR(64),
            review_note TEXT,
            created_at DATETIME NOT NULL,
            updated_at DATETIME NOT NULL,
            heartbeat_at DATETIME,
            PRIMARY KEY (id),
            CONSTRAINT jobs_user_request UNIQUE (user_id, request_id),
            CONSTRAINT jobs_kind CHECK (kind IN ('dp', 'reviewed')),
            CONSTRAINT jobs_status CHECK (status IN ('queued', 'running', 'done', 'submitted',
            'mock_running', 'pending_review', 'approved', 'output_review', 'released',
            'denied', 'failed')),
            FOREIGN KEY(user_id) REFERENCES users (id)
        )
        """,
        "CREATE INDEX jobs_status_created ON jobs (status, created_at)",
    ],
    "budget_requests": [
        """
        CREATE TABLE budget_requests (
            id INTEGER NOT NULL,
            user_id INTEGER NOT NULL,
            user_name VARCHAR(64) NOT NULL,
            epsilon DOUBLE NOT NULL,
            delta DOUBLE NOT NULL,
            reason TEXT NOT NULL,
            status VARCHAR(16) NOT NULL,
            decided_by VARCHAR(64),
            note TEXT,
            created_at DATETIME NOT NULL,
            decided_at DATETIME,
            PRIMARY KEY (id),
            CONSTRAINT budget_requests_amounts CHECK (epsilon >= 0 AND delta >= 0),
            CONSTRAINT budget_requests_status CHECK (status IN ('pending', 'granting',
            'granted', 'denied')),
            FOREIGN KEY(user_id) REFERENCES users (id)
        )
        """,
    ],
}

POSTGRESQL: dict[str, list[str]] = {
    "users": [
        """
        CREATE TABLE users (
            id SERIAL NOT NULL,
            name VARCHAR(64) NOT NULL,
            role VARCHAR(16) NOT NULL,
            token_hash VARCHAR(64) NOT NULL,
            disabled BOOLEAN NOT NULL,
            created_at TIMESTAMP WITH TIME ZONE NOT NULL,
            PRIMARY KEY (id),
            CONSTRAINT users_role CHECK (role IN ('owner', 'scientist')),
            UNIQUE (name),
            UNIQUE (token_hash)
        )
        """,
    ],
    "dataset_budgets": [
        """
        CREATE TABLE dataset_budgets (
            dataset VARCHAR(128) NOT NULL,
            epsilon_total DOUBLE PRECISION,
            delta_total DOUBLE PRECISION,
            epsilon_spent DOUBLE PRECISION NOT NULL,
            delta_spent DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (dataset),
            CONSTRAINT dataset_budgets_spent CHECK (epsilon_spent >= 0 AND delta_spent >= 0),
            CONSTRAINT dataset_budgets_epsilon CHECK (epsilon_total IS NULL OR epsilon_spent <=
            epsilon_total),
            CONSTRAINT dataset_budgets_delta CHECK (delta_total IS NULL OR delta_spent <=
            delta_total)
        )
        """,
    ],
    "audit_log": [
        """
        CREATE TABLE audit_log (
            id SERIAL NOT NULL,
            created_at TIMESTAMP WITH TIME ZONE NOT NULL,
            actor VARCHAR(128) NOT NULL,
            action VARCHAR(64) NOT NULL,
            detail JSON NOT NULL,
            PRIMARY KEY (id)
        )
        """,
        "CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql "
        f"AS $$ BEGIN RAISE EXCEPTION '{APPEND_ONLY}'; END $$",
        """
        CREATE TRIGGER audit_log_no_update_delete BEFORE UPDATE OR DELETE ON audit_log FOR EACH
            ROW EXECUTE FUNCTION audit_log_append_only()
        """,
        """
        CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log FOR EACH STATEMENT
            EXECUTE FUNCTION audit_log_append_only()
        """,
    ],
    "user_budgets": [
        """
        CREATE TABLE user_budgets (
            user_id INTEGER NOT NULL,
            epsilon_total DOUBLE PRECISION NOT NULL,
            delta_total DOUBLE PRECISION NOT NULL,
            epsilon_spent DOUBLE PRECISION NOT NULL,
            delta_spent DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (user_id),
            CONSTRAINT user_budgets_spent CHECK (epsilon_spent >= 0 AND delta_spent >= 0),
            CONSTRAINT user_budgets_epsilon CHECK (epsilon_total IS NULL OR epsilon_spent <=
            epsilon_total),
            CONSTRAINT user_budgets_delta CHECK (delta_total IS NULL OR delta_spent <=
            delta_total),
            FOREIGN KEY(user_id) REFERENCES users (id)
        )
        """,
    ],
    "user_dataset_budgets": [
        """
        CREATE TABLE user_dataset_budgets (
            user_id INTEGER NOT NULL,
            dataset VARCHAR(128) NOT NULL,
            epsilon_total DOUBLE PRECISION,
            delta_total DOUBLE PRECISION,
            epsilon_spent DOUBLE PRECISION NOT NULL,
            delta_spent DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (user_id, dataset),
            CONSTRAINT user_dataset_budgets_spent CHECK (epsilon_spent >= 0 AND delta_spent >=
            0),
            CONSTRAINT user_dataset_budgets_epsilon CHECK (epsilon_total IS NULL OR
            epsilon_spent <= epsilon_total),
            CONSTRAINT user_dataset_budgets_delta CHECK (delta_total IS NULL OR delta_spent <=
            delta_total),
            FOREIGN KEY(user_id) REFERENCES users (id)
        )
        """,
    ],
    "releases": [
        """
        CREATE TABLE releases (
            id SERIAL NOT NULL,
            user_id INTEGER NOT NULL,
            request_id VARCHAR(128) NOT NULL,
            dataset VARCHAR(128) NOT NULL,
            spec_hash VARCHAR(128) NOT NULL,
            epsilon DOUBLE PRECISION NOT NULL,
            delta DOUBLE PRECISION NOT NULL,
            answer JSON NOT NULL,
            created_at TIMESTAMP WITH TIME ZONE NOT NULL,
            PRIMARY KEY (id),
            CONSTRAINT releases_user_request UNIQUE (user_id, request_id),
            FOREIGN KEY(user_id) REFERENCES users (id)
        )
        """,
    ],
    "jobs": [
        """
        CREATE TABLE jobs (
            id VARCHAR(32) NOT NULL,
            user_id INTEGER NOT NULL,
            user_name VARCHAR(64) NOT NULL,
            request_id VARCHAR(128) NOT NULL,
            kind VARCHAR(16) NOT NULL,
            dataset VARCHAR(128) NOT NULL,
            source TEXT NOT NULL,
            entry VARCHAR(128) NOT NULL,
            message TEXT NOT NULL,
            params JSON NOT NULL,
            spec_hash VARCHAR(64) NOT NULL,
            status VARCHAR(32) NOT NULL,
            progress_done INTEGER NOT NULL,
            progress_total INTEGER NOT NULL,
            mock JSON,
            output JSON,
            checks JSON,
            owner_log TEXT,
            error TEXT,
            error_code VARCHAR(32),
            reviewer VARCHAR(64),
            review_note TEXT,
            created_at TIMESTAMP WITH TIME ZONE NOT NULL,
            updated_at TIMESTAMP WITH TIME ZONE NOT NULL,
            heartbeat_at TIMESTAMP WITH TIME ZONE,
            PRIMARY KEY (id),
            CONSTRAINT jobs_user_request UNIQUE (user_id, request_id),
            CONSTRAINT jobs_kind CHECK (kind IN ('dp', 'reviewed')),
            CONSTRAINT jobs_status CHECK (status IN ('queued', 'running', 'done', 'submitted',
            'mock_running', 'pending_review', 'approved', 'output_review', 'released',
            'denied', 'failed')),
            FOREIGN KEY(user_id) REFERENCES users (id)
        )
        """,
        "CREATE INDEX jobs_status_created ON jobs (status, created_at)",
    ],
    "budget_requests": [
        """
        CREATE TABLE budget_requests (
            id SERIAL NOT NULL,
            user_id INTEGER NOT NULL,
            user_name VARCHAR(64) NOT NULL,
            epsilon DOUBLE PRECISION NOT NULL,
            delta DOUBLE PRECISION NOT NULL,
            reason TEXT NOT NULL,
            status VARCHAR(16) NOT NULL,
            decided_by VARCHAR(64),
            note TEXT,
            created_at TIMESTAMP WITH TIME ZONE NOT NULL,
            decided_at TIMESTAMP WITH TIME ZONE,
            PRIMARY KEY (id),
            CONSTRAINT budget_requests_amounts CHECK (epsilon >= 0 AND delta >= 0),
            CONSTRAINT budget_requests_status CHECK (status IN ('pending', 'granting',
            'granted', 'denied')),
            FOREIGN KEY(user_id) REFERENCES users (id)
        )
        """,
    ],
}


def create_legacy(
    engine: sa.Engine,
    tables: tuple[str, ...] = STORE_TABLES + JOB_TABLES,
    *,
    heartbeat: bool = True,
) -> None:
    """Make ``tables`` as the code before migrations did (``jobs`` without ``heartbeat_at``
    unless ``heartbeat``): no ``alembic_version``."""
    statements = {"sqlite": SQLITE, "postgresql": POSTGRESQL}[engine.dialect.name]
    with engine.begin() as conn:
        for table in tables:
            for statement in statements[table]:
                if not heartbeat:
                    statement = "\n".join(
                        line for line in statement.split("\n") if "heartbeat_at" not in line
                    )
                conn.exec_driver_sql(statement)
