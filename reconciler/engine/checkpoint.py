"""Where the executor writes each step's state, before and after it runs, so a run can resume.

The executor calls ``save`` from its worker threads (one step's writes always come from one
thread, in order) and ``save_many`` for batches it builds itself: every step Pending at the
start, the first Running checkpoints of the steps it starts together, steps skipped together.
``StoreCheckpointer`` writes into the run's ``steps`` table; ``MemoryCheckpointer`` keeps
states in a dictionary, for previews and tests of scheduling.
The step value is the store's ``StepRecord``: it already is the checkpoint's exact shape.

A step's own records (``StepContext.defer``) come with its Succeeded checkpoint, as ``writes``:
the store makes them and the checkpoint in one transaction, so a step recorded Succeeded has
its record too, and each step costs one commit less.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Protocol

from reconciler.engine.steps import Write
from reconciler.store import StepRecord, Store


class Checkpointer(Protocol):
    def load(self, run_id: str) -> Sequence[StepRecord]:
        """The steps recorded for ``run_id`` so far (empty for a new run)."""
        ...

    def save(self, run_id: str, record: StepRecord, writes: Sequence[Write] = ()) -> None:
        """Make ``writes``, then write one step's state, durably before returning; atomically
        where the backend has transactions. An exception from a write propagates, and then
        neither the writes nor the state are kept."""
        ...

    def save_many(self, run_id: str, records: Sequence[StepRecord]) -> None:
        """Write several states at once (one transaction where the backend has them)."""
        ...


class StoreCheckpointer:
    """Checkpoints in the store; the run record (``store.create_run``) must exist already."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def load(self, run_id: str) -> Sequence[StepRecord]:
        return self._store.steps(run_id)

    def save(self, run_id: str, record: StepRecord, writes: Sequence[Write] = ()) -> None:
        if not writes:
            self._store.save_step(run_id, record)
            return
        with self._store.transaction():
            for write in writes:
                write()
            self._store.save_step(run_id, record)

    def save_many(self, run_id: str, records: Sequence[StepRecord]) -> None:
        # One transaction: 10,000 Pending rows cost one commit (one fsync), not 10,000.
        self._store.save_steps(run_id, records)


class MemoryCheckpointer:
    """Checkpoints in memory, for ``preview`` runs that must leave no trace, and for tests."""

    def __init__(self) -> None:
        self._runs: dict[str, dict[str, StepRecord]] = {}
        self._lock = threading.Lock()

    def load(self, run_id: str) -> Sequence[StepRecord]:
        with self._lock:
            steps = self._runs.get(run_id, {})
            return [steps[sid] for sid in sorted(steps)]

    def save(self, run_id: str, record: StepRecord, writes: Sequence[Write] = ()) -> None:
        for write in writes:
            write()
        with self._lock:
            self._runs.setdefault(run_id, {})[record.step_id] = record

    def save_many(self, run_id: str, records: Sequence[StepRecord]) -> None:
        with self._lock:
            steps = self._runs.setdefault(run_id, {})
            for record in records:
                steps[record.step_id] = record
