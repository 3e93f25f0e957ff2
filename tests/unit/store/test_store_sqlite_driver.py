"""Writes the store makes on SQLite's driver connection store what SQLAlchemy's execution of the
same statement stores: the same text, the same SQLite types, value for value."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Table

from reconciler.store import Store
from reconciler.store import rows as store_rows
from reconciler.store.records import AuditRecord, RunRecord
from reconciler.store.store import _insert_statement, _parameters, _upsert_statement
from reconciler.store.tables import audit, environments, resources, runs, secrets, steps, workloads
from tests.unit.store.conftest import resource, step, workload

NOW = datetime(2025, 3, 4, 5, 6, 7, 89, tzinfo=UTC)
LATER = datetime(2025, 3, 4, 7, 6, 7, tzinfo=UTC) + timedelta(hours=3)


RUN_ID = "0" * 36


def _as_stored(store: Store, table: Table) -> list[tuple[Any, ...]]:
    """Every row of ``table`` with the SQLite type of each value, in key order."""
    columns = [c.name for c in table.columns]
    typed = ", ".join(f'"{c}", typeof("{c}")' for c in columns)
    keys = ", ".join(f'"{c.name}"' for c in table.primary_key.columns)
    with store.engine.connect() as conn:
        driver = conn.connection.driver_connection
        assert driver is not None
        return list(driver.execute(f"SELECT {typed} FROM {table.name} ORDER BY {keys}"))


def _inserts() -> list[tuple[Table, Sequence[Mapping[str, Any]]]]:
    run = RunRecord(RUN_ID, "prod", "c" * 40, "Running", "push", NOW, plan={"a": [1, None]})
    other = RunRecord("1" * 36, "prod", "d" * 40, "Failed", "cli", NOW, None, "t" * 32, LATER)
    entry = AuditRecord(
        1, NOW, "alice", "run.created", None, RUN_ID, {"n": "é"}, "0" * 64, "1" * 64
    )
    return [
        (runs, [store_rows.run_row(run), store_rows.run_row(replace(other, scope=("a", "b")))]),
        (audit, [store_rows.audit_row(entry)]),
    ]


def _cases() -> list[tuple[Table, frozenset[str], Sequence[Mapping[str, Any]]]]:
    run = RUN_ID
    return [
        (environments, frozenset(), [{"name": "prod", "updated_at": NOW}]),
        (
            environments,
            frozenset({"revision"}),
            [
                {
                    "name": "prod",
                    "last_commit": "c" * 40,
                    "last_reconciled_at": LATER,
                    "updated_at": LATER,
                }
            ],
        ),
        (
            workloads,
            frozenset(),
            [store_rows.workload_row("prod", workload(n), NOW) for n in ("web", "api")],
        ),
        (
            resources,
            frozenset({"created_at"}),
            [
                store_rows.resource_row("prod", resource(), NOW),
                store_rows.resource_row("prod", resource("redis.default#cache", state={}), NOW),
            ],
        ),
        (
            resources,
            frozenset({"created_at"}),
            [store_rows.resource_row("prod", resource(outputs={"host": "é"}), LATER)],
        ),
        (
            steps,
            frozenset(),
            [
                store_rows.step_row(run, step()),
                store_rows.step_row(run, step("020", finished_at=None, message=None, outputs={})),
            ],
        ),
        (
            secrets,
            frozenset({"created_at"}),
            [
                {
                    "ref": "secret://prod/x#k",
                    "ciphertext": "abc=",
                    "created_at": NOW,
                    "updated_at": NOW,
                }
            ],
        ),
    ]


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Store, Store]:
    return Store.open(f"sqlite:///{tmp_path / 'driver.db'}"), Store.open(
        f"sqlite:///{tmp_path / 'sqlalchemy.db'}"
    )


def test_writes_on_the_driver_store_what_sqlalchemy_stores(pair: tuple[Store, Store]) -> None:
    driver, reference = pair
    inserts = _inserts()
    try:
        for table, keep, values in _cases():
            with driver._begin() as conn:
                driver._upsert(conn, table, values, keep=keep)
            with reference.engine.begin() as conn:
                conn.execute(_upsert_statement("sqlite", table, keep), list(values))
            if table is environments:  # the runs the steps belong to, and the audit log
                for table_, values_ in inserts:
                    with driver._begin() as conn:
                        driver._write_rows(conn, _insert_statement(table_), values_)
                    with reference.engine.begin() as conn:
                        for row in values_:
                            conn.execute(table_.insert().values(row))
                inserts = []
        for table in (environments, workloads, resources, runs, steps, audit, secrets):
            written = _as_stored(driver, table)
            assert written, table.name
            assert written == _as_stored(reference, table), table.name
    finally:
        for store in pair:
            store.close()


def test_a_row_becomes_its_values_in_order_each_converted_once() -> None:
    calls: list[object] = []

    def twice(value: int) -> int:
        calls.append(value)
        return value * 2

    both = _parameters(("b", "a", "c"), (None, twice, twice))
    assert both({"a": 1, "b": 2, "c": 3, "unused": 4}) == [2, 2, 6]
    assert calls == [1, 3]
    assert _parameters(("a",), (None,))({"a": 1}) == [1]
    assert _parameters(("a",), (twice,))({"a": 5}) == [10]
    with pytest.raises(KeyError):
        both({"a": 1})
