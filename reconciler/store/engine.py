"""Engines for the store: connection settings per database, and checks before connecting.

``Store.open`` calls these. SQLite needs the most care: WAL so that readers never wait for the
writer, foreign keys (off by default), a busy timeout, and transactions that begin the way the
store means them (see ``_sqlite_begin``) instead of the sqlite3 module's implicit ones.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import sqlalchemy
from sqlalchemy import Engine, event
from sqlalchemy.engine import Connection
from sqlalchemy.pool import ConnectionPoolEntry

from reconciler.catalogue import Code
from reconciler.store import rows
from reconciler.store.errors import StoreError
from reconciler.store.url import StoreUrl

BUSY_TIMEOUT_MS = 10_000
READ_OPTION = "reconciler_read"  # execution option: a read-only transaction (SQLite: deferred)


def prepare_sqlite_file(url: StoreUrl, path: Path) -> None:
    """Create the folder, and refuse early what SQLite would refuse late or confusingly."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except PermissionError as error:
        raise StoreError(
            Code.STORE_READ_ONLY, f"{url.display}: cannot create {path.parent}"
        ) from error
    except OSError as error:
        raise StoreError(Code.STORE_UNREACHABLE, f"{url.display}: {error.strerror}") from error
    if path.is_dir():
        raise StoreError(Code.STORE_UNREACHABLE, f"{url.display}: {path} is a folder")
    if path.exists() and not os.access(path, os.W_OK):
        raise StoreError(Code.STORE_READ_ONLY, f"{url.display}: {path} is not writable")
    if not os.access(path.parent, os.W_OK):
        # The WAL and shared-memory files live next to the database.
        raise StoreError(Code.STORE_READ_ONLY, f"{url.display}: {path.parent} is not writable")


def create_engine(url: StoreUrl) -> Engine:
    json_options = {"json_serializer": rows.canonical_json, "json_deserializer": rows.decode_json}
    if url.dialect == "postgresql":
        return sqlalchemy.create_engine(url.url, pool_pre_ping=True, **json_options)
    engine = sqlalchemy.create_engine(
        url.url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000}, **json_options
    )
    event.listen(engine, "connect", _sqlite_connect)
    event.listen(engine, "begin", _sqlite_begin)
    return engine


def _sqlite_connect(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    """WAL (readers never wait for the writer), enforced foreign keys, a busy timeout; and
    no implicit transactions from the sqlite3 module, so that ``_sqlite_begin`` decides."""
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        _enable_wal(cursor)
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def _enable_wal(cursor: Any) -> None:
    """Switch a new database file to WAL, once: the mode is kept in the file.

    The switch needs the file to itself, and SQLite answers "database is locked" at once, not
    after the busy timeout, while another connection is making the same switch. That happens
    when several processes start on one new file, so retry with backoff up to the busy timeout.
    """
    if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
        return
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    delay = 0.002
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def _sqlite_begin(conn: Connection) -> None:
    """Writes take the write lock when they begin (``BEGIN IMMEDIATE``): a deferred
    transaction that reads and then writes can fail with "database is locked" at once, without
    waiting, when another process wrote in between; reads stay deferred and never block.
    Sent on the driver connection: every transaction begins here, and SQLAlchemy's execution
    of a statement (a context, a cursor, a result) costs several times the statement."""
    mode = "DEFERRED" if conn.get_execution_options().get(READ_OPTION) else "IMMEDIATE"
    conn.connection.driver_connection.execute(f"BEGIN {mode}")  # type: ignore[union-attr]
