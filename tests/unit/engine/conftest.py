"""Engine fixtures: a real store (SQLite file, and the real PostgreSQL where a test asks for it),
the recording checkpointer and the fake sleep of ``support``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.engine import Executor
from reconciler.store import Store
from tests.unit.engine.support import Calls, FakeSleep, RecordingCheckpointer, new_run
from tests.unit.store.conftest import pg_server_url, pg_url

__all__ = ["pg_server_url", "pg_url"]


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    with Store.open("sqlite:///" + str(tmp_path / "state.db")) as store:
        yield store


@pytest.fixture(params=["sqlite", "postgresql"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A store on a SQLite file, then on the real PostgreSQL server."""
    if request.param == "sqlite":
        url = "sqlite:///" + str(tmp_path / "state.db")
    else:
        url = request.getfixturevalue("pg_url")
    with Store.open(url) as store:
        yield store


@pytest.fixture
def recorder(sqlite_store: Store) -> RecordingCheckpointer:
    return RecordingCheckpointer(sqlite_store)


@pytest.fixture
def fake_sleep() -> FakeSleep:
    return FakeSleep()


@pytest.fixture
def executor(recorder: RecordingCheckpointer, fake_sleep: FakeSleep) -> Executor:
    return Executor(recorder, parallelism=4, sleep=fake_sleep, uniform=lambda: 0.5)


@pytest.fixture
def calls() -> Calls:
    return Calls()


@pytest.fixture
def run_id(sqlite_store: Store) -> str:
    return new_run(sqlite_store)
