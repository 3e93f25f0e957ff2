"""The store's recorded state on both databases: schema, round trips, upserts, deletes."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import event, text

from reconciler.catalogue import Code
from reconciler.desired.model import digest
from reconciler.store import RecordedState, Store, StoreError, WorkloadRecord
from reconciler.store.migrations import head, scripts
from reconciler.store.records import PinRecord
from reconciler.store.rows import JsonText, canonical_json
from reconciler.store.tables import metadata

if TYPE_CHECKING:
    from tests.unit.store.conftest import Builders, TickingClock


@contextmanager
def statements_run(store: Store, wanted: Callable[[str], bool] = bool) -> Iterator[list[str]]:
    """The ``wanted`` statements the database driver runs inside the block, as it runs them.
    On SQLite, as the driver traces them, ``BEGIN`` and ``ROLLBACK`` included, so that a read
    made on the driver's own connection (``plan_inputs``, on the store's reader) and the writes
    on the store's kept writer count too; on
    PostgreSQL,
    SQLAlchemy's executions."""
    ran: list[str] = []

    def count(statement: str) -> None:
        if wanted(statement):
            ran.append(statement)

    if store.url.dialect != "sqlite":

        def executed(conn: object, cursor: object, statement: str, *args: object) -> None:
            count(statement)

        event.listen(store.engine, "before_cursor_execute", executed)
        try:
            yield ran
        finally:
            event.remove(store.engine, "before_cursor_execute", executed)
        return

    def traced(dbapi_connection: Any, *args: object) -> None:
        dbapi_connection.set_trace_callback(count)

    def untraced(dbapi_connection: Any, *args: object) -> None:
        dbapi_connection.set_trace_callback(None)

    with store._reader_lock:  # the hottest reads' own connection, kept out of the pool
        reader = store._reader_connection()
    assert store._writer is not None
    with store._writer:  # the write transactions' own connection, kept checked out
        writer = store._writer_connection().connection.driver_connection
    assert writer is not None
    for kept in (reader, writer):
        kept.set_trace_callback(count)
    event.listen(store.engine, "checkout", traced)
    event.listen(store.engine, "checkin", untraced)
    try:
        yield ran
    finally:
        event.remove(store.engine, "checkout", traced)
        event.remove(store.engine, "checkin", untraced)
        for kept in (reader, writer):
            kept.set_trace_callback(None)


@contextmanager
def selects_from(store: Store, table: str) -> Iterator[list[str]]:
    """The SELECT statements on ``table`` the store runs inside the block: what tells a state
    carried over from one read again."""

    def select_from(statement: str) -> bool:
        return statement.lstrip().upper().startswith("SELECT") and f"FROM {table}" in statement

    with statements_run(store, select_from) as reads:
        yield reads


def test_open_twice_migrates_once_and_keeps_data(store_url: str, build: Builders) -> None:
    workload, _, _ = build
    with Store.open(store_url) as first:
        assert first.revision() == head() == "0007"
        first.save_workload("prod", workload())
    with Store.open(store_url) as second:
        assert second.revision() == head()
        assert list(second.recorded("prod").workloads) == ["web"]


def test_the_head_spelled_in_the_package_is_the_scripts_head() -> None:
    assert scripts().get_current_head() == head()


def test_opening_a_store_at_head_does_not_import_alembic(store_url: str) -> None:
    """Alembic (about 8 MiB) is for migrating: a daemon opening a current store never needs it."""
    Store.open(store_url).close()
    program = (
        "import sys\n"
        "from reconciler.store import Store\n"
        f"Store.open({store_url!r}).close()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'alembic'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"


def test_migrations_build_exactly_the_tables_the_code_uses(store: Store) -> None:
    with store.engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), metadata)
    assert differences == []


def test_two_processes_starting_at_once_both_open(store_url: str) -> None:
    barrier = threading.Barrier(3)
    revisions: list[str | None] = []
    failures: list[BaseException] = []

    def start() -> None:
        barrier.wait()
        try:
            with Store.open(store_url) as opened:
                revisions.append(opened.revision())
        except BaseException as error:  # reported below, with the thread's error
            failures.append(error)

    threads = [threading.Thread(target=start) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert revisions == [head()] * 3


def test_newer_schema_is_refused(store_url: str) -> None:
    with Store.open(store_url) as opened, opened.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(StoreError) as caught:
        Store.open(store_url)
    assert caught.value.code is Code.STORE_NEWER_SCHEMA
    assert "9999" in caught.value.message


def test_recorded_round_trips_every_field(
    store: Store, build: Builders, clock: TickingClock
) -> None:
    workload, resource, _ = build
    store.save_workload("prod", workload())
    saved_at = clock.current
    store.save_resource("prod", resource())
    resource_at = clock.current
    state = store.recorded("prod")
    assert state == RecordedState(
        "prod",
        {"web": replace(workload(), updated_at=saved_at)},
        {
            "postgres.default#shop-db": replace(
                resource(), created_at=resource_at, updated_at=resource_at
            )
        },
    )
    assert state.workloads["web"].updated_at.tzinfo is UTC  # type: ignore[union-attr]
    assert list(state.workloads["web"].spec["metadata"]["annotations"]) == ["a", "z"]


def test_kept_records_hold_spec_and_source_as_their_canonical_text(
    store_url: str, store: Store, build: Builders
) -> None:
    """What the store keeps per workload is text, not decoded objects (a quarter of the memory),
    whether the record was carried over this process's write or read from the database."""
    workload, _, _ = build
    saved = workload(source={"containers": {"main": {"image": "nginx"}}, "apiVersion": "v"})
    store.save_workload("prod", saved)
    carried = store.recorded("prod").workloads["web"]
    with Store.open(store_url) as other:
        read = other.recorded("prod").workloads["web"]
    for record in (carried, read):
        for kept, given in ((record.spec, saved.spec), (record.source, saved.source)):
            assert type(kept) is JsonText
            assert kept.text == canonical_json(given)
            assert kept == given
            assert dict(kept) == given
    assert read == carried
    assert read.source["containers"] == {"main": {"image": "nginx"}}
    assert canonical_json({"spec": read.spec}) == canonical_json({"spec": saved.spec})


def test_kept_resources_hold_their_state_as_text(
    store_url: str, store: Store, build: Builders
) -> None:
    """A resource's state holds the manifests its provisioner rendered (about 2 KB of text,
    several times that decoded) and is read only to apply it again: kept as text."""
    _, resource, _ = build
    saved = resource(state={"_manifests": [{"kind": "Secret", "metadata": {"name": "db"}}]})
    store.save_resource("prod", saved)
    carried = store.recorded("prod").resources[saved.uid]
    stepped = store.resources_of("prod", [saved.uid])[saved.uid]
    with Store.open(store_url) as other:
        read = other.recorded("prod").resources[saved.uid]
        read_by_step = other.resources_of("prod", [saved.uid])[saved.uid]
    for record in (carried, stepped, read, read_by_step):
        assert type(record.state) is JsonText
        assert record.state == saved.state
        assert record.state.text == canonical_json(saved.state)
    assert dict(read.state)["_manifests"][0]["kind"] == "Secret"


def test_json_text_compares_by_value_whatever_its_spelling() -> None:
    spaced = JsonText('{"b": [1, 2], "a": {}}')
    assert spaced == JsonText('{"a":{},"b":[1,2]}') == {"a": {}, "b": [1, 2]}
    assert spaced != JsonText('{"a":{},"b":[2,1]}')
    assert spaced != {"a": {}}
    assert not JsonText("{}")
    assert spaced
    assert list(spaced.items()) == [("b", [1, 2]), ("a", {})]


def test_json_text_keeps_a_long_text_deflated_and_gives_it_back() -> None:
    value = {"containers": {f"c{i}": {"image": "registry.example/app:1.2.3"} for i in range(30)}}
    long = JsonText(canonical_json(value))
    assert long.text == canonical_json(value)
    assert long == value == JsonText(canonical_json(value))
    assert long != JsonText(canonical_json({**value, "x": 1}))
    assert sys.getsizeof(long._packed) < len(long.text) / 4


def test_recorded_is_per_environment_and_sorted(store: Store, build: Builders) -> None:
    workload, resource, _ = build
    for name in ["zeta", "alpha", "mid"]:
        store.save_workload("prod", workload(name))
    store.save_workload("staging", workload("other"))
    store.save_resources("prod", [resource("redis.default#b"), resource("redis.default#a")])
    assert list(store.recorded("prod").workloads) == ["alpha", "mid", "zeta"]
    assert list(store.recorded("prod").resources) == ["redis.default#a", "redis.default#b"]
    assert list(store.recorded("staging").workloads) == ["other"]
    assert store.recorded("nowhere") == RecordedState("nowhere", {}, {})


def test_upserts_replace_and_keep_created_at(
    store: Store, build: Builders, clock: TickingClock
) -> None:
    workload, resource, _ = build
    store.save_workload("prod", workload(commit="1" * 40))
    store.save_workload("prod", workload(commit="2" * 40, spec={"changed": True}))
    store.save_resource("prod", resource())
    created = clock.current
    store.save_resource("prod", resource(status="Degraded", outputs={}, secret_refs={}))
    state = store.recorded("prod")
    assert state.workloads["web"].commit == "2" * 40
    assert state.workloads["web"].spec == {"changed": True}
    updated = state.resources["postgres.default#shop-db"]
    assert (updated.status, updated.outputs, updated.secret_refs) == ("Degraded", {}, {})
    assert updated.created_at == created
    assert updated.updated_at == clock.current


def test_deletes_remove_only_their_row(store: Store, build: Builders) -> None:
    workload, resource, _ = build
    store.save_workload("prod", workload("web"))
    store.save_workload("prod", workload("api"))
    store.save_workload("staging", workload("web"))
    store.save_resources("prod", [resource("redis.default#a"), resource("redis.default#b")])
    store.delete_workload("prod", "web")
    store.delete_resource("prod", "redis.default#a")
    store.delete_resource("prod", "redis.default#missing")
    assert list(store.recorded("prod").workloads) == ["api"]
    assert list(store.recorded("prod").resources) == ["redis.default#b"]
    assert list(store.recorded("staging").workloads) == ["web"]


def test_set_workload_status_marks_just_the_named_workloads(
    store: Store, store_url: str, build: Builders, clock: TickingClock
) -> None:
    """The status and its stamp change for the named workloads of that environment only; names
    are matched exactly, whatever they hold (SQLite passes them as one JSON array)."""
    workload, _, _ = build
    names = ["web", 'quo"te', "ünï", "api"]
    for name in names:
        store.save_workload("prod", workload(name, status="Unpublished"))
    store.save_workload("staging", workload("web", status="Unpublished"))
    store.set_workload_status("prod", ["web", 'quo"te', "ünï", "missing"], "Synced")
    marked_at = clock.current

    def statuses(state: RecordedState) -> dict[str, tuple[str, datetime | None]]:
        return {n: (w.status, w.updated_at) for n, w in state.workloads.items()}

    with Store.open(store_url) as fresh:  # read back, not the state this store kept
        prod, staging = fresh.recorded("prod"), fresh.recorded("staging")
    assert statuses(prod) == {
        "api": ("Unpublished", prod.workloads["api"].updated_at),
        'quo"te': ("Synced", marked_at),
        "web": ("Synced", marked_at),
        "ünï": ("Synced", marked_at),
    }
    assert prod.workloads["api"].updated_at != marked_at
    assert [w.status for w in staging.workloads.values()] == ["Unpublished"]
    assert statuses(store.recorded("prod")) == statuses(prod)


def test_environments_and_last_commit(store: Store, build: Builders, clock: TickingClock) -> None:
    workload, _, _ = build
    assert store.last_commit("prod") is None
    store.save_workload("staging", workload())
    store.set_last_commit("prod", "c" * 40)
    reconciled = clock.current
    store.set_last_commit("prod", "d" * 40)
    assert store.last_commit("prod") == "d" * 40
    names = [(e.name, e.last_commit) for e in store.environments()]
    assert names == [("prod", "d" * 40), ("staging", None)]
    assert store.environments()[0].last_reconciled_at == clock.current != reconciled


def test_transaction_is_all_or_nothing(store: Store, build: Builders) -> None:
    workload, resource, _ = build

    def fail_halfway() -> None:
        with store.transaction():
            store.save_workload("prod", workload())
            store.save_resource("prod", resource())
            with store.transaction():  # joins the outer one
                store.set_last_commit("prod", "c" * 40)
            raise RuntimeError("abort")

    with pytest.raises(RuntimeError):
        fail_halfway()
    assert store.recorded("prod") == RecordedState("prod", {}, {})
    assert store.last_commit("prod") is None
    with store.transaction():
        store.save_workload("prod", workload())
        store.set_last_commit("prod", "c" * 40)
    assert store.last_commit("prod") == "c" * 40


def test_sqlite_write_transactions_share_one_connection_out_of_the_pool(
    store: Store, store_url: str, build: Builders
) -> None:
    """Every write transaction of the process runs on one kept connection, from any thread:
    none checks a connection out of the pool (and none resets one returning to it), and
    other processes see each write once it returns."""
    if store.url.dialect != "sqlite":
        pytest.skip("PostgreSQL writers take pooled connections of their own")
    workload, resource, _ = build
    store.save_workload("prod", workload("first"))
    checkouts: list[object] = []

    def checked_out(*args: object) -> None:
        checkouts.append(args)

    event.listen(store.engine, "checkout", checked_out)
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(lambda n: store.save_workload("prod", workload(f"w{n}")), range(40)))
        with store.transaction():
            store.save_resource("prod", resource())
            store.set_last_commit("prod", "c" * 40)
    finally:
        event.remove(store.engine, "checkout", checked_out)
    assert checkouts == []
    with Store.open(store_url) as other:
        seen = other.recorded("prod")
        assert len(seen.workloads) == 41
        assert list(seen.resources) == [resource().uid]
        assert other.last_commit("prod") == "c" * 40


def test_a_write_transaction_that_breaks_its_connection_leaves_the_next_a_new_one(
    store: Store, build: Builders
) -> None:
    """A write that fails on the kept connection itself (here: closed under the store) fails
    alone: the store drops that connection and the next write runs on a new one; a
    transaction that raises leaves nothing behind on it either."""
    if store.url.dialect != "sqlite":
        pytest.skip("the kept writer connection is SQLite's")
    workload, _, _ = build
    store.save_workload("prod", workload("web"))
    assert store._writer is not None
    with store._writer:
        driver = store._writer_connection().connection.driver_connection
    assert driver is not None
    driver.close()
    with pytest.raises((StoreError, sqlite3.ProgrammingError)):  # raised at its BEGIN
        store.save_workload("prod", workload("lost"))

    def undone() -> None:
        with store.transaction():
            store.save_workload("prod", workload("undone"))
            raise RuntimeError("abort")

    with pytest.raises(RuntimeError):
        undone()
    store.save_workload("prod", workload("api"))
    assert sorted(store.recorded("prod").workloads) == ["api", "web"]
    store.close()
    assert store._writer_conn is None


def test_closing_does_not_wait_for_a_write_in_progress_and_the_write_lands(
    store: Store, store_url: str, build: Builders
) -> None:
    """``close`` leaves a write transaction another thread has open to finish on its own
    connection, as the pool's ``dispose`` does: it neither waits for it nor breaks it."""
    workload, _, _ = build
    inside, finish = threading.Event(), threading.Event()

    def write() -> None:
        with store.transaction():
            store.save_workload("prod", workload("late"))
            inside.set()
            finish.wait()

    writer = threading.Thread(target=write)
    writer.start()
    inside.wait()
    closer = threading.Thread(target=store.close)
    closer.start()
    closer.join(timeout=30)  # bounds a failure only: close returns at once
    closed = not closer.is_alive()
    finish.set()
    writer.join()
    closer.join()
    assert closed
    with Store.open(store_url) as other:
        assert list(other.recorded("prod").workloads) == ["late"]


def test_naive_timestamps_are_refused(store: Store, build: Builders) -> None:
    _, _, step = build
    run = store.create_run("prod", "c" * 40, trigger="push")
    with pytest.raises(ValueError, match="naive timestamp"):
        store.save_step(run.id, step(started_at=datetime(2025, 1, 1)))


def test_failed_migration_is_reported_and_rolled_back(store_url: str) -> None:
    with Store.open(store_url, migrate=False) as empty, empty.engine.begin() as conn:
        conn.execute(text("CREATE TABLE audit (id INTEGER)"))
    with pytest.raises(StoreError) as caught:
        Store.open(store_url)
    assert caught.value.code is Code.STORE_MIGRATION_FAILED
    assert "from an empty database" in caught.value.message
    with Store.open(store_url, migrate=False) as empty:
        assert empty.revision() is None


def test_recorded_state_is_carried_over_this_process_writes_without_reading_again(
    store: Store, store_url: str, build: Builders
) -> None:
    workload, resource, _ = build
    store.save_workloads("prod", [workload("web"), workload("api")])
    store.save_resource("prod", resource("redis.default#cache"))
    store.recorded("prod")  # decoded once, then kept
    with selects_from(store, "workloads") as reads:
        store.save_workload("prod", replace(workload("web"), commit="c" * 40))
        store.save_workload("prod", workload("aaa"))  # a new name: still in name order
        store.save_resource("prod", replace(resource("redis.default#cache"), outputs={"x": (1,)}))
        store.delete_workload("prod", "api")
        store.delete_resource("prod", "postgres.default#none")
        kept = store.recorded("prod")
    assert reads == []  # every write carried the kept state forward
    with Store.open(store_url) as other:
        assert kept == other.recorded("prod")  # exactly what a read gives (tuples as lists...)
        assert list(kept.workloads) == ["aaa", "web"]
        other.save_workload("prod", workload("from-elsewhere"))  # another writer
    assert "from-elsewhere" in store.recorded("prod").workloads  # its token shows the change


def test_the_same_state_is_handed_back_until_a_write_and_never_changes_after(
    store: Store, build: Builders
) -> None:
    """A planner tells an unchanged state by identity; a state it holds must not change under
    it when this process writes (the kept mappings are copied before the write is carried)."""
    workload, resource, _ = build
    store.save_workloads("prod", [workload("web"), workload("api")])
    store.save_resource("prod", resource("redis.default#cache"))
    first = store.recorded("prod")
    assert store.recorded("prod") is first
    store.save_workload("prod", workload("aaa"))
    store.delete_workload("prod", "api")
    store.delete_resource("prod", "redis.default#cache")
    assert list(first.workloads) == ["api", "web"]
    assert list(first.resources) == ["redis.default#cache"]
    after = store.recorded("prod")
    assert after is not first
    assert list(after.workloads) == ["aaa", "web"]
    assert after.resources == {}
    assert store.recorded("prod") is after
    assert after.workloads["web"] is first.workloads["web"]  # the same records, not decoded again


def test_plan_inputs_are_what_the_separate_reads_give(store: Store, build: Builders) -> None:
    workload, _, _ = build
    pin = PinRecord("web", "apps/web/score.yaml", "a" * 40, "b" * 40)
    store.set_pin("prod", pin)  # a pin needs no environment row
    empty = store.plan_inputs("prod")
    assert (empty.recorded, empty.last_commit, empty.pins) == (
        RecordedState("prod", {}, {}),
        None,
        {"web": pin},
    )
    store.save_workload("prod", workload("web"))
    store.set_last_commit("prod", "c" * 40)
    found = store.plan_inputs("prod")
    assert found.recorded is store.recorded("prod")
    assert found.last_commit == store.last_commit("prod") == "c" * 40
    assert found.pins == store.pins("prod") == {"web": pin}


def test_plan_key_is_one_statement_and_moves_with_every_write(
    store: Store, store_url: str, build: Builders
) -> None:
    """A run reads the key before each of its plans: one statement (in autocommit on SQLite),
    the same key as read inside a transaction, moved by another process's write and by a pin."""
    workload, _, _ = build
    assert store.plan_key("prod") == (None, None, {})
    store.save_workload("prod", workload("web"))
    store.set_last_commit("prod", "c" * 40)
    with selects_from(store, "") as reads:
        key = store.plan_key("prod")
    assert len(reads) == 1
    assert key == (store.revision_of("prod"), "c" * 40, {})
    with store.transaction():
        assert store.plan_key("prod") == key
    with Store.open(store_url) as other:
        other.save_workload("prod", workload("api"))
    moved = store.plan_key("prod")
    assert moved[0] not in (key[0], None)
    pin = PinRecord("web", "apps/web/score.yaml", "a" * 40, "b" * 40)
    store.set_pin("prod", pin)
    assert store.plan_key("prod") == (moved[0], "c" * 40, {"web": pin})


def test_plan_inputs_of_a_kept_state_are_one_statement(store: Store, build: Builders) -> None:
    """A resync that finds nothing reads the environment's row and its pins together: one
    statement, whatever the pins, with the pins and the row told apart."""
    workload, _, _ = build
    store.save_workload("prod", workload("web"))
    store.set_last_commit("prod", "c" * 40)
    store.recorded("prod")
    for pins in ((), ("web", "api")):
        for name in pins:
            store.set_pin("prod", PinRecord(name, f"apps/{name}/score.yaml", "a" * 40, "b" * 40))
        with selects_from(store, "") as reads:
            found = store.plan_inputs("prod")
        assert len(reads) == 1
        assert found.last_commit == "c" * 40
        assert found.pins == store.pins("prod")
        assert sorted(found.pins) == sorted(pins)


def test_plan_inputs_of_a_kept_state_on_sqlite_are_one_statement_and_no_transaction(
    store: Store, build: Builders
) -> None:
    """One statement is one snapshot in SQLite: a resync that finds the kept state's token
    needs no ``BEGIN`` and no ``ROLLBACK`` around it (nor does a first plan, finding no row)."""
    if store.url.dialect != "sqlite":
        pytest.skip("PostgreSQL reads through SQLAlchemy's transaction")
    workload, _, _ = build
    with statements_run(store) as ran:
        assert store.plan_inputs("prod").recorded == RecordedState("prod", {}, {})
    assert len(ran) == 1
    store.save_workload("prod", workload("web"))
    kept = store.recorded("prod")
    with statements_run(store) as ran:
        assert store.plan_inputs("prod").recorded is kept
    assert len(ran) == 1
    assert ran[0].lstrip().upper().startswith("SELECT")


def test_plan_inputs_see_another_process_write(
    store: Store, store_url: str, build: Builders
) -> None:
    """The kept state is handed back only while the database's token is its own: a write by
    another process (another store on the same database) is read at the next plan, and so are
    its pins and last commit."""
    workload, _, _ = build
    store.save_workload("prod", workload("web"))
    before = store.plan_inputs("prod")
    assert store.plan_inputs("prod").recorded is before.recorded
    with Store.open(store_url) as other:
        other.save_workload("prod", workload("api"))
        other.set_last_commit("prod", "c" * 40)
        other.set_pin("prod", PinRecord("web", "apps/web/score.yaml", "a" * 40, "b" * 40))
    after = store.plan_inputs("prod")
    assert after.recorded is not before.recorded
    assert list(after.recorded.workloads) == ["api", "web"]
    assert after.last_commit == "c" * 40
    assert list(after.pins) == ["web"]
    assert store.plan_inputs("prod").recorded is after.recorded


def test_plan_inputs_of_an_environment_without_a_row_read_no_records(
    store: Store, build: Builders
) -> None:
    """An environment never written has no workload or resource (their foreign key names its
    row): its first plan reads the row and the pins, not the two tables."""
    workload, _, _ = build
    store.save_workload("staging", workload("web"))  # another environment's rows stay unread
    with (
        selects_from(store, "workloads") as workload_reads,
        selects_from(store, "resources") as resource_reads,
    ):
        found = store.plan_inputs("prod")
    assert (workload_reads, resource_reads) == ([], [])
    assert found.recorded == RecordedState("prod", {}, {})
    assert found.last_commit is None
    store.save_workload("prod", workload("web"))
    with selects_from(store, "workloads") as workload_reads:
        assert list(store.plan_inputs("prod").recorded.workloads) == ["web"]
    assert workload_reads == []  # the empty state was kept, and carried over the write


def test_the_empty_state_kept_for_an_environment_without_a_row_sees_other_writers(
    store: Store, store_url: str, build: Builders
) -> None:
    """A first reconcile's steps read their resources from the empty state its plan kept;
    another process's write replaces the token, so the state is read afresh."""
    workload, resource, _ = build
    assert store.plan_inputs("prod").recorded == RecordedState("prod", {}, {})
    with selects_from(store, "resources") as resource_reads:
        assert store.resources_of("prod", ["redis.default#web.cache"]) == {}
    assert resource_reads == []
    with Store.open(store_url) as other:
        other.save_resource("prod", resource("redis.default#web.cache"))
        other.save_workload("prod", workload("web"))
    assert list(store.resources_of("prod", ["redis.default#web.cache"])) == [
        "redis.default#web.cache"
    ]
    assert list(store.plan_inputs("prod").recorded.workloads) == ["web"]


def test_set_workload_status_changes_only_the_status_and_keeps_the_state_carried(
    store: Store, store_url: str, build: Builders, clock: TickingClock
) -> None:
    workload, _, _ = build
    store.save_workloads("prod", [workload("web", status="Unpublished"), workload("api")])
    store.save_workload("staging", workload("web", status="Unpublished"))
    before = store.recorded("prod")
    with selects_from(store, "workloads") as reads:
        store.set_workload_status("prod", ["web", "gone"], "Synced")
        kept = store.recorded("prod")
    assert reads == []
    web = kept.workloads["web"]
    assert web.status == "Synced"
    assert web.updated_at is not None
    assert before.workloads["web"].updated_at is not None
    assert web.updated_at > before.workloads["web"].updated_at
    assert replace(web, status="Unpublished", updated_at=None) == replace(
        before.workloads["web"], updated_at=None
    )
    assert kept.workloads["api"] is before.workloads["api"]
    assert list(kept.workloads) == ["api", "web"]
    with Store.open(store_url) as other:
        assert kept == other.recorded("prod")
        assert other.recorded("staging").workloads["web"].status == "Unpublished"


def _doomed(store: Store, record: WorkloadRecord) -> None:
    with store.transaction():
        store.save_workload("prod", record)
        raise RuntimeError("roll back")


def _doomed_savepoint(store: Store, record: WorkloadRecord) -> None:
    with store.savepoint():
        store.save_workload("prod", record)
        raise RuntimeError("the step's write failed")


def test_a_transaction_carries_the_kept_state_once_committed(
    store: Store, store_url: str, build: Builders
) -> None:
    """Its writes are carried over in order after the commit (a step's record and checkpoint
    are one transaction); a block that rolls back leaves the kept state as it was."""
    workload, resource, _ = build
    store.save_workload("prod", workload("web"))
    store.recorded("prod")
    with selects_from(store, "workloads") as reads:
        with pytest.raises(RuntimeError):
            _doomed(store, workload("doomed"))
        assert list(store.recorded("prod").workloads) == ["web"]
        with store.transaction():
            store.save_resource("prod", resource("redis.default#cache"))
            store.save_workload("prod", workload("api"))
            store.delete_workload("prod", "web")
        kept = store.recorded("prod")
    assert reads == []
    assert list(kept.workloads) == ["api"]
    with Store.open(store_url) as other:
        assert kept == other.recorded("prod")


def test_the_writes_of_one_transaction_set_one_token(
    store: Store, store_url: str, build: Builders
) -> None:
    """Group-committed steps share a transaction, and one new token (one lock, one update)
    tells readers of all their writes; a savepoint rolled back undoes its token with its
    writes, so the next write sets one again."""
    workload, resource, _ = build
    store.save_workload("prod", workload("web"))
    store.recorded("prod")
    before = store.revision_of("prod")

    def token(statement: str) -> bool:
        return (
            statement.lstrip()
            .upper()
            .startswith(
                ("UPDATE ENVIRONMENTS", "INSERT INTO ENVIRON", "SELECT ENVIRONMENTS.REVISION")
            )
        )

    with statements_run(store, token) as ran, store.transaction():
        store.save_resource("prod", resource("redis.default#cache"))
        store.save_workload("prod", workload("api"))
    assert sum(not s.upper().startswith("SELECT") for s in ran) == 1  # one bump
    assert sum(s.upper().startswith("SELECT") for s in ran) == 1  # one lock
    after = store.revision_of("prod")
    assert after not in (before, None)
    with store.transaction():
        with pytest.raises(RuntimeError):
            _doomed_savepoint(store, workload("doomed"))
        store.save_workload("prod", workload("db"))
    assert store.revision_of("prod") not in (after, None)
    with Store.open(store_url) as other:
        assert list(other.recorded("prod").workloads) == ["api", "db", "web"]
        assert store.recorded("prod") == other.recorded("prod")


def test_a_write_after_a_delete_in_an_environment_without_a_row_makes_the_row(
    store: Store, store_url: str, build: Builders
) -> None:
    """A delete finds no row to set a token on; the next write of the transaction still makes
    the row and sets the token (a token set nowhere is not shared)."""
    workload, _, _ = build
    with store.transaction():
        store.delete_workload("new", "gone")
        store.save_workload("new", workload("web"))
    assert store.revision_of("new") is not None
    with Store.open(store_url) as other:
        assert list(other.recorded("new").workloads) == ["web"]


def test_resources_of_comes_from_the_kept_state_while_its_token_is_current(
    store: Store, store_url: str, build: Builders
) -> None:
    """A step reads its resources from the decoded state ``recorded`` keeps, with no query of
    the rows, and still sees another writer's change (the token) and, inside a transaction,
    its own uncommitted writes."""
    _, resource, _ = build
    store.save_resources("prod", [resource("redis.default#cache"), resource("dns.default#web")])
    kept = store.recorded("prod")
    with selects_from(store, "resources") as reads:
        found = store.resources_of("prod", ["redis.default#cache", "absent.default#x"])
        assert reads == []
        assert found == {"redis.default#cache": kept.resources["redis.default#cache"]}
        with Store.open(store_url) as other:
            assert other.resources_of("prod", ["redis.default#cache"]) == found  # as read
            other.save_resource(
                "prod", replace(resource("redis.default#cache"), outputs={"host": "elsewhere"})
            )
        changed = store.resources_of("prod", ["redis.default#cache"])
        assert changed["redis.default#cache"].outputs == {"host": "elsewhere"}
        reads.clear()
        store.recorded("prod")  # kept again at the other writer's token
        with store.transaction():
            store.delete_resource("prod", "dns.default#web")
            assert store.resources_of("prod", ["dns.default#web"]) == {}
        assert reads != []  # inside the transaction the rows are read
        reads.clear()
        assert store.resources_of("prod", ["dns.default#web", "redis.default#cache"]) == changed
        assert reads == []  # the deletion was carried over once committed


def test_a_writer_does_not_wait_for_transactions_that_only_refer_to_the_environment(
    pg_url: str, build: Builders
) -> None:
    """Another replica's open transaction that inserted a run (its foreign key holds the
    environment's row ``FOR KEY SHARE``) must not block a write of recorded state: with a plain
    ``FOR UPDATE`` two such writers deadlocked on PostgreSQL."""
    _, resource, _ = build
    with Store.open(pg_url) as store:
        store.save_resource("prod", resource("redis.default#first"))
        other = store.engine.connect()
        try:
            other.begin()
            other.execute(
                text(
                    "INSERT INTO runs (id, environment, commit, status, trigger, started_at) "
                    "VALUES ('r1', 'prod', :c, 'Running', 'daemon', now())"
                ),
                {"c": "a" * 40},
            )
            done = threading.Event()

            def write() -> None:
                store.save_resource("prod", resource("redis.default#b"))
                done.set()

            writer = threading.Thread(target=write)
            writer.start()
            finished = done.wait(10)
            other.rollback()
            writer.join(10)
        finally:
            other.close()
        assert finished, "the write waited for a transaction that only referred to the environment"
        assert set(store.recorded("prod").resources) == {"redis.default#first", "redis.default#b"}


def test_concurrent_writers_of_one_environment_never_deadlock(pg_url: str, build: Builders) -> None:
    """Replicas record their workloads' resources at once, each in its own transactions, some
    with a run row in the same transaction (as a step's checkpoint does)."""
    workload, resource, _ = build
    with Store.open(pg_url) as first:
        first.save_workload("prod", workload())
    stores = [Store.open(pg_url) for _ in range(4)]
    failures: list[BaseException] = []
    barrier = threading.Barrier(len(stores))

    def write(index: int, store: Store) -> None:
        barrier.wait()
        try:
            for round_ in range(15):
                with store.transaction():
                    store.save_resources(
                        "prod",
                        [resource(f"redis.default#w{index}-{round_}"), resource("dns.default#x")],
                    )
                    store.save_workload("prod", workload(f"w{index}"))
        except BaseException as error:  # reported below
            failures.append(error)

    threads = [threading.Thread(target=write, args=(i, s)) for i, s in enumerate(stores)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        for store in stores:
            store.close()
    assert failures == []
    with Store.open(pg_url) as check:
        assert len(check.recorded("prod").resources) == 4 * 15 + 1


def test_an_environment_never_written_keeps_its_empty_state_until_the_first_write(
    store: Store, store_url: str, build: Builders
) -> None:
    """With no token yet (a first reconcile), the empty state the plan read is kept: the
    provisioning steps read their resources from it, and it is carried over the first write;
    another process's first write replaces the token, so it is seen."""
    _, resource, _ = build
    assert store.recorded("new").resources == {}
    store.create_run("new", "c" * 40, trigger="test")  # the environment's row, still no token
    with selects_from(store, "resources") as reads:
        assert store.resources_of("new", ["redis.default#cache"]) == {}
        assert reads == []
        store.save_resource("new", resource("redis.default#cache"))
        assert list(store.resources_of("new", ["redis.default#cache"])) == ["redis.default#cache"]
        assert reads == []  # carried over the first write
    assert store.recorded("other").resources == {}
    with Store.open(store_url) as another:
        another.save_resource("other", resource("dns.default#web"))
    with selects_from(store, "resources") as reads:
        assert list(store.resources_of("other", ["dns.default#web"])) == ["dns.default#web"]
        assert reads != []


def test_marks_move_with_every_write_and_settle_from_any_process(
    store: Store, store_url: str, build: Builders
) -> None:
    """What the daemon's store watch compares: another process's write shows in them."""
    workload, resource, _ = build
    assert store.marks() == {}
    store.save_workload("staging", workload("web"))
    first = store.marks()
    assert set(first) == {"staging"}
    assert first["staging"][0] is not None

    other = Store.open(store_url)
    try:
        other.save_resource("staging", resource())
        second = store.marks()
        assert second["staging"][0] != first["staging"][0]
        other.set_last_commit("staging", "c" * 40)
    finally:
        other.close()
    assert store.marks()["staging"] == (second["staging"][0], "c" * 40)


def test_hot_reads_from_many_threads_see_the_same_key(store: Store, build: Builders) -> None:
    """Every thread's plan key is read on one connection on SQLite (taken in turn): threads
    reading at once each get the whole answer, and the store closes it with the others."""
    workload, _, _ = build
    store.save_workload("prod", workload("web"))
    store.set_last_commit("prod", "c" * 40)
    expected = store.plan_key("prod")
    with ThreadPoolExecutor(max_workers=8) as pool:
        keys = list(pool.map(lambda _: store.plan_key("prod"), range(400)))
    assert keys == [expected] * 400
    store.close()
    assert store._reader is None


def test_digests_read_back_are_the_planners_own_objects(
    store_url: str, store: Store, build: Builders
) -> None:
    """A record read from the database holds the digest the planner computes for the same
    value, as one object: the store, the desired state and the diff's memo each keep one."""
    workload, resource, _ = build
    spec_hash = digest({"containers": {"main": {"image": "nginx"}}})
    params_hash = digest({})
    store.save_workload("prod", workload(spec_hash="".join(spec_hash)))
    store.save_resource("prod", resource(params_hash="".join(params_hash)))
    with Store.open(store_url) as other:
        read = other.recorded("prod")
    assert read.workloads["web"].spec_hash is spec_hash
    assert read.resources["postgres.default#shop-db"].params_hash is params_hash


def test_empty_json_fields_of_kept_records_are_one_mapping(
    store_url: str, store: Store, build: Builders
) -> None:
    """Most resources have no params or secrets: the records the store keeps (read, or
    carried over a write) hold one empty mapping for all of them, equal to an empty one."""
    workload, resource, _ = build
    store.save_workload("prod", workload(sources={}))
    for uid in ("redis.default#a", "redis.default#b"):
        store.save_resource("prod", resource(uid, params={}, secret_refs={}, outputs={}))
    with Store.open(store_url) as other:
        read = other.recorded("prod")
    for state in (read, store.recorded("prod")):
        a, b = state.resources["redis.default#a"], state.resources["redis.default#b"]
        assert a.params == {}
        assert a.secret_refs == {}
        assert a.outputs == {}
        assert a.params is b.params is a.secret_refs is b.outputs
        assert state.workloads["web"].sources is a.params


def test_equal_small_json_fields_of_kept_records_are_one_mapping(
    store_url: str, store: Store, build: Builders
) -> None:
    """Many resources have the same small outputs (every volume's source): the records kept
    share one mapping for them; larger or different values are each their own."""
    _, resource, _ = build
    source = {"source": {"emptyDir": {}}}
    for uid in ("volume.default#a", "volume.default#b"):
        store.save_resource("prod", resource(uid, outputs=dict(source), secret_refs={}))
    with Store.open(store_url) as other:
        read = other.recorded("prod")
    for state in (read, store.recorded("prod")):
        a, b = state.resources["volume.default#a"], state.resources["volume.default#b"]
        assert a.outputs == source
        assert a.outputs is b.outputs
        assert a.params == b.params
        assert a.params is not b.params  # four keys: not looked for
