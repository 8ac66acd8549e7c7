"""Migrations: ``Store.create_all`` upgrades to the newest revision, which is ``tables.py``.

On SQLite and PostgreSQL: an empty database upgraded to head has exactly the tables, columns,
types, keys, indexes and CHECK constraints of ``tables.metadata`` and the audit log's triggers;
a database made before migrations (``legacy_schema.py``, in each of its three shapes) is adopted
with its rows; anything else is refused and left as it was; two processes starting together
migrate once.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from rds_kernel.errors import InternalError
from rds_kernel.node.store import Store, migrations, tables
from rds_kernel.node.store.tables import metadata
from tests.node.store.legacy_schema import JOB_TABLES, STORE_TABLES, create_legacy

ROOT = Path(__file__).resolve().parents[3]
TRIGGERS = {
    "sqlite": {"audit_log_no_update", "audit_log_no_delete"},
    "postgresql": {"audit_log_no_update_delete", "audit_log_no_truncate"},
}


def differences(engine: sa.Engine) -> list[Any]:
    """What Alembic finds between the database and ``tables.metadata``, plus CHECK
    constraints (which Alembic does not compare) that are missing or extra."""
    with engine.connect() as conn:
        found: list[Any] = list(compare_metadata(MigrationContext.configure(conn), metadata))
        inspector = sa.inspect(conn)
        for table in metadata.sorted_tables:
            wanted = {str(c.name) for c in table.constraints if isinstance(c, sa.CheckConstraint)}
            have = {str(c["name"]) for c in inspector.get_check_constraints(table.name)}
            if wanted != have:
                found.append(("checks", table.name, sorted(wanted ^ have)))
    return found


def revision(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def triggers(engine: sa.Engine) -> set[str]:
    query = {
        "sqlite": "SELECT name FROM sqlite_master WHERE type = 'trigger'",
        "postgresql": "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal",
    }[engine.dialect.name]
    with engine.connect() as conn:
        return set(conn.execute(sa.text(query)).scalars())


def table_names(engine: sa.Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names())


def assert_append_only(engine: sa.Engine) -> None:
    for statement in ("UPDATE audit_log SET actor = 'x'", "DELETE FROM audit_log"):
        with pytest.raises(sa.exc.DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(sa.text(statement))


@pytest.fixture
def engine(database_url: str) -> Any:
    raw = sa.create_engine(database_url)
    yield raw
    raw.dispose()


def test_an_empty_database_upgraded_to_head_is_the_metadata(
    database_url: str, engine: sa.Engine
) -> None:
    """Head is ``tables.py`` exactly, with the audit log's triggers; a second upgrade (every
    node start) changes nothing."""
    store = Store(database_url)
    try:
        store.create_all()
        assert revision(engine) == migrations.head() == "0001"
        assert differences(engine) == []
        assert table_names(engine) == set(metadata.tables) | {"alembic_version"}
        assert triggers(engine) == TRIGGERS[engine.dialect.name]
        store.audit("owner", "test", {})
        assert_append_only(engine)
        store.create_all()
        assert revision(engine) == "0001" and differences(engine) == []
    finally:
        store.close()


SHAPES = {
    "store tables only (rds node init)": (STORE_TABLES, True),
    "jobs from before heartbeats": (STORE_TABLES + JOB_TABLES, False),
    "every table": (STORE_TABLES + JOB_TABLES, True),
}


@pytest.mark.parametrize("shape", SHAPES)
def test_a_database_from_before_migrations_is_adopted_with_its_rows(
    database_url: str, engine: sa.Engine, shape: str
) -> None:
    """The DDL the code before migrations ran, some rows, then ``create_all``: stamped 0001,
    filled in, upgraded to head, every row kept and the audit log still append-only."""
    tables, heartbeat = SHAPES[shape]
    create_legacy(engine, tables, heartbeat=heartbeat)
    old = Store(database_url)  # the store works on the old tables as they are
    try:
        alice, token = old.add_user("alice", "scientist", actor="owner")
        old.set_budget("alice", 2.0, actor="owner")
        old.charge(
            user=alice,
            dataset="patients",
            request_id="r1",
            spec_hash="h",
            epsilon=0.5,
            delta=0.0,
            answer={"count": 41},
        )
        if "jobs" in tables:
            with engine.begin() as conn:
                conn.execute(
                    sa.text(
                        "INSERT INTO jobs (id, user_id, user_name, request_id, kind, dataset, "
                        "source, entry, message, params, spec_hash, status, progress_done, "
                        "progress_total, created_at, updated_at) VALUES ('0123456789abcdef', "
                        ":user, 'alice', 'j1', 'dp', 'patients', 'def f(df): ...', 'f', '', "
                        "'{}', 'h', 'running', 0, 5, :now, :now)"
                    ),
                    {"user": alice.id, "now": alice.created_at.replace(tzinfo=None)},
                )
    finally:
        old.close()
    counted = Store(database_url)
    try:
        audit_rows = len(counted.audit_log())
    finally:
        counted.close()

    store = Store(database_url)
    try:
        store.create_all()
        store.create_all()  # twice: nothing left to do
        assert revision(engine) == migrations.head()
        assert differences(engine) == []
        assert triggers(engine) == TRIGGERS[engine.dialect.name]
        assert store.authenticate(token) == alice
        assert store.budget("alice").epsilon_spent == 0.5
        assert store.find_release(alice, "r1") is not None
        assert len(store.audit_log()) == audit_rows
        with engine.connect() as conn:
            jobs = conn.execute(sa.text("SELECT id, heartbeat_at FROM jobs")).all()
        assert jobs == ([("0123456789abcdef", None)] if "jobs" in tables else [])
        assert_append_only(engine)
    finally:
        store.close()


def drop_trigger(engine: sa.Engine) -> None:
    statement = {
        "sqlite": "DROP TRIGGER audit_log_no_delete",
        "postgresql": "DROP TRIGGER audit_log_no_truncate ON audit_log",
    }[engine.dialect.name]
    with engine.begin() as conn:
        conn.execute(sa.text(statement))


def add_column(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE users ADD COLUMN nickname VARCHAR(20)"))


def drop_column(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE budget_requests DROP COLUMN note"))


def no_releases(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE releases"))


CHANGES = {
    "an audit trigger dropped": (drop_trigger, "audit_log lacks its triggers"),
    "a column added": (add_column, "extra column users.nickname"),
    "a column dropped": (drop_column, "missing column budget_requests.note"),
    "a store table missing": (no_releases, "missing table releases"),
}


@pytest.mark.parametrize("change", CHANGES)
def test_a_database_that_matches_no_schema_is_refused_and_left_alone(
    database_url: str, engine: sa.Engine, change: str
) -> None:
    """A database with our tables, no ``alembic_version`` and a difference that no earlier
    version made: refused with the difference named; not stamped, not changed."""
    make_change, message = CHANGES[change]
    create_legacy(engine)
    make_change(engine)
    before = (table_names(engine), triggers(engine))
    store = Store(database_url)
    try:
        with pytest.raises(InternalError, match=message):
            store.create_all()
    finally:
        store.close()
    assert (table_names(engine), triggers(engine)) == before
    assert "alembic_version" not in table_names(engine)


def test_a_database_from_a_newer_version_is_refused(database_url: str, engine: sa.Engine) -> None:
    store = Store(database_url)
    try:
        store.create_all()
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
        with pytest.raises(InternalError, match=r"revision '9999'.*newer version"):
            store.create_all()
        assert revision(engine) == "9999"
    finally:
        store.close()


def test_other_tables_are_left_alone(database_url: str, engine: sa.Engine) -> None:
    """A database shared with other tables: ours are made beside them, theirs are not compared."""
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE theirs (id INTEGER PRIMARY KEY)"))
    create_legacy(engine, STORE_TABLES)
    store = Store(database_url)
    try:
        store.create_all()
    finally:
        store.close()
    assert table_names(engine) == set(metadata.tables) | {"alembic_version", "theirs"}


START_TOGETHER = """
import os, sys, time
from pathlib import Path
from rds_kernel.node.store import Store, migrations, tables
store = Store(sys.argv[1])
migrations.head()  # Alembic and the revisions loaded: the race is the migration's alone
ready = Path(sys.argv[2])
(ready / str(os.getpid())).touch()
deadline = time.monotonic() + 60
while len(list(ready.iterdir())) < int(sys.argv[3]) and time.monotonic() < deadline:
    time.sleep(0.001)
store.create_all()
store.close()
"""


@pytest.mark.parametrize("legacy", [False, True], ids=["empty", "from before migrations"])
def test_processes_starting_together_migrate_once(
    database_url: str, engine: sa.Engine, legacy: bool, tmp_path: Path
) -> None:
    """Three node processes upgrade one database at the same moment: one migrates (or adopts),
    the others wait and find it at head; none fails."""
    if legacy:
        create_legacy(engine, STORE_TABLES)
    ready = tmp_path / "ready"
    ready.mkdir()
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", START_TOGETHER, database_url, str(ready), "3"],
            cwd=ROOT,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    errors = [p.communicate(timeout=120)[1] for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0], errors
    assert revision(engine) == migrations.head()
    assert differences(engine) == []


def test_alembic_loads_only_where_the_schema_is_made() -> None:
    """``import rds_kernel`` and the store's modules leave Alembic unloaded; importing the
    migrations' ``env.py`` outside Alembic (as ``--doctest-modules`` does) runs nothing."""
    code = (
        "import sys, rds_kernel, rds_kernel.node.store, rds_kernel.node.store.jobs, "
        "rds_kernel.node.store.budget_requests\n"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'alembic'], 'alembic loaded'\n"
        "import rds_kernel.node.store.migrations.env\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


class _LockedCursor:
    """A sqlite3 cursor stand-in whose switch to WAL is refused ``refusals`` times first."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.switches = 0

    def execute(self, sql: str) -> _LockedCursor:
        if sql == "PRAGMA journal_mode = WAL":
            self.switches += 1
            if self.switches <= self.refusals:
                raise sqlite3.OperationalError("database is locked")
        return self

    def fetchone(self) -> tuple[str]:
        return ("delete",)


def test_the_switch_to_wal_waits_out_another_process_switching() -> None:
    """Two processes opening a database that is not in WAL yet: SQLite refuses one of them at
    once (its deadlock rule, no busy wait); that one retries, as a busy lock would wait (the
    race test above failed about one run in four without it)."""
    cursor = _LockedCursor(refusals=3)
    tables._use_wal(cursor, wait=0)
    assert cursor.switches == 4


def test_a_lock_that_outlasts_the_busy_timeout_is_still_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tables, "SQLITE_BUSY_SECONDS", 0.0)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        tables._use_wal(_LockedCursor(refusals=10**9), wait=0)
