"""Store fixtures: every store test runs on a real SQLite file and on the real PostgreSQL server.

PostgreSQL gets one throwaway database per test session (``reconciler_test_<random>``), emptied
before each test by recreating its schema, and dropped at the end with any connection a failed
test left behind. ``RECONCILER_TEST_POSTGRES`` names another server (default: the local one).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from reconciler.store import ResourceRecord, StepRecord, Store, WorkloadRecord

SERVER = os.environ.get("RECONCILER_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
DIALECTS = ["sqlite", "postgresql"]


class TickingClock:
    """A clock that moves one second per reading, so that every stamp is distinct and known."""

    def __init__(self, start: datetime = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)):
        self.current = start

    def __call__(self) -> datetime:
        self.current += timedelta(seconds=1)
        return self.current


def _admin() -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(f"{SERVER}/postgres", autocommit=True, connect_timeout=3)


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """A fresh database on the PostgreSQL server for this session; dropped afterwards."""
    name = f"reconciler_test_{secrets.token_hex(6)}"
    try:
        admin = _admin()
    except psycopg.OperationalError as error:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is not reachable at {SERVER}: {error}")
        pytest.skip(f"PostgreSQL is not reachable at {SERVER}: {error}")
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield f"{SERVER}/{name}"
    with _admin() as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


@pytest.fixture
def pg_url(pg_server_url: str) -> str:
    """The session's PostgreSQL database, emptied: no tables, no alembic_version."""
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")
    return pg_server_url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/nested/state.db"


@pytest.fixture(params=DIALECTS)
def store_url(request: pytest.FixtureRequest) -> str:
    """An empty store's URL, once for SQLite and once for PostgreSQL."""
    url: str = request.getfixturevalue(f"{request.param.replace('postgresql', 'pg')}_url")
    return url


@pytest.fixture
def clock() -> TickingClock:
    return TickingClock()


@pytest.fixture
def store(store_url: str, clock: TickingClock) -> Iterator[Store]:
    with Store.open(store_url, clock=clock) as opened:
        yield opened


def workload(name: str = "web", **changes: object) -> WorkloadRecord:
    fields: dict[str, object] = {
        "name": name,
        "commit": "a" * 40,
        "file": f"apps/{name}/score.yaml",
        "spec_hash": "sha256:" + "1" * 64,
        "spec": {
            "apiVersion": "score.dev/v1b1",
            "metadata": {"name": name, "annotations": {"z": "last", "a": "first"}},
            "containers": {"main": {"image": "nginx:1.27", "variables": {"PORT": "8080"}}},
        },
        "sources": {f"apps/{name}/score.yaml": "b" * 40},
        "status": "Synced",
    }
    fields.update(changes)
    return WorkloadRecord(**fields)  # type: ignore[arg-type]


def resource(uid: str = "postgres.default#shop-db", **changes: object) -> ResourceRecord:
    kind, _, rest = uid.partition(".")
    class_, _, res_id = rest.partition("#")
    fields: dict[str, object] = {
        "uid": uid,
        "type": kind,
        "class_": class_,
        "res_id": res_id,
        "provisioner": "builtin/postgres",
        "params_hash": "sha256:" + "2" * 64,
        "params": {"version": 16, "extensions": ["pgcrypto"], "ratio": 0.5, "on": True},
        "state": {"database": "shop", "nested": {"k": None}},
        "outputs": {"host": "db.internal", "port": 5432},
        "secret_refs": {"password": "vault:kv/shop-db#password"},
        "source_workload": "web",
        "status": "Healthy",
    }
    fields.update(changes)
    return ResourceRecord(**fields)  # type: ignore[arg-type]


def step(step_id: str = "010-create-db", **changes: object) -> StepRecord:
    fields: dict[str, object] = {
        "step_id": step_id,
        "kind": "resource",
        "target": "postgres.default#shop-db",
        "action": "create",
        "status": "Succeeded",
        "attempt": 2,
        "depends_on": ("000-approve",),
        "started_at": datetime(2025, 1, 1, 12, 0, 0, 123456, tzinfo=UTC),
        "finished_at": datetime(2025, 1, 1, 12, 0, 1, tzinfo=UTC),
        "error_code": None,
        "message": "created",
        "outputs": {"host": "db.internal"},
        "log": "line 1\nline 2 é\n",
    }
    fields.update(changes)
    return StepRecord(**fields)  # type: ignore[arg-type]


Builders = tuple[
    Callable[..., WorkloadRecord], Callable[..., ResourceRecord], Callable[..., StepRecord]
]


@pytest.fixture
def build() -> Builders:
    """Record builders with every field set to something a round trip could lose."""
    return workload, resource, step


def fill(store: Store) -> None:
    """Something in every table, for backup tests."""
    store.save_workload("prod", workload())
    store.save_workload("staging", workload("api"))
    store.save_resources("prod", [resource(), resource("redis.default#cache", state={})])
    store.set_last_commit("prod", "c" * 40)
    run = store.create_run("prod", "c" * 40, trigger="push", plan={"steps": ["010-create-db"]})
    store.save_step(run.id, step())
    store.update_run(run.id, status="Succeeded", finished=True, message="ok")
    store.audit(actor="daemon", action="apply", subject="web", environment="prod", detail={"n": 1})
    store.audit(actor="alice", action="approve", subject="run", detail={"why": "ok ✓"})


@pytest.fixture
def filled(store: Store) -> Store:
    fill(store)
    return store


@pytest.fixture
def filler() -> Callable[[Store], None]:
    """``fill`` for tests that hold more than one store."""
    return fill
