"""Checkpoints in the real store (SQLite and PostgreSQL): Pending for all at start in one batch,
Running before and the outcome after each step, and resuming a run from its records."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy

from reconciler.catalogue import Code
from reconciler.engine import (
    Executor,
    MemoryCheckpointer,
    RetryPolicy,
    RunStatus,
    StepContext,
    StepStatus,
    StoreCheckpointer,
    Write,
)
from reconciler.engine import executor as executor_module
from reconciler.providers.base import DriverError
from reconciler.store import StepRecord, Store, StoreError
from tests.unit.engine.support import (
    DEADLINE,
    Calls,
    FakeSleep,
    RecordingCheckpointer,
    new_run,
    step,
)

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def test_every_state_is_written_before_and_after_each_step(any_store: Store, calls: Calls) -> None:
    run_id = new_run(any_store)
    recorder = RecordingCheckpointer(any_store)
    seen_in_store: list[str] = []

    def app(context: StepContext) -> Mapping[str, Any]:
        # A step still running after ``RUNNING_FLUSH`` is shown Running by the store.
        deadline = time.monotonic() + DEADLINE
        status = recorder.store_steps(run_id)["app"].status
        while status != "Running" and time.monotonic() < deadline:
            context.cancelled.wait(0.005)
            status = recorder.store_steps(run_id)["app"].status
        seen_in_store.append(status)
        context.log("applied deployment")
        return {"replicas": 2}

    bad = DriverError(Code.MANIFEST_RENDER_FAILED, "bad template", retryable=False)
    steps = [
        step(
            "db", calls.ok({"host": "db"}), kind="resource", target="postgres#db", action="create"
        ),
        step("app", app, "db", kind="workload", target="app", action="update"),
        step("broken", calls.fail(bad)),
        step("after", calls.ok(), "broken"),
    ]
    result = Executor(recorder, parallelism=1).run(run_id, steps)
    assert result.status is RunStatus.FAILED
    assert recorder.batches[0] == ["after", "app", "broken", "db"]  # one transaction at start
    assert recorder.statuses("app") == ["Pending", "Running", "Succeeded"]
    # The step started first is written Running in that transaction, the others Pending.
    assert recorder.statuses("broken") == ["Running", "Failed"]
    assert recorder.statuses("after") == ["Pending", "Skipped"]
    assert seen_in_store == ["Running"]  # the store said Running while the step ran

    records = recorder.store_steps(run_id)
    app_record = records["app"]
    assert (app_record.kind, app_record.target, app_record.action) == ("workload", "app", "update")
    assert (app_record.status, app_record.attempt, app_record.depends_on) == (
        "Succeeded",
        1,
        ("db",),
    )
    assert app_record.outputs == {"replicas": 2}
    assert app_record.log == "applied deployment\n"
    assert app_record.started_at is not None
    assert app_record.finished_at is not None
    assert app_record.started_at <= app_record.finished_at
    assert (records["broken"].error_code, records["broken"].message) == ("RCN-3012", "bad template")
    assert records["after"].error_code == "RCN-3004"


class CountingCheckpointer(RecordingCheckpointer):
    """Counts the transactions the store checkpointer makes."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.transactions = 0

    def _write(self, batch: Any) -> None:
        self.transactions += 1  # under the committer's lock: one thread at a time
        super()._write(batch)


def test_a_short_step_is_shown_running_in_the_transaction_of_its_end(
    any_store: Store, calls: Calls, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step started after the first costs one transaction, not two: its Running state waits
    for the next transaction (its own end's here) instead of committing alone."""
    monkeypatch.setattr(executor_module, "RUNNING_FLUSH", DEADLINE * 6)
    run_id = new_run(any_store)
    recorder = CountingCheckpointer(any_store)
    steps = [step("a", calls.ok()), step("b", calls.ok(), "a"), step("c", calls.ok(), "b")]
    result = Executor(recorder, parallelism=1).run(run_id, steps)
    assert result.status is RunStatus.SUCCEEDED
    # Pending for all with a Running, then one per step's end: b and c went Running in it.
    assert recorder.transactions == 4
    assert recorder.statuses("b") == ["Pending", "Running", "Succeeded"]
    assert recorder.statuses("c") == ["Pending", "Running", "Succeeded"]
    assert {r.status for r in recorder.store_steps(run_id).values()} == {"Succeeded"}


def test_running_states_no_transaction_took_are_flushed_by_the_coordinator(
    any_store: Store, calls: Calls
) -> None:
    """With every worker busy in a long step, the coordinator writes the Running states it
    queued itself, within ``RUNNING_FLUSH``."""
    run_id = new_run(any_store)
    recorder = CountingCheckpointer(any_store)
    release = threading.Event()
    seen: list[str] = []

    def first(context: StepContext) -> Mapping[str, Any]:
        release.wait(DEADLINE)
        return {}

    def second(context: StepContext) -> Mapping[str, Any]:
        deadline = time.monotonic() + DEADLINE
        while recorder.store_steps(run_id)["second"].status != "Running":
            assert time.monotonic() < deadline, "second was never shown Running"
            context.cancelled.wait(0.005)
        seen.append("Running")
        release.set()
        return {}

    steps = [step("first", first), step("second", second), step("third", calls.ok(), "first")]
    result = Executor(recorder, parallelism=2).run(run_id, steps)
    assert result.status is RunStatus.SUCCEEDED
    assert seen == ["Running"]


def _record(step_id: str, status: str, **fields: Any) -> StepRecord:
    return StepRecord(step_id=step_id, kind="", target="", action="", status=status, **fields)


def test_resume_keeps_succeeded_steps_and_reruns_the_rest(any_store: Store, calls: Calls) -> None:
    run_id = new_run(any_store)
    recorder = RecordingCheckpointer(any_store)
    recorder.save_many(
        run_id,
        [
            _record("db", "Succeeded", attempt=2, outputs={"host": "db"}, finished_at=T0),
            _record("app", "Running", attempt=1, depends_on=("db",)),
            _record("cache", "Failed", attempt=3, error_code="RCN-3003"),
            _record("route", "Pending", depends_on=("app",)),
            _record("old", "Succeeded"),  # a step no longer in the list: left alone
        ],
    )
    recorder.batches.clear()
    seen: list[Any] = []

    def app(context: StepContext) -> Mapping[str, Any]:
        seen.append(context.outputs["db"]["host"])
        return {}

    steps = [
        step("db", calls.ok()),
        step("app", app, "db"),
        step("cache", calls.ok()),
        step("route", calls.ok(), "app"),
    ]
    result = Executor(recorder).run(run_id, steps)
    assert result.status is RunStatus.SUCCEEDED
    assert calls.count("db") == 0
    assert sorted(calls.order) == ["cache", "route"]
    assert seen == ["db"]
    assert result.steps["db"].resumed
    assert (result.steps["db"].attempts, dict(result.steps["db"].outputs)) == (2, {"host": "db"})
    assert recorder.batches[0] == ["app", "cache", "route"]  # db's record is not overwritten
    assert recorder.store_steps(run_id)["old"].status == "Succeeded"
    assert all(r.status == StepStatus.SUCCEEDED for r in recorder.store_steps(run_id).values())


def test_succeeded_reads_only_the_succeeded_steps_asked_about(any_store: Store) -> None:
    run_id = new_run(any_store)
    checkpointer = StoreCheckpointer(any_store)
    checkpointer.save_many(
        run_id,
        [
            _record("db", "Succeeded", outputs={"host": "db"}),
            _record("app", "Running"),
            _record("old", "Succeeded"),
        ],
    )
    kept = checkpointer.succeeded(run_id, {"db", "app", "new"})
    assert [(r.step_id, dict(r.outputs)) for r in kept] == [("db", {"host": "db"})]
    assert checkpointer.succeeded(run_id, {"app", "new"}) == []
    memory = MemoryCheckpointer()
    memory.save_many(run_id, [_record("db", "Succeeded"), _record("app", "Running")])
    assert [r.step_id for r in memory.succeeded(run_id, {"db", "app"})] == ["db"]


class FailingCheckpointer(RecordingCheckpointer):
    """Fails the transaction that would write ``bad`` Running, as a store gone away would:
    every checkpoint of that transaction gets the error, and nothing of it is kept."""

    def _write(self, batch: Any) -> None:
        if any(r.step_id == "bad" and r.status == "Running" for q in batch for r in q.records):
            error = StoreError(Code.STORE_UNREACHABLE, "database went away")
            for queued in batch:
                queued.error, queued.done = error, True
            return
        super()._write(batch)


@pytest.mark.parametrize("flush", [0.0, DEADLINE * 6], ids=["flushed", "with-its-end"])
def test_a_checkpoint_that_cannot_be_written_stops_the_run_and_raises(
    sqlite_store: Store,
    run_id: str,
    calls: Calls,
    flush: float,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whether the coordinator flushes ``bad``'s Running state or its end's transaction takes
    it, the failed write stops the run: nothing after ``bad`` runs, and the run raises."""
    monkeypatch.setattr(executor_module, "RUNNING_FLUSH", flush)
    checkpointer = FailingCheckpointer(sqlite_store)
    steps = [step("a", calls.ok()), step("bad", calls.ok(), "a"), step("c", calls.ok(), "bad")]
    with pytest.raises(StoreError, match="database went away"):
        Executor(checkpointer, parallelism=1).run(run_id, steps)
    assert "c" not in calls.order
    recorded = checkpointer.store_steps(run_id)
    assert recorded["a"].status == "Succeeded"
    # Pending when its end's transaction failed; Failed (interrupted) when the run stopped
    # before its attempt: never Succeeded.
    assert recorded["bad"].status in ("Pending", "Failed")
    assert recorded["c"].status != "Succeeded"


def test_the_memory_checkpointer_resumes_like_the_store(calls: Calls) -> None:
    checkpointer = MemoryCheckpointer()
    steps = [step("a", calls.ok()), step("b", calls.fail(RuntimeError("x")), "a")]
    assert Executor(checkpointer).run("r1", steps).status is RunStatus.FAILED
    steps[1] = step("b", calls.ok(), "a")
    assert Executor(checkpointer).run("r1", steps).status is RunStatus.SUCCEEDED
    assert calls.order == ["a", "b", "b"]
    assert [r.status for r in checkpointer.load("r1")] == ["Succeeded", "Succeeded"]


def _raising(error: BaseException) -> Write:
    def write() -> None:
        raise error

    return write


def test_deferred_writes_are_stored_with_the_succeeded_checkpoint_or_not_at_all(
    any_store: Store,
) -> None:
    """A step's record and its Succeeded checkpoint are one transaction: a write that raises
    rolls back the writes before it and fails the attempt; a failed attempt's writes are never
    made; a retryable failure of a write retries the step."""
    run_id = new_run(any_store)
    recorder = RecordingCheckpointer(any_store)
    flaky = [DriverError(Code.STORE_UNREACHABLE, "try again", retryable=True)]
    seen: list[str | None] = []

    def deferring(name: str, *, then: BaseException | None = None) -> Any:
        def run(context: StepContext) -> Mapping[str, Any]:
            context.defer(lambda: any_store.set_last_commit(name, context.step_id * 8))
            if then is not None:
                context.defer(_raising(then))
            return {}

        return run

    def failing(context: StepContext) -> Mapping[str, Any]:
        context.defer(lambda: any_store.set_last_commit("never", "f" * 40))
        raise DriverError(Code.MANIFEST_RENDER_FAILED, "bad template", retryable=False)

    def retried(context: StepContext) -> Mapping[str, Any]:
        seen.append(any_store.last_commit("retried"))
        context.defer(lambda: any_store.set_last_commit("retried", "r" * 40))
        if flaky:
            context.defer(_raising(flaky.pop()))
        return {}

    bad = DriverError(Code.MANIFEST_RENDER_FAILED, "the record cannot be written", retryable=False)
    steps = [
        step("ok", deferring("ok-env")),
        step("torn", deferring("torn-env", then=bad)),
        step("fails", failing),
        step("flaky", retried, retry=RetryPolicy(max_attempts=2, initial_backoff=0)),
    ]
    result = Executor(recorder, parallelism=1, sleep=FakeSleep()).run(run_id, steps)
    assert result.status is RunStatus.FAILED
    assert any_store.last_commit("ok-env") == "ok" * 8
    assert recorder.statuses("ok") == ["Pending", "Running", "Succeeded"]
    assert any_store.last_commit("torn-env") is None  # rolled back with the checkpoint
    assert recorder.statuses("torn") == ["Pending", "Running", "Failed"]
    torn = recorder.store_steps(run_id)["torn"]
    assert (torn.error_code, torn.message) == (Code.MANIFEST_RENDER_FAILED.id, bad.message)
    assert any_store.last_commit("never") is None
    assert seen == [None, None]  # the first attempt's write was rolled back
    assert any_store.last_commit("retried") == "r" * 40
    assert (result.steps["flaky"].status, result.steps["flaky"].attempts) == (
        StepStatus.SUCCEEDED,
        2,
    )


def _succeeded(step_id: str) -> StepRecord:
    return StepRecord(
        step_id=step_id, kind="test", target=step_id, action="apply", status="Succeeded"
    )


def test_a_queued_running_state_gives_way_to_its_steps_next_checkpoint_unless_that_fails(
    any_store: Store,
) -> None:
    """A Running state from ``save_soon`` rides on the next transaction; when that transaction
    checkpoints the same step again, the row ends in the later state, and if the later one's
    write raises, in the Running state, as if both had been written in turn."""
    run_id = new_run(any_store)
    checkpointer = StoreCheckpointer(any_store)
    running = [replace(_succeeded(sid), status="Running") for sid in ("a", "b", "c")]
    checkpointer.save_soon(run_id, running[:2])
    checkpointer.save(run_id, _succeeded("a"))
    assert {r.step_id: r.status for r in checkpointer.load(run_id)} == {
        "a": "Succeeded",
        "b": "Running",
    }
    checkpointer.save_soon(run_id, running[2:])
    failing = _raising(RuntimeError("the record cannot be written"))
    with pytest.raises(RuntimeError, match="the record cannot be written"):
        checkpointer.save(run_id, _succeeded("c"), [failing])
    assert {r.step_id: r.status for r in checkpointer.load(run_id)} == {
        "a": "Succeeded",
        "b": "Running",
        "c": "Running",
    }


def test_checkpoints_saved_while_a_transaction_is_open_share_the_next_one(
    any_store: Store,
) -> None:
    """Group commit: the checkpoints queued while one is being written go in one transaction
    after it, each with its writes in a savepoint; one whose write raises gets the error back,
    without its record or writes, and the others are committed."""
    run_id = new_run(any_store)
    checkpointer = StoreCheckpointer(any_store)
    first_writing, release = threading.Event(), threading.Event()
    transactions: list[str] = []
    sqlalchemy.event.listen(any_store.engine, "begin", lambda conn: transactions.append("begin"))

    def first_write() -> None:
        first_writing.set()
        assert release.wait(10)
        any_store.set_last_commit("first", "1" * 40)

    errors: dict[str, BaseException | None] = {}

    def save(step_id: str, writes: Sequence[Write]) -> None:
        try:
            checkpointer.save(run_id, _succeeded(step_id), writes)
            errors[step_id] = None
        except BaseException as error:
            errors[step_id] = error

    threads = [threading.Thread(target=save, args=("first", [first_write]))]
    threads[0].start()
    assert first_writing.wait(10)
    transactions.clear()  # the first one's is open: count from here
    queued = {
        f"q{i}": [lambda i=i: any_store.set_last_commit(f"q{i}", str(i) * 40)] for i in range(4)
    }
    queued["q2"].append(_raising(RuntimeError("the record cannot be written")))
    for step_id, writes in queued.items():
        threads.append(threading.Thread(target=save, args=(step_id, writes)))
        threads[-1].start()
    deadline = time.monotonic() + 10
    while len(checkpointer._queue) < len(queued) and time.monotonic() < deadline:
        time.sleep(0.01)
    release.set()
    for thread in threads:
        thread.join(10)
    assert transactions == ["begin"]  # the four queued ones: one transaction
    assert {k: None if v is None else str(v) for k, v in errors.items()} == {
        "first": None,
        "q0": None,
        "q1": None,
        "q2": "the record cannot be written",
        "q3": None,
    }
    saved = {r.step_id for r in checkpointer.load(run_id)}
    assert saved == {"first", "q0", "q1", "q3"}
    assert any_store.last_commit("q2") is None  # undone with its checkpoint
    assert [any_store.last_commit(f"q{i}") for i in (0, 1, 3)] == ["0" * 40, "1" * 40, "3" * 40]
