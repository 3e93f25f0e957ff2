"""The recorded state: what each environment last applied, runs and their steps, and the audit log.

Only this package talks to a database (SQLAlchemy Core, Alembic, psycopg 3); the rest of the
reconciler sees ``Store`` and the frozen records. docs/store.md describes the tables, URLs,
backups and why no secret value is ever stored.
"""

from reconciler.store.errors import StoreError
from reconciler.store.records import (
    AuditRecord,
    EnvironmentRecord,
    RecordedState,
    ResourceRecord,
    RunRecord,
    StepRecord,
    WorkloadRecord,
)
from reconciler.store.store import Store
from reconciler.store.url import ENV_VAR, default_store_url, find_git_dir, parse_store_url

__all__ = [
    "ENV_VAR",
    "AuditRecord",
    "EnvironmentRecord",
    "RecordedState",
    "ResourceRecord",
    "RunRecord",
    "StepRecord",
    "Store",
    "StoreError",
    "WorkloadRecord",
    "default_store_url",
    "find_git_dir",
    "parse_store_url",
]
