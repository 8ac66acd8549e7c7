"""The node database's migrations: the one way its tables are made and changed (Alembic).

``Store.create_all()`` calls :func:`upgrade`, which brings the database to the newest
revision ("head"): an empty database gets every table, an older one the revisions it lacks,
and every row is kept. It needs no ``alembic.ini``: :func:`config` points Alembic at this
package and :func:`upgrade` hands it the node's own connection. Alembic is imported only here,
when the schema is made, never by ``import rds_kernel`` nor by the store's other modules.

**Revisions** (``versions/``, each written out in full, never imported from ``tables.py``):

- ``0001`` (``r0001_schema.py``): the schema when migrations began: the store's six tables,
  the audit log's append-only triggers (SQLite: two triggers; PostgreSQL: a function and two
  triggers, TRUNCATE included), ``jobs`` with ``heartbeat_at`` and its index, and
  ``budget_requests``.

**Adopting a database made before migrations.** Such a database has our tables but no
``alembic_version``. It has one of three shapes, each a part of 0001: the store's six tables
only (``rds node init`` made those; the job service made the other two when it first
started), those and a ``jobs`` table from before heartbeats (no ``heartbeat_at``), or all of
0001. :func:`upgrade` compares it with 0001 (Alembic's ``compare_metadata``: tables, columns,
types, nullability, keys, unique constraints, indexes; and the audit log's triggers). If
nothing differs but those two known gaps, it fills them as the code before migrations did when
it started (creates ``jobs`` and ``budget_requests``, adds ``jobs.heartbeat_at``), checks
again, stamps the database ``0001`` and upgrades it like any other. Anything else is refused
with an ``InternalError`` naming the differences, and nothing is changed: a database that is
not a node's, or a node database changed by hand, is for its owner to look at. Tables that
are not ours are left alone and not compared.

**One transaction, one process at a time.** A database already at head is only read. Else
the adoption, the stamp and every revision run in one transaction, so a failure leaves the
database as it was. SQLite takes its write lock at ``BEGIN IMMEDIATE``; on PostgreSQL the
transaction first takes an advisory lock. So two node processes starting together (``rds node
serve`` and an ``rds jobs`` command) do not both migrate: the second waits, then finds the
database at head. A database stamped with a revision this version does not know (a newer
rds_kernel upgraded it) is refused, unchanged.

**Writing the next revision.** Change ``tables.py``, then add ``versions/rNNNN_what.py``
with ``revision = "NNNN"`` and ``down_revision`` the one before, written with ``alembic.op``
and literal types (it must keep meaning what it meant when ``tables.py`` moves on). Never edit
a revision once it has been released. To draft one (from ``script.py.mako``), let Alembic
compare a database at head with ``tables.py``::

    from alembic import command
    from rds_kernel.node.store import migrations

    cfg = migrations.config("sqlite:////tmp/draft.db")
    command.upgrade(cfg, "head")
    command.revision(cfg, "what changed", autogenerate=True, rev_id="0002")  # edit, ruff format

On SQLite a change to an existing column or constraint copies the table
(``op.batch_alter_table``; ``render_as_batch`` is on). A copy of ``audit_log`` must recreate
its triggers, and copying a table that others reference (``users``) fails while the node's
connections enforce foreign keys (``PRAGMA foreign_keys = ON``, which cannot change inside the
transaction): such a revision must first teach :func:`upgrade` to turn them off.
``tests/node/store/test_migrations.py`` checks on SQLite and PostgreSQL that head matches
``tables.py`` exactly and that older databases are adopted.
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError
from alembic.util import CommandError

from rds_kernel.errors import InternalError
from rds_kernel.node.store.tables import reading

__all__ = ["FIRST", "config", "head", "upgrade"]

FIRST = "0001"
# What a database made before migrations may lack of 0001; anything else is refused.
_LEGACY_MISSING_TABLES = frozenset({"jobs", "budget_requests"})
_LEGACY_MISSING_COLUMNS = frozenset({("jobs", "heartbeat_at")})
# pg_advisory_xact_lock key that serialises migrations on PostgreSQL ("rds_mig" in ASCII)
_PG_LOCK = 0x7264735F6D6967
# Alembic's context is one per process: one migration at a time in this process.
_in_process = threading.Lock()


def config(database_url: str | None = None) -> Config:
    """An Alembic ``Config`` for these migrations, with no file; ``database_url`` is for using
    the ``alembic`` API by hand (the node passes its connection instead)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).resolve().parent))
    # versions/rNNNN_what.py: a module name that may not start with a digit
    cfg.set_main_option("file_template", "r%%(rev)s_%%(slug)s")
    if database_url is not None:
        cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


@functools.cache
def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(config())


def head() -> str:
    """The newest revision: what :func:`upgrade` brings a database to."""
    current = _scripts().get_current_head()
    assert current is not None
    return current


def upgrade(engine: sa.Engine) -> None:
    """Bring the database of ``engine`` to :func:`head` in one transaction, adopting a database
    made before migrations first; ``InternalError`` (nothing changed) if it cannot."""
    scripts = _scripts()
    with reading(engine) as conn:
        if MigrationContext.configure(conn).get_current_revision() == head():
            return  # every start but the first after an upgrade: no lock, no write
    cfg = config()
    with _in_process, engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK})
        current = MigrationContext.configure(conn).get_current_revision()
        if current is None:
            _adopt(conn, scripts)
        else:
            _known(scripts, current)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def _known(scripts: ScriptDirectory, current: str) -> None:
    try:
        scripts.get_revision(current)
    except (CommandError, RevisionError):
        raise InternalError(
            f"the node database is at schema revision {current!r}, which this rds_kernel does "
            f"not know (it knows up to {head()!r}): a newer version upgraded it; run that "
            "version, or restore a backup made before the upgrade; nothing was changed"
        ) from None


def _adopt(conn: sa.Connection, scripts: ScriptDirectory) -> None:
    """Stamp a database made before migrations ``0001`` once it matches it (see the docstring).
    A database with none of our tables is new: the upgrade makes them all."""
    first = _revision(scripts, FIRST)
    expected: sa.MetaData = first.schema()
    present = set(sa.inspect(conn).get_table_names()) & set(expected.tables)
    if not present:
        return
    problems = _differences(conn, expected, first, allowed=True)
    if problems:
        raise InternalError(
            "the node database has tables that do not match any schema of rds_kernel, so it "
            f"was not upgraded ({'; '.join(problems)[:600]}); nothing was changed"
        )
    context = MigrationContext.configure(conn)
    for diff in compare_metadata(context, expected):
        if diff[0] == "add_table":
            expected.tables[diff[1].name].create(conn)  # with its index
        elif diff[0] == "add_column":
            _, _, table, column = diff
            Operations(context).add_column(table, sa.Column(column.name, column.type))
    problems = _differences(conn, expected, first, allowed=False)
    assert not problems, problems  # what was filled in is 0001's own definition
    context.stamp(scripts, FIRST)


def _differences(
    conn: sa.Connection, expected: sa.MetaData, first: ModuleType, *, allowed: bool
) -> list[str]:
    """How our tables in ``conn`` differ from ``expected``, leaving out, if ``allowed``, the
    gaps of a database from before migrations."""
    context = MigrationContext.configure(
        conn,
        opts={"include_name": lambda name, kind, _parents: kind != "table" or name in expected},
    )
    diffs = compare_metadata(context, expected)
    missing = {d[1].name for d in diffs if isinstance(d, tuple) and d[0] == "add_table"}
    problems = []
    for diff in diffs:
        if allowed and _legacy_gap(diff, missing):
            continue
        problems.append(_describe(diff))
    if "audit_log" in expected.tables and "audit_log" not in missing:
        triggers = _triggers(conn)
        wanted = first.TRIGGERS.get(conn.dialect.name, set())
        if not wanted <= triggers:
            problems.append(f"audit_log lacks its triggers {sorted(wanted - triggers)}")
    return problems


def _legacy_gap(diff: Any, missing: set[str]) -> bool:
    if not isinstance(diff, tuple):
        return False
    if diff[0] == "add_table":
        return diff[1].name in _LEGACY_MISSING_TABLES
    if diff[0] == "add_index":
        return diff[1].table is not None and diff[1].table.name in missing
    if diff[0] == "add_column":
        _, _, table, column = diff
        return (table, column.name) in _LEGACY_MISSING_COLUMNS and column.nullable
    return False


def _describe(diff: Any) -> str:
    """One difference from ``compare_metadata``, in words."""
    if isinstance(diff, list):  # the modify_* of one column
        return ", ".join(_describe(d) for d in diff)
    kind, *args = diff
    if kind in ("add_table", "remove_table"):
        return f"{'missing' if kind == 'add_table' else 'extra'} table {args[0].name}"
    if kind in ("add_column", "remove_column"):
        what = "missing" if kind == "add_column" else "extra"
        return f"{what} column {args[1]}.{args[2].name}"
    if kind.startswith("modify_"):
        _schema, table, column = args[:3]
        return f"{table}.{column}: {kind.removeprefix('modify_')} is {args[-2]!r}, not {args[-1]!r}"
    name = getattr(args[0], "name", None) if args else None
    return f"{kind} {name or ''}".strip()


def _triggers(conn: sa.Connection) -> set[str]:
    if conn.dialect.name == "sqlite":
        query = "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit_log'"
    else:
        query = (
            "SELECT tgname FROM pg_trigger "
            "WHERE tgrelid = to_regclass('audit_log') AND NOT tgisinternal"
        )
    return set(conn.execute(sa.text(query)).scalars())


def _revision(scripts: ScriptDirectory, revision: str) -> ModuleType:
    script = scripts.get_revision(revision)
    assert script is not None
    return script.module
