"""Backups: SQLite file copies and JSON exports round-trip, across databases too."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from reconciler.catalogue import Code
from reconciler.store import Store, StoreError
from reconciler.store.backup import backup, export, restore
from reconciler.store.migrations import head


def test_json_round_trip_replaces_everything(filled: Store, tmp_path: Path) -> None:
    before = export(filled)
    backup(filled, tmp_path / "out" / "state.json")
    filled.save_workload("prod", filled.recorded("staging").workloads["api"])
    filled.delete_resource("prod", "redis.default#cache")
    filled.audit(actor="x", action="y", subject="z")
    assert export(filled) != before
    restore(filled, tmp_path / "out" / "state.json")
    assert export(filled) == before
    assert filled.verify_audit() is None
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["state.json"]


def test_json_export_is_stable_and_complete(filled: Store, tmp_path: Path) -> None:
    backup(filled, tmp_path / "a.json")
    backup(filled, tmp_path / "b.json")
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    document = json.loads((tmp_path / "a.json").read_text())
    header = (document["format"], document["version"], document["revision"])
    assert header == ("score-reconciler-store", 1, head())
    counts = {name: len(rows) for name, rows in document["tables"].items()}
    expected = {
        "audit": 2,
        "environments": 2,
        "resources": 2,
        "pins": 0,
        "runs": 1,
        "secrets": 0,
        "steps": 1,
    }
    assert counts == {**expected, "workloads": 2}


def test_json_from_sqlite_into_postgresql_and_back(
    sqlite_url: str, pg_url: str, tmp_path: Path, filler: Callable[[Store], None]
) -> None:
    with Store.open(sqlite_url) as source:
        filler(source)
        original = export(source)
        backup(source, tmp_path / "from-sqlite.json")
    with Store.open(pg_url) as target:
        target.set_last_commit("leftover", "f" * 40)
        restore(target, tmp_path / "from-sqlite.json")
        assert export(target) == original
        with Store.open(sqlite_url) as source:
            assert target.recorded("prod") == source.recorded("prod")
        assert target.verify_audit() is None
        backup(target, tmp_path / "from-postgresql.json")
    from_pg = (tmp_path / "from-postgresql.json").read_bytes()
    assert from_pg == (tmp_path / "from-sqlite.json").read_bytes()


def test_sqlite_file_backup_round_trip(
    sqlite_url: str, tmp_path: Path, filler: Callable[[Store], None]
) -> None:
    with Store.open(sqlite_url) as store:
        filler(store)
        before = export(store)
        backup(store, tmp_path / "backups" / "state.db")
        store.set_last_commit("prod", "e" * 40)
        restore(store, tmp_path / "backups" / "state.db")
        assert export(store) == before
        assert store.last_commit("prod") == "c" * 40
    with Store.open(f"sqlite:///{tmp_path}/backups/state.db") as copy:
        assert export(copy) == before


def test_sqlite_file_backup_of_postgresql_is_refused(pg_url: str, tmp_path: Path) -> None:
    with Store.open(pg_url) as store, pytest.raises(StoreError) as caught:
        backup(store, tmp_path / "state.db")
    assert caught.value.code is Code.BACKUP_INVALID
    assert not (tmp_path / "state.db").exists()


def _export_with(tmp_path: Path, store: Store, change: Callable[[dict[str, object]], None]) -> Path:
    document = export(store)
    change(document)
    path = tmp_path / "changed.json"
    path.write_text(json.dumps(document))
    return path


def _drop_column(document: dict[str, object]) -> None:
    tables = document["tables"]
    assert isinstance(tables, dict)
    del tables["runs"][0]["trigger"]


def _bad_timestamp(document: dict[str, object]) -> None:
    tables = document["tables"]
    assert isinstance(tables, dict)
    tables["audit"][0]["at"] = "yesterday"


def _newer(document: dict[str, object]) -> None:
    document["revision"] = "9999"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_drop_column, "tables.runs[0]"),
        (_bad_timestamp, "tables.audit[0].at"),
        (_newer, "'9999'"),
        (lambda d: d.pop("tables"), '"tables"'),
        (lambda d: d.update(format="other"), "not a store export"),
    ],
)
def test_invalid_json_exports_are_refused_and_change_nothing(
    filled: Store, tmp_path: Path, change: Callable[[dict[str, object]], None], message: str
) -> None:
    before = export(filled)
    path = _export_with(tmp_path, filled, change)
    with pytest.raises(StoreError) as caught:
        restore(filled, path)
    assert caught.value.code is Code.BACKUP_INVALID
    assert message in caught.value.message
    assert export(filled) == before


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("state.json", b"{not json"),
        ("state.json", b"\xff\xfe"),
        ("state.db", b"SQLite format 2\x00 and then nothing"),
        ("state.db", b"SQLite format 3\x00" + b"\x00" * 200),
    ],
)
def test_files_that_are_not_backups_are_refused(
    store: Store, tmp_path: Path, name: str, content: bytes
) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(StoreError) as caught:
        restore(store, tmp_path / name)
    assert caught.value.code is Code.BACKUP_INVALID


def test_missing_backup_file_is_refused(store: Store, tmp_path: Path) -> None:
    with pytest.raises(StoreError) as caught:
        restore(store, tmp_path / "nope.json")
    assert caught.value.code is Code.BACKUP_INVALID
