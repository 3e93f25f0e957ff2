"""The one exception the store raises, and the translation of driver errors into it.

Callers (the CLI, the daemon) see a ``StoreError`` with a catalogue code and never a SQLAlchemy,
psycopg or sqlite3 exception for the failures a user can act on: a database that cannot be
reached, is read-only or full, or was written by a newer reconciler. Programming errors (a
constraint violated by a caller) are not translated: they are bugs, not conditions to report.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import TYPE_CHECKING

from sqlalchemy import exc as sa_exc

from reconciler.catalogue import Code

if TYPE_CHECKING:
    import psycopg

_READ_ONLY_WORDS = (
    "readonly",
    "read-only",
    "read only",
    "disk is full",
    "database or disk is full",
)


class StoreError(Exception):
    """A store failure a user can act on; ``code`` says which, the message says where."""

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code.id} {self.message}"


def _psycopg() -> ModuleType | None:
    """psycopg, once something loaded it (a PostgreSQL store or driver): its errors cannot
    occur before. A SQLite store never loads it, which keeps about 10 MiB out of its process."""
    return sys.modules.get("psycopg")


def _driver_errors() -> tuple[type[BaseException], ...]:
    found = _psycopg()
    base = (sa_exc.DBAPIError, sqlite3.Error)
    return base if found is None else (*base, found.Error)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _mask(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


def translate(error: BaseException, where: str, secret: str | None) -> StoreError | None:
    """The ``StoreError`` for a driver error, or None when it is not a condition to report.

    ``error`` is SQLAlchemy's wrapper or, from connection hooks, the driver's own exception.
    ``where`` is the masked URL; ``secret`` the password, scrubbed from driver messages, which
    sometimes echo the connection string.
    """
    invalidated = isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated
    orig = error.orig if isinstance(error, sa_exc.DBAPIError) else error
    detail = _mask(_first_line(orig if orig is not None else error), secret)
    pg = _psycopg()
    if pg is not None and isinstance(orig, pg.errors.ReadOnlySqlTransaction | pg.errors.DiskFull):
        return StoreError(Code.STORE_READ_ONLY, f"{where}: {detail}")
    if isinstance(orig, sqlite3.OperationalError):
        lowered = detail.lower()
        if any(word in lowered for word in _READ_ONLY_WORDS):
            return StoreError(Code.STORE_READ_ONLY, f"{where}: {detail}")
        if "unable to open" in lowered or "not a database" in lowered:
            return StoreError(Code.STORE_UNREACHABLE, f"{where}: {detail}")
        if "locked" in lowered or "busy" in lowered:
            return StoreError(Code.STORE_BUSY, f"{where}: {detail}")
        return None
    if isinstance(orig, sqlite3.DatabaseError) and "not a database" in detail.lower():
        return StoreError(Code.STORE_UNREACHABLE, f"{where}: {detail}")
    if invalidated or _lost_connection(orig):
        return StoreError(Code.STORE_UNREACHABLE, f"{where}: {detail}")
    return None


def _lost_connection(orig: BaseException | None) -> bool:
    """A failure to connect or a dropped connection, not a rolled-back transaction.

    psycopg files serialisation failures and deadlocks under OperationalError too; those carry a
    SQLSTATE of class 40 and are the caller's to retry, not an unreachable server. A refused
    login (28) or a missing database (3D) is reported with them: the URL needs checking.
    """
    pg = _psycopg()
    if pg is None or not isinstance(orig, pg.OperationalError):
        return False
    operational: psycopg.OperationalError = orig
    state = operational.sqlstate
    return state is None or state.startswith(("08", "57P", "28", "3D"))


@contextmanager
def translated(where: str, secret: str | None) -> Iterator[None]:
    """Re-raise reportable driver errors as ``StoreError``; let the others through."""
    try:
        yield
    except _driver_errors() as error:
        mapped = translate(error, where, secret)
        if mapped is None:
            raise
        raise mapped from error
