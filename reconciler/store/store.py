"""``Store``: the recorded state of every environment, in SQLite or PostgreSQL.

The daemon opens one store at start (``Store.open(url)``, which connects and migrates) and the
planner reads ``recorded(environment)`` from it; the engine checkpoints runs and steps into it and
appends to the audit log. Every method is one transaction unless called inside
``transaction()``, which makes several writes atomic. SQLite and PostgreSQL run the same Core
statements; the differences (connection settings, upsert spelling, locks) stay in this module.
"""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import lru_cache
from operator import itemgetter
from types import TracebackType
from typing import Any, Final

from sqlalchemy import (
    Engine,
    Insert,
    Select,
    String,
    Table,
    Text,
    Update,
    bindparam,
    column,
    delete,
    func,
    inspect,
    literal_column,
    null,
    or_,
    select,
    table,
    type_coerce,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError

from reconciler.catalogue import Code
from reconciler.store import migrations, rows
from reconciler.store.engine import READ_OPTION, create_engine, prepare_sqlite_file
from reconciler.store.errors import StoreError, translate, translated
from reconciler.store.records import (
    OPEN_RUN_STATUSES,
    AuditRecord,
    EnvironmentRecord,
    JsonObject,
    PinRecord,
    PlanInputs,
    RecordedState,
    ResourceRecord,
    RunRecord,
    StepRecord,
    WorkloadRecord,
)
from reconciler.store.tables import audit, environments, resources, runs, steps, workloads
from reconciler.store.tables import pins as pins_table
from reconciler.store.url import StoreUrl, parse_store_url

# Keys for pg_advisory_xact_lock, fixed so that every replica takes the same locks.
MIGRATION_LOCK = 0x5C0_0001
AUDIT_LOCK = 0x5C0_0002

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@lru_cache(maxsize=64)
def _upsert_statement(dialect_name: str, table: Table, keep: frozenset[str]) -> Insert:
    """Insert or replace by primary key, built once per table: building the statement (its
    ``excluded`` columns above all) cost several times more than running it."""
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    stmt = dialect.insert(table)
    keys = [c.name for c in table.primary_key.columns]
    fixed = {*keys, *keep}
    changed = {c.name: stmt.excluded[c.name] for c in table.columns if c.name not in fixed}
    upsert: Insert = stmt.on_conflict_do_update(index_elements=keys, set_=changed)
    return upsert


@lru_cache(maxsize=4)
def _ensure_environment_statement(dialect_name: str) -> Insert:
    """Insert the environment's row unless it is there (every record refers to it)."""
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    ensure: Insert = dialect.insert(environments).on_conflict_do_nothing(index_elements=["name"])
    return ensure


_BUMP: Final = (
    update(environments)
    .where(environments.c.name == bindparam("environment"))
    .values(revision=bindparam("revision"))
)

_TOKEN_FOR_UPDATE: Final = (
    select(environments.c.revision)
    .where(environments.c.name == bindparam("environment"))
    .with_for_update(key_share=True)
)
"""The token a write replaces, read before the write's rows so that writers of one environment
queue on its row before they touch any other (SQLite's one write lock is held from ``BEGIN
IMMEDIATE`` anyway). On PostgreSQL it is ``FOR NO KEY UPDATE``: a plain ``FOR UPDATE`` would
wait for every transaction that inserted a row referring to the environment (their foreign key
holds ``FOR KEY SHARE`` on it), and two writers that had each inserted a row before locking
deadlocked."""

_TOKEN: Final = select(environments.c.revision).where(
    environments.c.name == bindparam("environment")
)
_LAST_COMMIT: Final = select(environments.c.last_commit).where(
    environments.c.name == bindparam("environment")
)
_MARKS: Final = select(environments.c.name, environments.c.revision, environments.c.last_commit)
_HEAD_AND_PINS: Final = union_all(
    select(
        environments.c.revision,
        environments.c.last_commit,
        environments.c.unsettled,
        null().label("workload"),
        null().label("file"),
        null().label("commit"),
        null().label("head"),
    ).where(environments.c.name == bindparam("environment")),
    select(
        null(),
        null(),
        null(),
        pins_table.c.workload,
        pins_table.c.file,
        pins_table.c.commit,
        pins_table.c.head,
    ).where(pins_table.c.environment == bindparam("environment")),
)
"""What every plan reads first, as one statement: the environment's row (its token, last commit
and unsettled commits; the row whose ``workload`` is NULL, absent when the environment has none)
and its pins (a pin's workload is never NULL). One statement instead of two is a tenth of a
no-op resync."""

_Head = tuple[str | None, str | None, frozenset[str]]
"""An environment's row as plans read it: revision token, last commit, unsettled commits."""
_NONE: Final[frozenset[str]] = frozenset()

_SPACE: Final = literal_column("' '", Text)
_EMPTY: Final = literal_column("''", Text)
_NOTE_APPLYING: Final = (
    update(environments)
    .where(
        environments.c.name == bindparam("environment"),
        func.coalesce(environments.c.last_commit, _EMPTY) != bindparam("commit"),
        (_SPACE + func.coalesce(environments.c.unsettled, _EMPTY) + _SPACE).not_like(
            bindparam("pattern")
        ),
    )
    .values(
        unsettled=func.coalesce(environments.c.unsettled + _SPACE, _EMPTY) + bindparam("commit"),
    )
)
"""Add a commit a run starts applying to the environment's unsettled ones, unless it is there
or is the last commit: one statement, so that concurrent runs cannot lose each other's. Its
constants are literals, so that it runs as text compiled once per process (``_run_in``)."""

_OPEN_RUN_COMMITS: Final = (
    select(runs.c.commit)
    .distinct()
    .where(
        runs.c.environment == bindparam("environment"),
        or_(*(runs.c.status == literal_column(f"'{s}'") for s in OPEN_RUN_STATUSES)),
    )
)
"""The commits of the environment's runs still open: they stay unsettled through a settle."""
_PINS: Final = select(pins_table).where(pins_table.c.environment == bindparam("environment"))
"""The reads of every plan, built once (building a statement costs more than running it)."""

_STEPS: Final = select(steps).where(steps.c.run_id == bindparam("run_id")).order_by(steps.c.step_id)
"""A run's steps, built once."""

_AUDIT_HEAD: Final = select(audit.c.id, audit.c.hash).order_by(audit.c.id.desc()).limit(1)
"""The audit chain's last entry, that an append follows: built once, and run as text compiled
once per process (``_run_in``; ``_raw_sqlite`` binds its limit)."""

_STEP_STATUSES: Final = select(steps.c.step_id, steps.c.status).where(
    steps.c.run_id == bindparam("run_id")
)
"""A run's steps' statuses alone: read by every executor run (to resume), built once."""

_STEP_TARGETS: Final = (
    select(steps.c.target)
    .where(
        steps.c.run_id == bindparam("run_id"),
        steps.c.kind == bindparam("kind"),
        steps.c.action == bindparam("action"),
        steps.c.status == bindparam("status"),
    )
    .order_by(steps.c.target)
)
"""The targets of a run's steps of one kind, action and status: what a publish asks, built once."""

_WORKLOAD_COLUMNS: Final = [
    type_coerce(c, Text).label(c.name) if c.name in rows.WORKLOAD_TEXT_COLUMNS else c
    for c in workloads.columns
]
"""The workload columns a read of the recorded state selects: the large JSON ones as their
text, which the record keeps undecoded (``rows.JsonText``)."""

_RESOURCE_COLUMNS: Final = [
    type_coerce(c, Text).label(c.name) if c.name in rows.RESOURCE_TEXT_COLUMNS else c
    for c in resources.columns
]
"""As ``_WORKLOAD_COLUMNS``, for resources (their ``state``)."""

_WORKLOADS: Final = (
    select(*_WORKLOAD_COLUMNS)
    .where(workloads.c.environment == bindparam("environment"))
    .order_by(workloads.c.name)
)
_RESOURCES: Final = (
    select(*_RESOURCE_COLUMNS)
    .where(resources.c.environment == bindparam("environment"))
    .order_by(resources.c.uid)
)

_RESOURCES_OF: Final = select(*_RESOURCE_COLUMNS).where(
    resources.c.environment == bindparam("environment"),
    resources.c.uid.in_(bindparam("uids", expanding=True)),
)
"""Built once: the statement every step runs to read its resources."""

_NAMES_PER_STATEMENT: Final = 1000
"""Bound parameters per ``IN`` list, well under SQLite's limit (32,766)."""

_SET_STATUS: Final = (
    update(workloads)
    .where(
        workloads.c.environment == bindparam("in_environment"),
        workloads.c.name.in_(bindparam("names", expanding=True)),
    )
    .values(status=bindparam("new_status"), updated_at=bindparam("now"))
)

_SET_STATUS_SQLITE: Final = (
    update(workloads)
    .where(
        workloads.c.environment == bindparam("in_environment"),
        workloads.c.name.in_(
            select(literal_column("value"))
            .select_from(func.json_each(bindparam("names")))
            .scalar_subquery()
        ),
    )
    .values(status=bindparam("new_status"), updated_at=bindparam("now"))
)
"""``_SET_STATUS`` on SQLite, its names one JSON array (``json_each``): one text, compiled once
per process and run on the driver (``_change_row``), whatever the number of names; an
expanding ``IN`` is compiled anew for each count, on each new engine."""


class Store:
    """The state store. Build it with ``Store.open``; close it (or use ``with``) when done."""

    def __init__(self, engine: Engine, url: StoreUrl, *, clock: Clock = utc_now) -> None:
        self._engine = engine
        self._url = url
        self._clock = clock
        self._current: ContextVar[Connection | None] = ContextVar(f"store-{id(self)}", default=None)
        # The ``_advance`` calls of the open ``transaction()``, made once it has committed.
        self._advances: ContextVar[list[Callable[[], None]] | None] = ContextVar(
            f"store-advances-{id(self)}", default=None
        )
        # The tokens the open ``transaction()`` set, by environment (see ``_bump``).
        self._bumped: ContextVar[dict[str, tuple[str | None, str]] | None] = ContextVar(
            f"store-bumped-{id(self)}", default=None
        )
        # environment -> what ``recorded`` decoded last, reused while the environment's revision
        # token in the database is the same, and carried over this process's writes.
        self._recorded: dict[str, _Kept] = {}
        self._recorded_lock = threading.Lock()
        # SQLite has one writer at a time; threads of this process queue here for it instead
        # of in SQLite's busy handler, which sleeps in steps of up to 100 ms and so leaves the
        # database idle while writers wait. PostgreSQL takes concurrent writers itself.
        self._writer = threading.Lock() if url.dialect != "postgresql" else None
        # SQLite: the driver connection of ``_autocommit_rows``, kept out of the pool.
        self._reader: sqlite3.Connection | None = None
        self._reader_lock = threading.Lock()
        # SQLite: the connection of every write transaction, kept (see ``_writer_connection``).
        self._writer_conn: Connection | None = None

    # -- opening ----------------------------------------------------------------------------

    @classmethod
    def open(cls, url: str, *, migrate: bool = True, clock: Clock = utc_now) -> Store:
        """Connect and, unless ``migrate`` is false (``db current``), bring the schema to head.

        Raises ``StoreError`` for a bad URL, an unreachable or read-only database, or a schema
        newer than this reconciler knows.
        """
        parsed = parse_store_url(url)
        if parsed.path is not None:
            prepare_sqlite_file(parsed, parsed.path)
        store = cls(create_engine(parsed), parsed, clock=clock)
        try:
            with store._translated():
                with store._engine.connect():
                    pass
                if migrate:
                    store._migrate()
                    store._probe_write()
        except BaseException:
            store.close()
            raise
        return store

    def close(self) -> None:
        """Close the connections. A write still in progress on another thread is not waited
        for (as the pool's ``dispose`` leaves a connection in use open): its connection is
        left to it."""
        with self._reader_lock:
            self._close_reader()
        if self._writer is not None and self._writer.acquire(blocking=False):
            try:
                self._close_writer()
            finally:
                self._writer.release()
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def url(self) -> StoreUrl:
        return self._url

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine, for the store package's own modules (backup)."""
        return self._engine

    def now(self) -> datetime:
        return self._clock()

    def revision(self) -> str | None:
        """The schema revision recorded in the database (None for an empty database)."""
        with self._read() as conn:
            return _schema_revision(conn)

    def migrate(self) -> None:
        """Bring the schema to head; ``open`` does this already, ``restore`` needs it again."""
        with self._translated():
            self._migrate()

    def _migrate(self) -> None:
        with self._engine.begin() as conn:  # SQLite: BEGIN IMMEDIATE, so one process at a time
            if conn.dialect.name == "postgresql":
                conn.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK)))
            current = _schema_revision(conn)
            if current == migrations.HEAD:
                return
            if current is not None and not migrations.known(current):
                raise StoreError(
                    Code.STORE_NEWER_SCHEMA,
                    f"{self._url.display}: schema revision {current} is newer than this "
                    f"reconciler knows (its newest is {migrations.head()})",
                )
            self._upgrade(conn, current)

    def _upgrade(self, conn: Connection, current: str | None) -> None:
        """Run the migrations from ``current`` to head, on ``conn``: the one use of Alembic."""
        from alembic import command  # noqa: PLC0415 - see migrations.HEAD
        from alembic.util import CommandError  # noqa: PLC0415

        cfg = migrations.config()
        cfg.attributes["connection"] = conn
        try:
            command.upgrade(cfg, "head")
        except (DBAPIError, CommandError) as error:
            mapped = translate(error, self._url.display, self._url.password)
            if mapped is not None:
                raise mapped from error
            raise StoreError(
                Code.STORE_MIGRATION_FAILED,
                f"{self._url.display}: upgrading from {current or 'an empty database'} "
                f"failed: {str(error).splitlines()[0]}",
            ) from error

    def _probe_write(self) -> None:
        """Fail at start, not at the first checkpoint, when the database takes no writes."""
        with self._engine.begin() as conn:
            conn.exec_driver_sql("UPDATE alembic_version SET version_num = version_num")

    # -- transactions -----------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Make the store calls inside the block one transaction; nested blocks join the outer.

        The state ``recorded`` keeps is carried over the block's writes once it has committed,
        in the order they were made; a block that rolls back leaves it as it was.
        """
        if self._current.get() is not None:
            yield
            return
        advances: list[Callable[[], None]] = []
        with self._begin() as conn:
            token = self._current.set(conn)
            pending = self._advances.set(advances)
            bumped = self._bumped.set({})
            try:
                yield
            finally:
                self._bumped.reset(bumped)
                self._advances.reset(pending)
                self._current.reset(token)
        for advance in advances:
            advance()

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """Inside ``transaction()``: a block whose writes are undone alone when it raises (the
        error propagates; the transaction goes on and may still commit the rest), with their
        carry-overs of the kept state. Several steps' checkpoints share one transaction this
        way (``StoreCheckpointer``), each standing or falling with its own writes."""
        conn = self._current.get()
        advances = self._advances.get()
        bumped = self._bumped.get()
        if conn is None or advances is None or bumped is None:
            raise RuntimeError("Store.savepoint() is for use inside Store.transaction()")
        mark = len(advances)
        tokens = dict(bumped)
        with self._translated():
            nested = _Savepoint.begin(conn, sqlite=self._writer is not None)
        try:
            yield
            with self._translated():
                nested.commit()
        except BaseException:
            # Without its carry-overs, the kept state is read afresh if the rows stayed after
            # all; with them, it could hold rows that were not written.
            del advances[mark:]
            bumped.clear()  # a token set inside the savepoint is undone with it: set it again
            bumped.update(tokens)
            with self._translated():
                nested.rollback()
            raise

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        outer = self._current.get()
        if outer is not None:  # translated here too: the caller may catch what one write raised
            with self._translated():
                yield outer
            return
        with self._begin() as conn:
            yield conn

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A write transaction of its own, never joined to ``transaction()``, queued behind this
        process's other SQLite writers: for writes other processes must see as soon as the call
        returns (the leases)."""
        with self._begin() as conn:
            yield conn

    @contextmanager
    def _begin(self) -> Iterator[Connection]:
        """A write transaction of its own, after this process's other SQLite writers."""
        if self._writer is None:
            with self._translated(), self._engine.begin() as conn:
                yield conn
            return
        with self._writer, self._translated():
            conn = self._writer_connection()
            try:
                with conn.begin():
                    yield conn
            except BaseException:
                self._close_writer()  # whatever broke, the next write starts on a new one
                raise

    def _writer_connection(self) -> Connection:
        """SQLite: the connection every write transaction of this process runs on, made on
        first use and kept; call holding ``_writer``. The writers queue for ``_writer`` anyway,
        so one connection serves them all in turn; a pool checkout, and the rollback that
        resets a connection returned to the pool, cost more than a step's checkpoint
        statements, and each run makes thousands of write transactions. Kept, its page cache
        also stays valid from one transaction to the next (no other connection of this
        process writes), where a pooled one found its pages changed by the others' writes and
        read them again."""
        conn = self._writer_conn
        if conn is None or conn.closed:
            conn = self._writer_conn = self._engine.connect()
        return conn

    def _close_writer(self) -> None:
        """Close the writer connection, if any (holding ``_writer``); the pool rolls back what
        it left open."""
        conn, self._writer_conn = self._writer_conn, None
        if conn is not None:
            conn.close()

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        outer = self._current.get()
        if outer is not None:
            yield outer
            return
        with self._translated(), self._engine.connect() as conn:
            conn.execution_options(**{READ_OPTION: True})
            yield conn

    def _translated(self) -> Any:
        return translated(self._url.display, self._url.password)

    def _upsert(
        self,
        conn: Connection,
        table: Table,
        values: Sequence[Mapping[str, Any]],
        *,
        keep: frozenset[str] = frozenset(),
    ) -> None:
        """Insert or replace rows by primary key; ``keep`` columns keep their first value."""
        self._write_rows(conn, _upsert_statement(conn.dialect.name, table, keep), values)

    def _write_rows(
        self, conn: Connection, statement: Insert, values: Sequence[Mapping[str, Any]]
    ) -> None:
        """Run ``statement`` (an insert of this module's, built once) for each of ``values``,
        in ``conn``'s transaction. On SQLite, as the token's lock and bump are
        (``_run_in``): on the driver connection, compiled once per process, each value
        converted by the processor SQLAlchemy's execution would use (``_raw_sqlite_write``).
        Every record and checkpoint a run writes goes through here."""
        if not values:
            return
        if self._writer is None:  # PostgreSQL
            conn.execute(statement, list(values))
            return
        sql, parameters = _raw_sqlite_write(statement, tuple(values[0]))
        params = [parameters(row) for row in values]
        cursor = _driver(conn).cursor()
        try:
            cursor.executemany(sql, params)
        finally:
            cursor.close()

    def _ensure_environment(self, conn: Connection, environment: str, now: datetime) -> None:
        stmt = _ensure_environment_statement(conn.dialect.name)
        self._write_rows(conn, stmt, [{"name": environment, "updated_at": now}])

    def _bump(
        self, conn: Connection, environment: str, *, ensure_at: datetime | None = None
    ) -> tuple[str | None, str]:
        """A new revision token: the environment's recorded state changed (see ``recorded``).
        Called before the write's rows (see ``_TOKEN_FOR_UPDATE``); returns the token replaced
        and the new one. With ``ensure_at``, the environment's row is made first when missing
        (every record refers to it).

        One token per environment and transaction: a token is new to every reader however many
        writes of one transaction follow it, so the group-committed steps of a run share one
        (``StoreCheckpointer``), two statements a step fewer. A savepoint rolled back undoes
        its token and forgets it (``savepoint``), so the next write sets one again."""
        bumped = self._bumped.get()
        if bumped is not None and environment in bumped:
            return bumped[environment]
        found, previous = self._lock_token(conn, environment, ensure_at)
        token = uuid.uuid4().hex
        self._run_in(conn, _BUMP, {"environment": environment, "revision": token})
        if bumped is not None and found:  # without a row, the token was set nowhere
            bumped[environment] = (previous, token)
        return previous, token

    def _lock_token(
        self, conn: Connection, environment: str, ensure_at: datetime | None
    ) -> tuple[bool, str | None]:
        """Whether the environment has a row, and its token, the row locked; the row is made
        first (and locked then) only when it is missing, so that a write to an environment
        that has one costs no insert attempt."""
        found = self._run_in(conn, _TOKEN_FOR_UPDATE, {"environment": environment})
        if not found and ensure_at is not None:
            self._ensure_environment(conn, environment, ensure_at)
            found = self._run_in(conn, _TOKEN_FOR_UPDATE, {"environment": environment})
        return (False, None) if not found else (True, found[0][0])

    def _run_in(self, conn: Connection, statement: Any, values: Mapping[str, Any]) -> list[Any]:
        """``statement``'s rows, run in ``conn``'s transaction. On SQLite, straight on its
        driver connection, with the text compiled once per process (``_raw_sqlite``): the
        token's lock and bump are two statements of every write transaction, and SQLAlchemy's
        execution around each (events, result machinery, a new engine's compilation) cost
        several times the statement. Only for statements whose values need no conversion
        (strings): nothing else is done to them on the way."""
        if self._writer is None:  # PostgreSQL
            result = conn.execute(statement, dict(values))
            return list(result) if result.returns_rows else []
        sql, bind = _raw_sqlite(statement)
        cursor = _driver(conn).cursor()
        try:
            rows: list[Any] = cursor.execute(sql, bind(values)).fetchall()
        finally:
            cursor.close()
        return rows

    def _advance(
        self,
        environment: str,
        tokens: tuple[str | None, str],
        *,
        saved_workloads: Sequence[WorkloadRecord] = (),
        saved_resources: Sequence[ResourceRecord] = (),
        gone_workloads: Sequence[str] = (),
        gone_resources: Sequence[str] = (),
        restated: tuple[Sequence[str], str, datetime] | None = None,
    ) -> None:
        """Carry the decoded state ``recorded`` keeps over a write of this process, once it is
        committed: decoding a large environment again after every step's write would make a
        reconcile cost grow with the environment, not with the change. Inside ``transaction()``
        this waits for the block to commit. Only when the state kept is the one the write
        started from; else (another writer came between) it is dropped and read afresh."""

        def advance() -> None:
            self._carry(
                environment,
                tokens,
                saved_workloads,
                saved_resources,
                gone_workloads,
                gone_resources,
                restated,
            )

        pending = self._advances.get()
        if pending is None:
            advance()
        else:
            pending.append(advance)

    def _carry(
        self,
        environment: str,
        tokens: tuple[str | None, str],
        saved_workloads: Sequence[WorkloadRecord],
        saved_resources: Sequence[ResourceRecord],
        gone_workloads: Sequence[str],
        gone_resources: Sequence[str],
        restated: tuple[Sequence[str], str, datetime] | None,
    ) -> None:
        previous, token = tokens
        with self._recorded_lock:
            kept = self._recorded.get(environment)
            # ``token`` too: writes of one transaction share it (``_bump``), and the first
            # one's carry-over has set it.
            if kept is None or kept.token not in (previous, token):
                self._recorded.pop(environment, None)
                return
            kept.unshare()
            for name in gone_workloads:
                kept.workloads.pop(name, None)
            for uid in gone_resources:
                kept.resources.pop(uid, None)
            for workload in saved_workloads:
                kept.unsorted |= workload.name not in kept.workloads
                kept.workloads[workload.name] = workload
            names, status, now = restated or ((), "", None)
            for name in names:
                old = kept.workloads.get(name)
                if old is not None:
                    kept.workloads[name] = replace(old, status=status, updated_at=now)
            for saved in saved_resources:
                first = kept.resources.get(saved.uid)
                if first is not None and first.created_at is not None:
                    saved = replace(saved, created_at=first.created_at)  # noqa: PLW2901
                kept.unsorted |= first is None
                kept.resources[saved.uid] = saved
            kept.token = token

    # -- environments -----------------------------------------------------------------------

    def environments(self) -> list[EnvironmentRecord]:
        with self._read() as conn:
            result = conn.execute(select(environments).order_by(environments.c.name))
            return [rows.environment_record(row) for row in result]

    def last_commit(self, environment: str) -> str | None:
        with self._read() as conn:
            commit: str | None = conn.execute(
                _LAST_COMMIT, {"environment": environment}
            ).scalar_one_or_none()
            return commit

    def set_last_commit(self, environment: str, commit: str | None) -> None:
        """Record the commit an environment was last reconciled at; None forgets it (after a
        destroy, the next plan must read every workload again).

        Settling a commit settles the runs of other commits before it too (every record agrees
        with this one now), but for runs still open: a replica's run may record after this, so
        their commits stay unsettled (``plan_inputs``)."""
        now = self.now()
        row: dict[str, Any] = {"name": environment, "last_commit": commit}
        with self._write() as conn:
            found = self._run_in(conn, _OPEN_RUN_COMMITS, {"environment": environment})
            still = sorted({c for (c,) in found} - {commit})
            row["unsettled"] = " ".join(still) or None
            self._upsert(
                conn,
                environments,
                [{**row, "last_reconciled_at": now, "updated_at": now}],
                keep=frozenset({"revision"}),
            )

    def marks(self) -> dict[str, tuple[str | None, str | None]]:
        """Per environment, what changes whenever any process writes its records or settles a
        commit: the revision token and the last commit. The daemon compares them with what its
        own work left, to notice a command run beside it (``docs/daemon.md``)."""
        with self._read() as conn:
            return {name: (token, commit) for name, token, commit in conn.execute(_MARKS)}

    # -- workloads and resources ------------------------------------------------------------

    def revision_of(self, environment: str) -> str | None:
        """The environment's revision token: it changes with every write to its workloads or
        resources (by any process); None when unknown or never written since migration 0004."""
        with self._read() as conn:
            return self._token(conn, environment)

    def recorded(self, environment: str) -> RecordedState:
        """Everything recorded for ``environment``; empty if unknown.

        Decoding every row is the costly part of reading the state of a large environment, so
        the last state read is kept and handed back again, the same ``RecordedState`` object,
        while the environment's revision token is unchanged: a planner recognises it by
        identity instead of comparing every record (callers must not change its mappings).
        Every write replaces the token, whichever process makes it. Inside ``transaction()``
        rows are always read. A token of None (no row for the environment yet, or none
        written since migration 0004) identifies a state as well as any: every write replaces
        it and nothing sets it back, so a first reconcile's steps read the empty state kept by
        its plan instead of querying for resources not recorded yet.
        """
        if self._writer is not None and self._current.get() is None:
            # SQLite: the token alone first, without SQLAlchemy's execution around it; the
            # state kept at that token is most often the answer (a publish reads it).
            state = self._kept_state(environment, self._token_now(environment))
            if state is not None:
                return state
        with self._read() as conn:
            return self._recorded_in(conn, environment, self._token(conn, environment))

    def plan_inputs(self, environment: str) -> PlanInputs:
        """``recorded``, ``last_commit`` and ``pins`` read on one connection, the token, the
        last commit and the pins by one statement: what every plan reads, resyncs that find
        nothing included."""
        if self._current.get() is None:
            quick = self._quick_plan_inputs(environment)
            if quick is not None:
                return quick
        with self._read() as conn:
            head, pins = self._head_and_pins(conn, environment)
            if head is None:
                # No row, so no workload or resource either (their foreign key names it): the
                # first plan of an environment skips two queries and their compilation.
                return PlanInputs(self._kept_empty(environment), None, pins)
            recorded = self._recorded_in(conn, environment, head[0])
        return PlanInputs(recorded, head[1], pins, head[2])

    def _quick_plan_inputs(self, environment: str) -> PlanInputs | None:
        """``plan_inputs`` by one statement on SQLite's own connection, when that is all a plan
        needs: the environment has no row yet (a first plan), or its token is the one of the
        state kept decoded (a resync, a plan after this process's own writes). None otherwise,
        and on PostgreSQL: the caller reads the rows as usual.

        One statement is one read transaction in SQLite (the store's connections are in
        autocommit mode until ``BEGIN``), so the token and the pins come from one snapshot, as
        they do in ``plan_inputs``' transaction. What is skipped is SQLAlchemy's execution around
        it (``BEGIN``, the events, the result's processing, the rollback, and on a new engine the
        statement's compilation): about three quarters of a resync's read."""
        if self._writer is None:  # PostgreSQL
            return None
        head, pins = self._head_and_pins_now(environment)
        if head is None:  # no row, so nothing recorded (as in ``plan_inputs``)
            return PlanInputs(self._kept_empty(environment), None, pins)
        kept = self._kept_state(environment, head[0])
        return None if kept is None else PlanInputs(kept, head[1], pins, head[2])

    def _kept_state(self, environment: str, token: str | None) -> RecordedState | None:
        """The state ``recorded`` keeps decoded for ``environment``, if it is the state at
        ``token``."""
        with self._recorded_lock:
            kept = self._recorded.get(environment)
            return None if kept is None or kept.token != token else kept.shared(environment)

    def plan_key(self, environment: str) -> tuple[str | None, str | None, dict[str, PinRecord]]:
        """The revision token, the last commit and the pins, by the one statement
        ``plan_inputs`` starts with: what a plan read from the store, so while it is the same,
        so is the plan (a run reuses its last plan then). Read it before planning, so that a
        write during the plan makes the key stale rather than the plan. A token of None (no
        row yet) identifies a state too: every write replaces it and nothing sets it back. On
        SQLite, outside a transaction, the statement runs alone in autocommit, as in
        ``_quick_plan_inputs``: a run reads the key before each of its plans."""
        if self._writer is not None and self._current.get() is None:
            now, pins = self._head_and_pins_now(environment)
            return (None, None, pins) if now is None else (now[0], now[1], pins)
        with self._read() as conn:
            head, pins = self._head_and_pins(conn, environment)
        return (None, None, pins) if head is None else (head[0], head[1], pins)

    def _head_and_pins_now(self, environment: str) -> tuple[_Head | None, dict[str, PinRecord]]:
        """``_head_and_pins`` on SQLite by one statement in autocommit (one snapshot): the
        environment's token, last commit and unsettled commits (None without a row), and its
        pins."""
        found = self._autocommit_rows(_HEAD_AND_PINS, {"environment": environment})
        return _split_head_and_pins(found)

    @staticmethod
    def _head_and_pins(
        conn: Connection, environment: str
    ) -> tuple[_Head | None, dict[str, PinRecord]]:
        """The environment's row (its token, last commit and unsettled commits; None without
        one) and its pins."""
        return _split_head_and_pins(conn.execute(_HEAD_AND_PINS, {"environment": environment}))

    def _kept_empty(self, environment: str) -> RecordedState:
        """The state of an environment without a row, kept at the token None as a state read
        is: a first reconcile's steps then find their resources missing in memory, and the
        carry-overs of their writes keep it current, instead of a query per step."""
        if self._current.get() is not None:
            return RecordedState(environment, {}, {})
        with self._recorded_lock:
            kept = self._recorded.get(environment)
            if kept is None or kept.token is not None or kept.workloads or kept.resources:
                kept = self._recorded[environment] = _Kept(None, {}, {})
            return kept.shared(environment)

    def _recorded_in(self, conn: Connection, environment: str, token: str | None) -> RecordedState:
        """``recorded`` on an open connection, ``token`` read on it already."""
        if self._current.get() is not None:
            return self._read_recorded(conn, environment)
        state = self._kept_state(environment, token)
        if state is not None:
            return state
        by_name, by_uid = self._read_rows(conn, environment)
        with self._recorded_lock:
            if self._token(conn, environment) == token:
                kept = _Kept(token, by_name, by_uid)
                self._recorded[environment] = kept
                return kept.shared(environment)
            self._recorded.pop(environment, None)
        return RecordedState(environment, by_name, by_uid)

    def resources_of(self, environment: str, uids: Iterable[str]) -> dict[str, ResourceRecord]:
        """Just these resources (those recorded): what one step needs, without reading the
        whole environment, so that a run's cost grows with its steps, not their square."""
        wanted = sorted(set(uids))
        if not wanted:
            return {}
        if self._current.get() is None:
            kept = self._kept_resources(environment, self._token_now(environment), wanted)
            if kept is not None:
                return kept
        with self._read() as conn:
            found = conn.execute(_RESOURCES_OF, {"environment": environment, "uids": wanted})
            return {r.uid: r for r in map(rows.resource_record, found)}

    def _token_now(self, environment: str) -> str | None:
        """The environment's token as the database has it now, read alone. On SQLite that is
        one statement in autocommit on a pooled driver connection: no BEGIN, no rollback, no
        result machinery, one call that lets go of the GIL instead of three; every step of a
        run reads its resources from the kept state with this read alone."""
        if self._writer is None:  # PostgreSQL
            with self._read() as conn:
                return self._token(conn, environment)
        found = self._autocommit_rows(_TOKEN, {"environment": environment})
        token: str | None = found[0][0] if found else None
        return token

    def _rows(
        self, statement: Any, values: Mapping[str, Any], conn: Connection | None = None
    ) -> list[Any]:
        """``statement``'s rows, read in ``conn``'s transaction, else in the open
        ``transaction()`` if there is one, else alone. On SQLite straight on a driver
        connection (``_run_in``, ``_autocommit_rows``): for statements whose values and
        columns need no conversion (strings, integers)."""
        conn = conn or self._current.get()
        if conn is not None:
            with self._translated():
                return self._run_in(conn, statement, values)
        if self._writer is None:  # PostgreSQL
            with self._read() as conn:
                return list(conn.execute(statement, dict(values)))
        return self._autocommit_rows(statement, values)

    def _mappings(
        self, statement: Select[Any], values: Mapping[str, Any], conn: Connection | None = None
    ) -> list[Mapping[str, Any]]:
        """``statement``'s rows as ``_rows`` reads them, as mappings of its columns' keys to
        values converted as SQLAlchemy's result would convert them (timestamps, JSON)."""
        found = self._rows(statement, values, conn)
        if self._writer is None:  # PostgreSQL: SQLAlchemy's rows, converted already
            return [row._mapping for row in found]
        convert = _sqlite_result(statement)
        return [convert(row) for row in found]

    def _change_row(self, conn: Connection, statement: Update, values: Mapping[str, Any]) -> int:
        """Run ``statement`` (an update of this module's, built once) with ``values``, in
        ``conn``'s transaction, and return how many rows it changed; the keys of ``values``
        that name columns are what it sets. On SQLite on the driver connection, as
        ``_write_rows`` runs its inserts, each value converted as SQLAlchemy would convert it."""
        if self._writer is None:  # PostgreSQL
            return int(conn.execute(statement, dict(values)).rowcount)
        sql, parameters = _raw_sqlite_write(statement, tuple(values))
        cursor = _driver(conn).cursor()
        try:
            return int(cursor.execute(sql, parameters(values)).rowcount)
        finally:
            cursor.close()

    def _autocommit_rows(self, statement: Any, values: Mapping[str, Any]) -> list[Any]:
        """``statement``'s rows on SQLite, as one statement in autocommit on the store's reader
        connection (see ``_reader_connection``): one statement is one snapshot, and
        SQLAlchemy's execution around it (``BEGIN``, events, result processing, the rollback,
        a new engine's compilation) is skipped. For reads of every plan and step, and for the
        run's own records: each costs a few statements, and a new engine (one per ``reconciler
        apply``) compiled each of them first."""
        sql, bind = _raw_sqlite(statement)
        with self._translated(), self._reader_lock:
            reader = self._reader_connection()
            try:
                rows: list[Any] = reader.execute(sql, bind(values)).fetchall()
            except BaseException:
                self._close_reader()  # whatever broke, the next read starts on a new one
                raise
        return rows

    def _reader_connection(self) -> sqlite3.Connection:
        """SQLite's driver connection kept for ``_autocommit_rows``, made on first use; call
        under ``_reader_lock``. It is taken out of the pool (``detach``) and kept, because a
        pool checkout and its reset on return cost more than the statement itself, and after
        minutes idle they miss the CPU's caches too. Reads in autocommit hold no snapshot
        between statements, so one connection serves every thread in turn (the dialect opens
        file databases with ``check_same_thread`` off); it was made by the pool, so it has
        the pragmas ``_sqlite_connect`` sets."""
        if self._reader is None:
            fairy = self._engine.raw_connection()
            fairy.detach()  # the pool forgets it; closing it is ``_close_reader``'s
            connection = fairy.dbapi_connection
            assert isinstance(connection, sqlite3.Connection)
            self._reader = connection
        return self._reader

    def _close_reader(self) -> None:
        """Close the reader connection, if any (under ``_reader_lock``)."""
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()

    def _kept_resources(
        self, environment: str, token: str | None, wanted: Sequence[str]
    ) -> dict[str, ResourceRecord] | None:
        """These resources from the state ``recorded`` keeps decoded, if it is the state at
        ``token`` (the database's): then a step's read costs one small query instead of a query
        and a decode per record, and still sees every other writer's writes (each replaced the
        token). Read under the lock, without ``shared``: a step's read must not make the next
        write copy the kept mappings."""
        with self._recorded_lock:
            kept = self._recorded.get(environment)
            if kept is None or kept.token != token:
                return None
            return {uid: kept.resources[uid] for uid in wanted if uid in kept.resources}

    @staticmethod
    def _token(conn: Connection, environment: str) -> str | None:
        token: str | None = conn.execute(_TOKEN, {"environment": environment}).scalar_one_or_none()
        return token

    @classmethod
    def _read_recorded(cls, conn: Connection, environment: str) -> RecordedState:
        return RecordedState(environment, *cls._read_rows(conn, environment))

    @staticmethod
    def _read_rows(
        conn: Connection, environment: str
    ) -> tuple[dict[str, WorkloadRecord], dict[str, ResourceRecord]]:
        found_workloads = conn.execute(_WORKLOADS, {"environment": environment})
        by_name = {r.name: r for r in map(rows.workload_record, found_workloads)}
        found_resources = conn.execute(_RESOURCES, {"environment": environment})
        by_uid = {r.uid: r for r in map(rows.resource_record, found_resources)}
        return by_name, by_uid

    def save_workload(self, environment: str, record: WorkloadRecord) -> None:
        self.save_workloads(environment, [record])

    def save_workloads(self, environment: str, records: Sequence[WorkloadRecord]) -> None:
        """Upsert many workloads in one statement (a publish marks thousands Synced)."""
        if not records:
            return
        now = self.now()
        values = [rows.workload_row(environment, r, now) for r in records]
        with self._write() as conn:
            tokens = self._bump(conn, environment, ensure_at=now)
            self._upsert(conn, workloads, values)
        self._advance(
            environment, tokens, saved_workloads=[rows.workload_as_read(v) for v in values]
        )

    def set_workload_status(self, environment: str, names: Collection[str], status: str) -> None:
        """Set the status of these recorded workloads, leaving the rest of each record as it
        is: a publish marks thousands Synced, and rewriting every spec for that cost more than
        the publish."""
        wanted = sorted(set(names))
        if not wanted:
            return
        now = self.now()
        with self._write() as conn:
            tokens = self._bump(conn, environment)
            if self._writer is not None:  # SQLite: one statement, the names one JSON array
                values = {
                    "in_environment": environment,
                    "names": rows.canonical_json(wanted),
                    "new_status": status,
                    "now": now,
                }
                self._change_row(conn, _SET_STATUS_SQLITE, values)
            else:
                for start in range(0, len(wanted), _NAMES_PER_STATEMENT):
                    chunk = wanted[start : start + _NAMES_PER_STATEMENT]
                    conn.execute(
                        _SET_STATUS,
                        {
                            "in_environment": environment,
                            "names": chunk,
                            "new_status": status,
                            "now": now,
                        },
                    )
        self._advance(environment, tokens, restated=(wanted, status, now))

    def delete_workload(self, environment: str, name: str) -> None:
        self.delete_workloads(environment, [name])

    def delete_workloads(self, environment: str, names: Collection[str]) -> None:
        """Forget these recorded workloads in one write (a publish forgets what its run
        removed)."""
        gone = sorted(set(names))
        if not gone:
            return
        with self._write() as conn:
            tokens = self._bump(conn, environment)
            for start in range(0, len(gone), _NAMES_PER_STATEMENT):
                conn.execute(
                    delete(workloads).where(
                        workloads.c.environment == environment,
                        workloads.c.name.in_(gone[start : start + _NAMES_PER_STATEMENT]),
                    )
                )
        self._advance(environment, tokens, gone_workloads=gone)

    def save_resource(self, environment: str, record: ResourceRecord) -> None:
        self.save_resources(environment, [record])

    def save_resources(self, environment: str, records: Sequence[ResourceRecord]) -> None:
        """Upsert many resources in one statement; ``created_at`` survives updates."""
        if not records:
            return
        now = self.now()
        values = [rows.resource_row(environment, r, now) for r in records]
        with self._write() as conn:
            tokens = self._bump(conn, environment, ensure_at=now)
            self._upsert(conn, resources, values, keep=frozenset({"created_at"}))
        self._advance(
            environment, tokens, saved_resources=[rows.resource_as_read(v) for v in values]
        )

    def delete_resource(self, environment: str, uid: str) -> None:
        with self._write() as conn:
            tokens = self._bump(conn, environment)
            conn.execute(
                delete(resources).where(
                    resources.c.environment == environment, resources.c.uid == uid
                )
            )
        self._advance(environment, tokens, gone_resources=[uid])

    # -- runs and steps ---------------------------------------------------------------------

    def create_run(
        self,
        environment: str,
        commit: str,
        *,
        trigger: str,
        plan: JsonObject | None = None,
        trace_id: str | None = None,
        status: str = "Pending",
        scope: Collection[str] | None = None,
    ) -> RunRecord:
        """A new run of ``commit``; ``scope`` names its workloads when it is not all of them."""
        run = RunRecord(
            id=str(uuid.uuid4()),
            environment=environment,
            commit=commit,
            status=status,
            trigger=trigger,
            started_at=self.now(),
            plan=plan,
            trace_id=trace_id,
            scope=None if scope is None else tuple(sorted(set(scope))),
        )
        with self._write() as conn:
            self._ensure_environment(conn, environment, run.started_at)
            if status == "Running":
                self._note_applying(conn, environment, commit)
            # The row as the statement's parameters, never in it (``.values(row)``):
            # SQLAlchemy caches the first statement it compiles of a shape, with the values in
            # it, for the process's life, and a run's plan holds an action per workload and
            # resource (about 5 MiB for a daemon's run of 500 workloads, kept for nothing).
            self._write_rows(conn, _insert_statement(runs), [rows.run_row(run)])
        return run

    def update_run(
        self,
        run_id: str,
        *,
        status: str,
        plan: JsonObject | None = None,
        error_code: str | None = None,
        message: str | None = None,
        finished: bool = False,
        scope: Collection[str] | None = None,
        with_plan: bool = True,
    ) -> RunRecord:
        """Move a run to ``status``; ``plan`` and ``scope`` replace the run's when given;
        ``finished`` stamps ``finished_at``. Raises KeyError for an unknown run.

        The run is returned as stored; without ``with_plan`` its plan is left out (None), as
        ``list_runs`` leaves it out: a run's plan holds an action per workload and resource,
        and decoding it to return it cost a first apply of 1,000 workloads more than a
        hundred of its steps, twice, for callers that hold the plan already."""
        changes: dict[str, Any] = {"status": status, "error_code": error_code, "message": message}
        if plan is not None:
            changes["plan"] = dict(plan)
        if scope is not None:
            changes["scope"] = sorted(set(scope))
        if finished:
            changes["finished_at"] = self.now()
        with self._write() as conn:
            if self._change_row(conn, _UPDATE_RUN, {**changes, "run_id": run_id}) != 1:
                raise KeyError(run_id)
            (values,) = self._mappings(_run_statement(with_plan), {"run_id": run_id}, conn)
            found = rows.run_from(values)
            if status == "Running":
                self._note_applying(conn, found.environment, found.commit)
            return found

    def _note_applying(self, conn: Connection, environment: str, commit: str) -> None:
        """A run starts (or resumes) applying ``commit``: until a commit is settled after it,
        what it records may be ahead of the last commit (``plan_inputs``)."""
        values = {"environment": environment, "commit": commit, "pattern": f"% {commit} %"}
        self._run_in(conn, _NOTE_APPLYING, values)

    def get_run(self, run_id: str) -> RunRecord | None:
        with self._read() as conn:
            row = conn.execute(select(runs).where(runs.c.id == run_id)).one_or_none()
            return None if row is None else rows.run_record(row)

    def list_runs(
        self, environment: str | None = None, limit: int = 50, *, with_plans: bool = False
    ) -> list[RunRecord]:
        """Newest first. Plans are left out (``plan`` is None) unless asked for: a plan holds an
        action per workload and resource, and decoding twenty of them for every reconcile of a
        large environment costs more than the reconcile."""
        query = _runs_statement(with_plans, environment is not None)
        values: dict[str, Any] = {"limit": limit}
        if environment is not None:
            values["environment"] = environment
        return [rows.run_from(found) for found in self._mappings(query, values)]

    def pins(self, environment: str) -> dict[str, PinRecord]:
        """The environment's pinned workloads, by name."""
        with self._read() as conn:
            return self._pins_in(conn, environment)

    @staticmethod
    def _pins_in(conn: Connection, environment: str) -> dict[str, PinRecord]:
        found = conn.execute(_PINS, {"environment": environment})
        return {r.workload: PinRecord(r.workload, r.file, r.commit, r.head) for r in found}

    def set_pin(self, environment: str, pin: PinRecord) -> None:
        with self._write() as conn:
            conn.execute(
                delete(pins_table).where(
                    pins_table.c.environment == environment, pins_table.c.workload == pin.workload
                )
            )
            conn.execute(
                pins_table.insert().values(
                    environment=environment,
                    workload=pin.workload,
                    file=pin.file,
                    commit=pin.commit,
                    head=pin.head,
                )
            )

    def delete_pin(self, environment: str, workload: str) -> None:
        with self._write() as conn:
            conn.execute(
                delete(pins_table).where(
                    pins_table.c.environment == environment, pins_table.c.workload == workload
                )
            )

    def save_step(self, run_id: str, step: StepRecord) -> None:
        """Checkpoint a step (insert or replace by ``step_id``)."""
        self.save_steps(run_id, [step])

    def save_steps(self, run_id: str, records: Sequence[StepRecord]) -> None:
        """Checkpoint several steps in one statement (every step Pending at the start of a
        run of thousands), in one transaction unless the caller's joins it."""
        if not records:
            return
        with self._write() as conn:
            self._upsert(conn, steps, [rows.step_row(run_id, r) for r in records])

    def steps(self, run_id: str) -> list[StepRecord]:
        """A run's steps by ``step_id``."""
        with self._read() as conn:
            return [rows.step_record(row) for row in conn.execute(_STEPS, {"run_id": run_id})]

    def step_statuses(self, run_id: str) -> list[tuple[str, str]]:
        """A run's steps as ``(step_id, status)``, nothing decoded."""
        return [(row[0], row[1]) for row in self._rows(_STEP_STATUSES, {"run_id": run_id})]

    def step_targets(self, run_id: str, *, kind: str, action: str, status: str) -> list[str]:
        """The targets of a run's steps of ``kind`` and ``action`` recorded in ``status``,
        sorted, nothing else read: a publish asks which workloads its run removed, and
        decoding every step record of a large run to find them cost more than the question."""
        values = {"run_id": run_id, "kind": kind, "action": action, "status": status}
        return [row[0] for row in self._rows(_STEP_TARGETS, values)]

    # -- audit ------------------------------------------------------------------------------

    def audit(
        self,
        *,
        actor: str,
        action: str,
        subject: str,
        environment: str | None = None,
        detail: JsonObject | None = None,
    ) -> AuditRecord:
        """Append an entry chained to the last one; appends are serialised so the chain is one
        line even with several replicas writing (an advisory lock, or SQLite's write lock)."""
        with self._write() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(select(func.pg_advisory_xact_lock(AUDIT_LOCK)))
            found = self._run_in(conn, _AUDIT_HEAD, {})
            last = found[0] if found else None
            fields: dict[str, Any] = {
                "id": 1 if last is None else last[0] + 1,
                "at": self.now(),
                "actor": actor,
                "action": action,
                "environment": environment,
                "subject": subject,
                "detail": dict(detail or {}),
            }
            prev = rows.GENESIS if last is None else last[1]
            record = AuditRecord(**fields, prev_hash=prev, hash=rows.audit_hash(prev, fields))
            self._write_rows(conn, _insert_statement(audit), [rows.audit_row(record)])
        return record

    def audit_log(self, environment: str | None = None, limit: int = 100) -> list[AuditRecord]:
        """Newest first."""
        query = select(audit).order_by(audit.c.id.desc()).limit(limit)
        if environment is not None:
            query = query.where(audit.c.environment == environment)
        with self._read() as conn:
            return [rows.audit_record(row) for row in conn.execute(query)]

    def verify_audit(self) -> int | None:
        """The id of the first entry whose hash or link is wrong, or None if the chain holds.

        Catches an edited, inserted, renumbered or removed entry anywhere but at the very end:
        removing the newest entries leaves a shorter chain that is still valid.
        """
        prev = rows.GENESIS
        with self._read() as conn:
            result = conn.execution_options(yield_per=1000).execute(
                select(audit).order_by(audit.c.id)
            )
            for row in result:
                entry = row._mapping
                if entry["prev_hash"] != prev or entry["hash"] != rows.audit_hash(prev, entry):
                    return int(entry["id"])
                prev = entry["hash"]
        return None


def _schema_revision(conn: Connection) -> str | None:
    """The revision in ``alembic_version`` (None for an empty database), read as Alembic's
    ``MigrationContext.get_current_revision`` reads it, without importing Alembic."""
    if not inspect(conn).has_table("alembic_version"):
        return None
    version = column("version_num", String)
    versions = list(conn.execute(select(version).select_from(table("alembic_version"))).scalars())
    if len(versions) > 1:
        raise StoreError(
            Code.STORE_MIGRATION_FAILED, f"the database has several schema heads: {versions}"
        )
    return versions[0] if versions else None


def _split_head_and_pins(found: Iterable[Any]) -> tuple[_Head | None, dict[str, PinRecord]]:
    """``_HEAD_AND_PINS``' rows, from SQLAlchemy or the driver: the environment's token, last
    commit and unsettled commits (the row whose workload is NULL; None without one) and its
    pins by workload."""
    head = None
    pins: dict[str, PinRecord] = {}
    for revision, last_commit, unsettled, workload, file, commit, pinned_head in found:
        if workload is None:
            head = (revision, last_commit, frozenset(unsettled.split()) if unsettled else _NONE)
        else:
            pins[workload] = PinRecord(workload, file, commit, pinned_head)
    return head, pins


def _driver(conn: Connection) -> sqlite3.Connection:
    """SQLite's own connection under ``conn``, for the statements this module runs on it in
    ``conn``'s transaction."""
    driver = conn.connection.driver_connection
    assert isinstance(driver, sqlite3.Connection)
    return driver


@lru_cache(maxsize=64)
def _raw_sqlite(statement: Any) -> tuple[str, Callable[[Mapping[str, Any]], tuple[Any, ...]]]:
    """A statement as SQLite's driver runs it: its text, and what puts the values it binds in
    order (the caller's, and the constants SQLAlchemy binds itself: a limit's offset).
    Compiled once per process, not once per engine (an engine's compiled cache starts
    empty)."""
    compiled = statement.compile(dialect=_sqlite_dialect())
    names = tuple(compiled.positiontup or ())
    constants = {name: value for name, value in compiled.params.items() if value is not None}

    def bind(values: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(values[n] if n in values else constants[n] for n in names)

    return str(compiled), bind


class _Savepoint:
    """A savepoint in ``conn``'s transaction. On SQLite it is made on the driver connection,
    as the transaction's other hot statements are (``_run_in``): SQLAlchemy's nested
    transaction compiles its ``SAVEPOINT`` and ``RELEASE`` anew each time (their names are
    new), and a run's group-committed checkpoints make one per step. Savepoints are only ever
    opened and closed in order, so one name is enough: SQLite's ``RELEASE`` and
    ``ROLLBACK TO`` act on the newest savepoint of that name."""

    _NAME: Final = "checkpoint"

    def __init__(self, conn: Connection, nested: Any) -> None:
        self._conn = conn
        self._nested = nested  # SQLAlchemy's, on PostgreSQL

    @classmethod
    def begin(cls, conn: Connection, *, sqlite: bool) -> _Savepoint:
        if not sqlite:
            return cls(conn, conn.begin_nested())
        _driver(conn).execute(f"SAVEPOINT {cls._NAME}")
        return cls(conn, None)

    def commit(self) -> None:
        if self._nested is not None:
            self._nested.commit()
            return
        _driver(self._conn).execute(f"RELEASE SAVEPOINT {self._NAME}")

    def rollback(self) -> None:
        """Undo the savepoint's writes and close it; nothing to do when it is closed already
        (its commit raised) or SQLite rolled the whole transaction back on an error."""
        if self._nested is not None:
            if self._nested.is_active:
                self._nested.rollback()
            return
        driver = _driver(self._conn)
        if driver.in_transaction:
            try:
                driver.execute(f"ROLLBACK TO SAVEPOINT {self._NAME}")
            except sqlite3.OperationalError:  # released already: its commit failed after
                return
            driver.execute(f"RELEASE SAVEPOINT {self._NAME}")


@lru_cache(maxsize=1)
def _sqlite_dialect() -> Dialect:
    """The dialect statements run on the driver are compiled with (``_raw_sqlite``,
    ``_raw_sqlite_write``), configured as ``create_engine`` configures an engine's (its JSON
    serializer above all), so that values convert the same way."""
    return sqlite.dialect(json_serializer=rows.canonical_json, json_deserializer=rows.decode_json)


@lru_cache(maxsize=64)
def _raw_sqlite_write(
    statement: Insert | Update, keys: tuple[str, ...]
) -> tuple[str, Callable[[Mapping[str, Any]], list[Any]]]:
    """An insert (or update) for rows with ``keys``, as SQLite's driver runs it: its text, and
    what turns a row into the values it binds, in order, each converted as SQLAlchemy's
    execution would (JSON, timestamps). Compiled once per process, not once per engine."""
    dialect = _sqlite_dialect()
    compiled = statement.compile(dialect=dialect, column_keys=list(keys))
    names = tuple(compiled.positiontup or ())
    processors = tuple(
        compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names
    )
    return str(compiled), _parameters(names, processors)


def _parameters(
    names: tuple[str, ...], processors: tuple[Callable[[Any], Any] | None, ...]
) -> Callable[[Mapping[str, Any]], list[Any]]:
    """A row's values for ``names``, in order, each through its processor (None: as it is).

    The values are taken in one call and only the columns with a processor (a run's step rows
    have four of fourteen) are converted: a generator over every column, per row, cost a
    fifth of the conversion, and every checkpoint writes three rows a step."""
    take = itemgetter(*names) if len(names) != 1 else (lambda row: (row[names[0]],))
    converted = tuple((i, process) for i, process in enumerate(processors) if process is not None)

    def parameters(row: Mapping[str, Any]) -> list[Any]:
        values = list(take(row))
        for i, process in converted:
            values[i] = process(values[i])
        return values

    return parameters


@lru_cache(maxsize=16)
def _sqlite_result(statement: Select[Any]) -> Callable[[Sequence[Any]], dict[str, Any]]:
    """What turns a row of ``statement`` read on SQLite's driver into a mapping of its
    columns' keys to their values, each converted by the processor SQLAlchemy's result would
    use (timestamps, JSON); built once per process."""
    dialect = _sqlite_dialect()
    columns = list(statement.selected_columns)
    keys = tuple(str(column.key) for column in columns)
    converted = tuple(
        (i, process)
        for i, column in enumerate(columns)
        if (process := column.type.dialect_impl(dialect).result_processor(dialect, None))
        is not None
    )

    def mapping(row: Sequence[Any]) -> dict[str, Any]:
        values = list(row)
        for i, process in converted:
            values[i] = process(values[i])
        return dict(zip(keys, values, strict=True))

    return mapping


_UPDATE_RUN: Final = update(runs).where(runs.c.id == bindparam("run_id"))
"""A run's update: the columns it sets are the keys of the values it runs with."""


def _run_columns(with_plan: bool) -> list[Any]:
    """A run's columns, its plan left out unless asked for (see ``update_run``)."""
    return [c for c in runs.columns if with_plan or c.name != "plan"]


@lru_cache(maxsize=2)
def _run_statement(with_plan: bool) -> Select[Any]:
    """One run by id; built once."""
    return select(*_run_columns(with_plan)).where(runs.c.id == bindparam("run_id"))


@lru_cache(maxsize=4)
def _runs_statement(with_plans: bool, of_environment: bool) -> Select[Any]:
    """The newest runs (of one environment); built once."""
    query = select(*_run_columns(with_plans))
    query = query.order_by(runs.c.started_at.desc(), runs.c.id.desc())
    if of_environment:
        query = query.where(runs.c.environment == bindparam("environment"))
    return query.limit(bindparam("limit"))


@lru_cache(maxsize=16)
def _insert_statement(table: Table) -> Insert:
    """A plain insert into ``table``, built once (for ``Store._write_rows``)."""
    return table.insert()


@dataclass(slots=True)
class _Kept:
    """The decoded state of an environment at ``token``, kept by ``Store.recorded`` and
    carried over this process's own writes; read and changed under the store's lock.

    ``recorded`` hands out one ``RecordedState`` over the kept mappings until the next write
    carried over, which first copies them (``unshare``): a state handed out never changes."""

    token: str | None
    workloads: dict[str, WorkloadRecord]
    resources: dict[str, ResourceRecord]
    unsorted: bool = False
    state: RecordedState | None = None

    def shared(self, environment: str) -> RecordedState:
        if self.state is None:
            if self.unsorted:  # new names: in name order, as a read gives them
                self.workloads = dict(sorted(self.workloads.items()))
                self.resources = dict(sorted(self.resources.items()))
                self.unsorted = False
            self.state = RecordedState(environment, self.workloads, self.resources)
        return self.state

    def unshare(self) -> None:
        if self.state is not None:
            self.workloads, self.resources = dict(self.workloads), dict(self.resources)
            self.state = None
