"""The store's tables, as SQLAlchemy Core metadata.

This is the shape the code reads and writes; the migrations in ``migrations/versions`` build it
in a database, and a test proves the two agree. Types are the portable ones, so that SQLite and
PostgreSQL run the same statements: ``JSON`` (text in SQLite, ``json`` in PostgreSQL) and
timestamps that are always timezone-aware UTC whatever the database hands back.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
)

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING)


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp that goes in and comes out as aware UTC.

    SQLite keeps no zone and PostgreSQL answers in the session's zone; normalising here means
    the rest of the code (and the audit hash) only ever sees one form. Naive values are refused:
    a naive timestamp is a bug in the caller, not something to guess about.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive timestamp {value.isoformat()}: use an aware UTC datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            value = datetime.fromisoformat(str(value))
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _json() -> JSON:
    """JSON where Python None is SQL NULL, so that "no value" looks the same in both databases."""
    return JSON(none_as_null=True)


NAME = 253  # a DNS subdomain: environments, workloads and resource ids fit
COMMIT = 64  # a SHA-256 object id in hex
CODE = 16  # an RCN code

environments = Table(
    "environments",
    metadata,
    Column("name", String(NAME), primary_key=True),
    Column("last_commit", String(COMMIT)),
    Column("last_reconciled_at", UtcDateTime()),
    Column("updated_at", UtcDateTime(), nullable=False),
    # Replaced (a random token) by every write to the environment's workloads or resources, so
    # that a reader can tell whether the recorded state it decoded earlier is still current.
    Column("revision", String(32)),
    # The commits runs started applying since ``last_commit`` was settled, space-separated
    # (NULL: none): what they recorded may be ahead of ``last_commit`` (Store.plan_inputs).
    Column("unsettled", Text),
)

workloads = Table(
    "workloads",
    metadata,
    Column("environment", String(NAME), ForeignKey("environments.name"), primary_key=True),
    Column("name", String(NAME), primary_key=True),
    Column("commit", String(COMMIT), nullable=False),
    Column("file", Text, nullable=False),
    Column("spec_hash", String(128), nullable=False),
    Column("spec", _json(), nullable=False),
    Column("sources", _json(), nullable=False),
    Column("source", _json(), nullable=False),
    Column("status", String(32), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
)

resources = Table(
    "resources",
    metadata,
    Column("environment", String(NAME), ForeignKey("environments.name"), primary_key=True),
    Column("uid", String(1024), primary_key=True),
    Column("type", String(NAME), nullable=False),
    Column("class", String(NAME), nullable=False),
    Column("res_id", String(1024), nullable=False),
    Column("source_workload", String(NAME)),
    Column("provisioner", String(NAME), nullable=False),
    Column("params_hash", String(128), nullable=False),
    Column("params", _json(), nullable=False),
    Column("state", _json(), nullable=False),
    Column("outputs", _json(), nullable=False),
    Column("secret_refs", _json(), nullable=False),
    Column("status", String(32), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
)

runs = Table(
    "runs",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("environment", String(NAME), ForeignKey("environments.name"), nullable=False),
    Column("commit", String(COMMIT), nullable=False),
    Column("status", String(32), nullable=False),
    Column("trigger", String(64), nullable=False),
    Column("plan", _json()),
    Column("trace_id", String(32)),
    Column("started_at", UtcDateTime(), nullable=False),
    Column("finished_at", UtcDateTime()),
    Column("error_code", String(CODE)),
    Column("message", Text),
    Column("scope", _json()),
    Index(None, "environment", "started_at"),
)

steps = Table(
    "steps",
    metadata,
    Column("run_id", String(36), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("step_id", String(1024), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("target", String(1024), nullable=False),
    Column("action", String(32), nullable=False),
    Column("status", String(32), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("depends_on", _json(), nullable=False),
    Column("started_at", UtcDateTime()),
    Column("finished_at", UtcDateTime()),
    Column("error_code", String(CODE)),
    Column("message", Text),
    Column("outputs", _json(), nullable=False),
    Column("log", Text, nullable=False),
)

# The id is assigned by the store under a lock, not by a sequence: the hash covers it, and a
# restored backup must keep its ids without a sequence falling out of step.
audit = Table(
    "audit",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("at", UtcDateTime(), nullable=False),
    Column("actor", String(NAME), nullable=False),
    Column("action", String(64), nullable=False),
    Column("environment", String(NAME)),
    Column("subject", String(1024), nullable=False),
    Column("detail", _json(), nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index(None, "environment", "id"),
)

# Secret values encrypted by the built-in secret store (providers/secrets.py): the ciphertext is
# a Fernet token, ASCII text, so that JSON backups carry it as is; the key never comes here.
secrets = Table(
    "secrets",
    metadata,
    Column("ref", String(2048), primary_key=True),
    Column("ciphertext", Text, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
)

# Who works on which (environment, workload) key, until when (store/leases.py). Rows come and go
# as replicas take and release work; a row past ``expires_at`` belongs to nobody.
leases = Table(
    "leases",
    metadata,
    Column("key", String(512), primary_key=True),
    Column("holder", String(NAME), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=False),
    Index(None, "holder"),
)


pins = Table(
    "pins",
    metadata,
    Column("environment", String(NAME), primary_key=True),
    Column("workload", String(NAME), primary_key=True),
    Column("file", Text, nullable=False),
    Column("commit", String(COMMIT), nullable=False),
    Column("head", String(COMMIT), nullable=False),
)
