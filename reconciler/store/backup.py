"""Backups of the store: a SQLite file copy, or a portable JSON export of every table.

``reconciler db backup PATH`` and ``db restore PATH`` call these. A path ending in ``.json`` is
the portable form, written from and restored into either database (so it also moves a store
from SQLite to PostgreSQL and back); any other path is a SQLite database file, made with
SQLite's online backup API so that the daemon may keep writing meanwhile.

The JSON export holds no timestamp of its own: the same state always gives the same bytes.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import closing, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, Column, Connection, Integer, String, Table, select

from reconciler.catalogue import Code
from reconciler.store import migrations
from reconciler.store.engine import READ_OPTION
from reconciler.store.errors import StoreError, translated
from reconciler.store.store import Store
from reconciler.store.tables import UtcDateTime, metadata

FORMAT = "score-reconciler-store"
FORMAT_VERSION = 1
SQLITE_MAGIC = b"SQLite format 3\x00"
_BATCH = 1000


def _invalid(path: Path, why: str) -> StoreError:
    return StoreError(Code.BACKUP_INVALID, f"{path}: {why}")


@contextmanager
def _atomic(path: Path) -> Iterator[Path]:
    """Write next to ``path`` and rename over it, so that a failed backup leaves no half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.unlink(missing_ok=True)
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


# -- backup -------------------------------------------------------------------------------------


def backup(store: Store, path: Path) -> None:
    """Write a consistent snapshot of ``store`` to ``path`` (``.json``: the portable export)."""
    with translated(store.url.display, store.url.password):
        if path.suffix == ".json":
            document = export(store)
            with _atomic(path) as partial:
                partial.write_text(_dumps(document), encoding="utf-8")
        elif store.url.path is not None:
            with _atomic(path) as partial:
                _copy_sqlite(store.url.path, partial)
        else:
            raise _invalid(path, "a PostgreSQL store backs up to a .json file (or use pg_dump)")


def _copy_sqlite(source: Path, target: Path) -> None:
    with closing(sqlite3.connect(source)) as src, closing(sqlite3.connect(target)) as dst:
        src.backup(dst)


EPHEMERAL_TABLES = frozenset({"leases"})
"""Leases belong to the running replicas, not to the recorded state: never backed up or restored
(a restored lease would block work until it expired)."""


def _backed_up() -> list[Table]:
    return [t for t in metadata.sorted_tables if t.name not in EPHEMERAL_TABLES]


def export(store: Store) -> dict[str, Any]:
    """Every table's rows in primary-key order, read in one snapshot."""
    with store.engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        else:
            conn.execution_options(**{READ_OPTION: True})
        revision = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar_one()
        tables = {table.name: _rows(conn, table) for table in _backed_up()}
    return {"format": FORMAT, "version": FORMAT_VERSION, "revision": revision, "tables": tables}


def _rows(conn: Connection, table: Table) -> list[dict[str, Any]]:
    query = select(table).order_by(*table.primary_key.columns)
    return [
        {name: _to_json(value) for name, value in row._mapping.items()}
        for row in conn.execute(query)
    ]


def _to_json(value: Any) -> Any:
    return value.isoformat(timespec="microseconds") if isinstance(value, datetime) else value


def _dumps(document: Mapping[str, Any]) -> str:
    return json.dumps(document, sort_keys=True, indent=1, ensure_ascii=False) + "\n"


# -- restore ------------------------------------------------------------------------------------


def restore(store: Store, path: Path) -> None:
    """Replace everything in ``store`` with the backup at ``path``, in one transaction.

    A ``.json`` export restores into either database; a SQLite file only into a SQLite store,
    after which the store is migrated (a backup from an older reconciler is upgraded).
    """
    if not path.is_file():
        raise _invalid(path, "no such file")
    if path.suffix == ".json":
        tables = _load_export(path, store)
        with translated(store.url.display, store.url.password):
            _replace_all(store, tables)
        return
    _restore_sqlite(store, path)


def _load_export(path: Path, store: Store) -> dict[str, list[dict[str, Any]]]:
    try:
        document = json.loads(path.read_bytes())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _invalid(path, f"not a JSON export: {error}") from error
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise _invalid(path, f'not a store export (no "format": "{FORMAT}")')
    if document.get("version") != FORMAT_VERSION:
        raise _invalid(path, f"export format version {document.get('version')!r} is not supported")
    current = store.revision()
    if document.get("revision") != current:
        raise _invalid(
            path,
            f"the export is of schema revision {document.get('revision')!r} and the store of "
            f"{current!r}; restore it with the reconciler version that wrote it",
        )
    tables = document.get("tables")
    if not isinstance(tables, dict) or set(tables) != {t.name for t in _backed_up()}:
        raise _invalid(path, '"tables" must hold every table of the store')
    return {t.name: _check_rows(path, t, tables[t.name]) for t in _backed_up()}


def _check_rows(path: Path, table: Table, found: object) -> list[dict[str, Any]]:
    if not isinstance(found, list):
        raise _invalid(path, f"tables.{table.name}: not a list of rows")
    names = {c.name for c in table.columns}
    checked = []
    for index, row in enumerate(found):
        where = f"tables.{table.name}[{index}]"
        if not isinstance(row, dict) or set(row) != names:
            raise _invalid(path, f"{where}: a row needs exactly the columns {sorted(names)}")
        checked.append(
            {c.name: _from_json(path, f"{where}.{c.name}", c, row[c.name]) for c in table.columns}
        )
    return checked


def _from_json(path: Path, where: str, column: Column[Any], value: Any) -> Any:
    if value is None:
        if not column.nullable:
            raise _invalid(path, f"{where}: must not be null")
        return None
    kind = column.type
    if isinstance(kind, UtcDateTime):
        try:
            parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
        except ValueError:
            parsed = None
        if parsed is None or parsed.tzinfo is None:
            raise _invalid(path, f"{where}: expected an ISO 8601 timestamp with a zone")
        return parsed
    if isinstance(kind, JSON):
        return value
    if isinstance(kind, Integer) and (not isinstance(value, int) or isinstance(value, bool)):
        raise _invalid(path, f"{where}: expected an integer")
    if isinstance(kind, String) and not isinstance(value, str):
        raise _invalid(path, f"{where}: expected a string")
    return value


def _replace_all(store: Store, tables: Mapping[str, list[dict[str, Any]]]) -> None:
    with store.engine.begin() as conn:
        for table in reversed(_backed_up()):
            conn.execute(table.delete())
        for table in _backed_up():
            found = tables[table.name]
            for start in range(0, len(found), _BATCH):
                conn.execute(table.insert(), found[start : start + _BATCH])


def _restore_sqlite(store: Store, path: Path) -> None:
    if store.url.path is None:
        raise _invalid(path, "a SQLite file restores into a SQLite store only; use a .json export")
    with path.open("rb") as handle:
        if handle.read(len(SQLITE_MAGIC)) != SQLITE_MAGIC:
            raise _invalid(path, "not a SQLite database (nor a .json export)")
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as src:
            _check_sqlite_backup(path, src)
            store.close()  # no pooled connection may hold the old pages while they are replaced
            with closing(sqlite3.connect(store.url.path)) as dst:
                src.backup(dst)
    except sqlite3.DatabaseError as error:
        raise _invalid(path, f"unreadable SQLite file: {error}") from error
    store.migrate()


def _check_sqlite_backup(path: Path, src: sqlite3.Connection) -> None:
    if src.execute("PRAGMA quick_check").fetchone() != ("ok",):
        raise _invalid(path, "the SQLite file is damaged (PRAGMA quick_check failed)")
    try:
        found = src.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.OperationalError as error:
        raise _invalid(path, "not a reconciler store (no alembic_version table)") from error
    revision = None if found is None else found[0]
    if revision is None or not migrations.known(revision):
        raise _invalid(path, f"schema revision {revision!r} is unknown to this reconciler")
