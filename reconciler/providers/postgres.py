"""The PostgreSQL driver: a real database and role per resource on a shared server.

Who calls it: the engine, through ``registry.driver_for``, for ``postgres`` resources when an
admin server is configured (``RECONCILER_POSTGRES_URL``). It connects with that URL (psycopg 3,
autocommit: ``CREATE DATABASE`` cannot run in a transaction) and quotes every identifier with
``psycopg.sql``.

Names come from the environment and the uid (``names_for``): lower-case letters, digits and
``_``, a readable part and a hash, at most 63 characters, the same on every run, so that a
re-apply finds what the first one made; the role and the database share the name. The names
are recorded in the state and read back from it, so a later change of the naming rule cannot
orphan a database.

Apply observes first and is idempotent: a missing role or database is created, an existing one
updated (its connection limit, the ``connection_limit`` param); the password is set when the
role is new or when no previous password was handed back, since a password cannot be read from
the server. It is sent as a SCRAM-SHA-256 verifier computed here, so the plain password never
reaches the server's statement log. Each new database is closed to PUBLIC: only its role (and
superusers) may connect.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

import psycopg
import psycopg.errors
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from reconciler.catalogue import Code
from reconciler.providers.base import DriverError, Observation, ResourceRequest, ResourceResult

PASSWORD_KEY: Final = "password"
CONNECTION_LIMIT_PARAM: Final = "connection_limit"
_READABLE: Final = 50
_INVALID: Final = re.compile(r"[^a-z0-9_]+")
_SCRAM_ITERATIONS: Final = 4096
# A concurrent apply created it between our look and our create: the next attempt finds it.
_RACES: Final = (psycopg.errors.DuplicateDatabase, psycopg.errors.DuplicateObject)


@dataclass(frozen=True, slots=True)
class _Found:
    role: bool
    database: bool


class PostgresDriver:
    """Databases and roles on the server ``admin_url`` names.

    ``host`` and ``port`` are what workloads are told to connect to; they default to the admin
    URL's, which is right when the reconciler reaches the server the way workloads do.
    """

    local = False  # requests to the server

    def __init__(
        self,
        admin_url: str,
        *,
        host: str | None = None,
        port: int | None = None,
        connect_timeout: int = 10,
    ) -> None:
        self._url = admin_url
        self._connect_timeout = connect_timeout
        try:
            info = conninfo_to_dict(admin_url)
        except psycopg.ProgrammingError as exc:
            raise DriverError(
                Code.POSTGRES_DRIVER_FAILED, f"the admin URL is not valid: {_words(exc)}"
            ) from exc
        self._host = host or str(info.get("host") or "localhost").split(",")[0]
        self._port = port or int(str(info.get("port") or 5432).split(",")[0])

    def apply(self, request: ResourceRequest) -> ResourceResult:
        name = _name(request)
        limit = _connection_limit(request.params)
        password = request.previous_secrets.get(PASSWORD_KEY)
        with self._connect() as conn:
            found = _observe(conn, name)
            if not found.role or password is None:
                password = secrets.token_urlsafe(24)
                _save_role(conn, name, limit, scram_verifier(password), create=not found.role)
            else:
                _save_role(conn, name, limit, None, create=False)
            _save_database(conn, name, limit, create=not found.database)
        return ResourceResult(
            state={"database": name, "username": name},
            outputs=self._outputs(name),
            secrets={PASSWORD_KEY: password},
        )

    def delete(self, request: ResourceRequest) -> None:
        """Drop the database (closing its connections) and then the role; gone already is fine."""
        name = _name(request)
        with self._connect() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))

    def observe(self, request: ResourceRequest) -> Observation:
        name = _name(request)
        with self._connect() as conn:
            found = _observe(conn, name)
        missing = [
            what
            for what, there in (("role", found.role), ("database", found.database))
            if not there
        ]
        exists = found.role or found.database
        message = f"{' and '.join(missing)} '{name}' missing" if missing else ""
        outputs = self._outputs(name) if exists else {}
        return Observation(exists=exists, healthy=not missing, message=message, outputs=outputs)

    def _outputs(self, name: str) -> dict[str, Any]:
        return {
            "host": self._host,
            "port": self._port,
            "name": name,
            "database": name,
            "username": name,
        }

    @contextmanager
    def _connect(self) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        """An autocommit admin connection; psycopg's errors leave as ``DriverError``.

        A connection that fails (server down, refused, timed out) may work later: retryable. An
        error from a statement (no right to create roles) will not fix itself: not retryable.
        """
        try:
            with psycopg.connect(
                self._url, autocommit=True, connect_timeout=self._connect_timeout
            ) as conn:
                yield conn
        except psycopg.OperationalError as exc:
            raise DriverError(
                Code.POSTGRES_DRIVER_FAILED,
                f"PostgreSQL at {self._host}:{self._port}: {_words(exc)}",
                retryable=True,
            ) from exc
        except psycopg.Error as exc:
            raise DriverError(
                Code.POSTGRES_DRIVER_FAILED,
                f"PostgreSQL at {self._host}:{self._port}: {_words(exc)}",
                retryable=isinstance(exc, _RACES),
            ) from exc


def names_for(environment: str, uid: str) -> str:
    """The role and database name of resource ``uid`` in ``environment``.

    The environment is part of it: two environments may share one admin server, and the same
    uid in each must not be the same database.
    """
    _, _, res_id = uid.partition("#")
    readable = _INVALID.sub("_", f"{environment}_{res_id or uid}".lower()).strip("_")
    readable = readable[:_READABLE].rstrip("_")
    if not readable or not readable[0].isalpha():
        readable = f"r_{readable}"[:_READABLE].rstrip("_")
    digest = hashlib.sha256(f"{environment}\x00{uid}".encode()).hexdigest()[:10]
    return f"{readable}_{digest}"  # at most 50 + 1 + 10, under PostgreSQL's 63


def scram_verifier(password: str, *, salt: bytes | None = None) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for ``password`` (RFC 5802, RFC 7677).

    PostgreSQL stores a password given in this form as it is, so the plain text never travels
    to the server; ``psql``'s ``\\password`` does the same.
    """
    salt = salt if salt is not None else secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, _SCRAM_ITERATIONS)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    b64 = base64.b64encode
    return (
        f"SCRAM-SHA-256${_SCRAM_ITERATIONS}:{b64(salt).decode()}"
        f"${b64(stored_key).decode()}:{b64(server_key).decode()}"
    )


def _name(request: ResourceRequest) -> str:
    recorded = request.previous_state.get("database")
    return (
        recorded
        if isinstance(recorded, str) and recorded
        else names_for(request.environment, request.uid)
    )


def _connection_limit(params: Mapping[str, Any]) -> int:
    value = params.get(CONNECTION_LIMIT_PARAM, -1)
    if not isinstance(value, int) or isinstance(value, bool) or value < -1:
        raise DriverError(
            Code.POSTGRES_DRIVER_FAILED,
            f"params.{CONNECTION_LIMIT_PARAM}: must be an integer, -1 (no limit) or more",
        )
    return value


def _observe(conn: psycopg.Connection[tuple[Any, ...]], name: str) -> _Found:
    role = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone()
    database = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return _Found(role=role is not None, database=database is not None)


def _save_role(
    conn: psycopg.Connection[tuple[Any, ...]],
    name: str,
    limit: int,
    verifier: str | None,
    *,
    create: bool,
) -> None:
    verb = sql.SQL("CREATE ROLE {} LOGIN" if create else "ALTER ROLE {} LOGIN")
    parts = [verb.format(sql.Identifier(name)), sql.SQL("CONNECTION LIMIT {}").format(limit)]
    if verifier is not None:
        parts.append(sql.SQL("PASSWORD {}").format(sql.Literal(verifier)))
    conn.execute(sql.SQL(" ").join(parts))


def _save_database(
    conn: psycopg.Connection[tuple[Any, ...]], name: str, limit: int, *, create: bool
) -> None:
    ident = sql.Identifier(name)
    if create:
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(ident, ident))
        conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(ident))
    else:
        conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(ident, ident))
    conn.execute(sql.SQL("ALTER DATABASE {} CONNECTION LIMIT {}").format(ident, limit))


def _words(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
