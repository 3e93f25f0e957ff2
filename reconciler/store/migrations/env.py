"""Alembic's entry point, run by ``alembic.command`` on a connection the store already holds.

The store opens the connection and the transaction (and, on PostgreSQL, takes the advisory lock)
before calling Alembic, so that the upgrade runs inside that transaction and two processes that
start together migrate one after the other. Offline (``--sql``) mode is not supported: the
store is always migrated against a live database.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from reconciler.store.tables import metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def main() -> None:
    if context.is_offline_mode():
        raise RuntimeError("the store's migrations run against a database, not as SQL scripts")
    connection = context.config.attributes.get("connection")
    if not isinstance(connection, Connection):
        raise RuntimeError("run migrations through reconciler.store (Store.open or db upgrade)")
    _run(connection)


main()
