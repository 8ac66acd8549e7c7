"""The suite's shared fixtures, as one pytest plugin (registered in ``tests/conftest.py``).

- ``postgres_url``, ``database_url``, ``store``, ``raw``: a fresh node database on SQLite and
  on PostgreSQL (the server at 127.0.0.1:5432, user ``postgres``, trust auth). The session gets
  its own PostgreSQL database with a random name, dropped at the end; outside CI an unreachable
  server skips the PostgreSQL half, in CI (``CI=true``) it fails, so the half cannot silently
  go missing.
- ``nothing_left_behind``: after a test that ran scientist code, no process of the sandbox's
  test uid and no unreaped child is left (the sandbox and job tests use it on every test).

Building nodes and serving apps are plain functions in ``tests/node/nodes.py``.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest
import sqlalchemy as sa
from psycopg import sql

from rds_kernel.node.store import Store
from tests.sandbox.helpers import TEST_UID, processes_of, zombie_children

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=5"


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"true", "1", "yes"}


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test session."""
    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True)
    except psycopg.OperationalError as exc:
        if _in_ci():
            pytest.fail(f"CI needs PostgreSQL at 127.0.0.1:5432 but cannot reach it: {exc}")
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is unreachable: {exc}")
    name = f"rds_test_{uuid.uuid4().hex[:16]}"
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
        finally:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


def empty(url: str) -> None:
    """Drop every table of the database at ``url`` (``alembic_version`` too) and the audit
    log's trigger function: an empty database again."""
    engine = sa.create_engine(url)
    try:
        tables = sa.MetaData()
        tables.reflect(engine)
        tables.drop_all(engine)
        with engine.begin() as conn:
            conn.execute(sa.text("DROP FUNCTION IF EXISTS audit_log_append_only()"))
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: os.PathLike[str]) -> Iterator[str]:
    """The URL of an empty node database; PostgreSQL is emptied after each test."""
    if request.param == "sqlite":
        yield f"sqlite:///{os.path.join(tmp_path, 'node.db')}"
        return
    url: str = request.getfixturevalue("postgres_url")
    yield url
    empty(url)


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    """A store with its tables created, closed after the test."""
    node_store = Store(database_url)
    node_store.create_all()
    yield node_store
    node_store.close()


@pytest.fixture
def raw(database_url: str, store: Store) -> Iterator[sa.Engine]:
    """A plain engine on the store's database, to look at (or tamper with) the tables."""
    engine = sa.create_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def nothing_left_behind() -> Iterator[None]:
    """After the test: no process of the sandbox uid, no unreaped child of this process."""
    yield
    deadline = time.monotonic() + 5.0
    while True:
        left = processes_of(TEST_UID) if os.geteuid() == 0 else []
        zombies = zombie_children()
        if not left and not zombies:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"left behind: sandbox processes {left}, zombie children {zombies}")
        time.sleep(0.05)
