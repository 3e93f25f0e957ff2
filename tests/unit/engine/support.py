"""Helpers for the engine tests: a checkpointer that remembers the order of writes, a sleep that
never waits, step callables that log their calls, and step builders."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from reconciler.engine import Step, StepContext, StoreCheckpointer, Write
from reconciler.store import StepRecord, Store

DEADLINE = 10.0  # seconds a test waits for an event before it fails rather than hangs


class RecordingCheckpointer(StoreCheckpointer):
    """The store checkpointer, remembering each write as (step id, status, attempt) in order."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.writes: list[tuple[str, str, int]] = []
        self.batches: list[list[str]] = []
        self._lock = threading.Lock()

    def save(self, run_id: str, record: StepRecord, writes: Sequence[Write] = ()) -> None:
        super().save(run_id, record, writes)
        with self._lock:
            self.writes.append((record.step_id, record.status, record.attempt))

    def save_many(self, run_id: str, records: Sequence[StepRecord]) -> None:
        super().save_many(run_id, records)
        with self._lock:
            self.batches.append([r.step_id for r in records])
            self.writes.extend((r.step_id, r.status, r.attempt) for r in records)

    def save_soon(self, run_id: str, records: Sequence[StepRecord]) -> None:
        super().save_soon(run_id, records)
        with self._lock:
            self.writes.extend((r.step_id, r.status, r.attempt) for r in records)

    def store_steps(self, run_id: str) -> dict[str, StepRecord]:
        return {record.step_id: record for record in self.load(run_id)}

    def statuses(self, step_id: str) -> list[str]:
        return [status for sid, status, _ in self.writes if sid == step_id]


class FakeSleep:
    """Records each backoff wait and returns at once (interrupted if the event is set)."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float, interrupt: threading.Event) -> bool:
        self.waits.append(seconds)
        return interrupt.is_set()


def new_run(store: Store) -> str:
    return store.create_run("prod", "c" * 40, trigger="test").id


class Calls:
    """Step callables that log their calls in order, thread-safely."""

    def __init__(self) -> None:
        self.order: list[str] = []
        self._lock = threading.Lock()

    def ok(self, outputs: Mapping[str, Any] | None = None) -> Callable[[StepContext], Any]:
        def run(context: StepContext) -> Mapping[str, Any]:
            with self._lock:
                self.order.append(context.step_id)
            return dict(outputs or {"done": context.step_id})

        return run

    def fail(self, error: BaseException) -> Callable[[StepContext], Any]:
        def run(context: StepContext) -> Mapping[str, Any]:
            with self._lock:
                self.order.append(context.step_id)
            raise error

        return run

    def count(self, step_id: str) -> int:
        return self.order.count(step_id)


def step(step_id: str, run: Callable[[StepContext], Any], *deps: str, **fields: Any) -> Step:
    return Step(id=step_id, run=run, depends_on=deps, **fields)
