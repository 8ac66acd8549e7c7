"""Alembic's entry point for the node database's migrations (the package docstring says more).

Alembic runs this file for every command. The node passes its open connection, inside the
transaction that ``migrations.upgrade`` began (``config.attributes["connection"]``); from the
``alembic`` API without one, the database is ``sqlalchemy.url`` (see ``migrations.config``),
and with ``--sql`` the statements are printed instead of run.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context
from alembic.config import Config

from rds_kernel.node.store.tables import make_engine, metadata


def run(config: Config) -> None:
    """Run the migrations Alembic asked for, on the node's connection or on ``sqlalchemy.url``."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database: use rds_kernel.node.store.migrations.config(url)")
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


def _run(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite changes a table's columns or constraints only by copying it (batch mode)
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


# Alembic sets ``context.config`` while it runs this file; a plain import does nothing.
_config = getattr(context, "config", None)
if _config is not None:
    run(_config)
