"""Where the executor writes each step's state, before and after it runs, so a run can resume.

The executor calls ``save`` from its worker threads (one step's writes always come from one
thread, in order) and ``save_many`` for batches it builds itself: every step Pending at the
start (with the first Running checkpoints of the steps it starts first), steps skipped together.
The first Running checkpoint of a step started later goes through ``save_soon``: that state only
informs (a resumed run re-runs every step not recorded Succeeded, Running or not), so it rides
on the next transaction, most often the one of a step finishing meanwhile, and the coordinator
calls ``flush`` if none came within ``executor.RUNNING_FLUSH``.
``StoreCheckpointer`` writes into the run's ``steps`` table; ``MemoryCheckpointer`` keeps
states in a dictionary, for previews and tests of scheduling.
The step value is the store's ``StepRecord``: it already is the checkpoint's exact shape.

A step's own records (``StepContext.defer``) come with its Succeeded checkpoint, as ``writes``:
the store makes them and the checkpoint in one transaction, so a step recorded Succeeded has
its record too, and each step costs one commit less.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from reconciler.engine.steps import StepStatus, Write
from reconciler.store import StepRecord, Store


class Checkpointer(Protocol):
    def load(self, run_id: str) -> Sequence[StepRecord]:
        """The steps recorded for ``run_id`` so far (empty for a new run)."""
        ...

    def succeeded(self, run_id: str, among: Collection[str]) -> Sequence[StepRecord]:
        """The steps of ``among`` recorded Succeeded for ``run_id``: what a resumed run keeps.
        Every executor run asks, and a run's later waves start with the earlier waves' steps
        recorded, none of them among their own."""
        ...

    def save(self, run_id: str, record: StepRecord, writes: Sequence[Write] = ()) -> None:
        """Make ``writes``, then write one step's state, durably before returning; atomically
        where the backend has transactions. An exception from a write propagates, and then
        neither the writes nor the state are kept."""
        ...

    def save_many(self, run_id: str, records: Sequence[StepRecord]) -> None:
        """Write several states at once (one transaction where the backend has them)."""
        ...

    def save_soon(self, run_id: str, records: Sequence[StepRecord]) -> None:
        """Queue states to be written with the next transaction, in order with every later
        write; never raises (the transaction that takes them raises what fails it)."""
        ...

    def flush(self) -> None:
        """Write what ``save_soon`` queued and no transaction took yet, durably; raises what
        failed it, and the states are dropped then."""
        ...


class StoreCheckpointer:
    """Checkpoints in the store; the run record (``store.create_run``) must exist already.

    Checkpoints are group-committed: a thread saving while another's transaction is in
    progress queues its checkpoint, and the next transaction writes every queued one, each
    with its own writes in a savepoint, so that a write that raises undoes only its step's
    part. Every ``save`` and ``save_many`` still returns only once its own transaction has
    committed (or raises what failed it). With SQLite's one writer the workers used to commit
    one after another anyway; now each waiting one costs a savepoint instead of a transaction,
    and the coordinator's Running checkpoints join the workers' Succeeded ones.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._queue: list[_Queued] = []
        self._queue_lock = threading.Lock()
        self._committing = threading.Lock()

    def load(self, run_id: str) -> Sequence[StepRecord]:
        return self._store.steps(run_id)

    def succeeded(self, run_id: str, among: Collection[str]) -> Sequence[StepRecord]:
        # Statuses first: decoding the rows of a run's earlier waves cost more than the wave's
        # scheduling, and the rows a resumed run keeps are read only when there are some.
        wanted = {
            step_id
            for step_id, status in self._store.step_statuses(run_id)
            if status == StepStatus.SUCCEEDED and step_id in among
        }
        if not wanted:
            return []
        return [r for r in self._store.steps(run_id) if r.step_id in wanted]

    def save(self, run_id: str, record: StepRecord, writes: Sequence[Write] = ()) -> None:
        self._commit(_Queued(run_id, (record,), tuple(writes)))

    def save_many(self, run_id: str, records: Sequence[StepRecord]) -> None:
        # One transaction: 10,000 Pending rows cost one commit (one fsync), not 10,000.
        self._commit(_Queued(run_id, tuple(records), ()))

    def save_soon(self, run_id: str, records: Sequence[StepRecord]) -> None:
        with self._queue_lock:
            self._queue.append(_Queued(run_id, tuple(records), (), soon=True))

    def flush(self) -> None:
        with self._committing:
            batch = self._write_queue()
        # The batch may hold workers' checkpoints too: each worker raises its own error.
        for queued in batch:
            if queued.soon and queued.error is not None:
                raise queued.error

    def _commit(self, queued: _Queued) -> None:
        """Queue ``queued``; the first thread to get the committer's lock writes the queue."""
        with self._queue_lock:
            self._queue.append(queued)
        with self._committing:
            if not queued.done:
                self._write_queue()
        if queued.error is not None:
            raise queued.error

    def _write_queue(self) -> list[_Queued]:
        """Write everything queued, in one transaction; call holding ``_committing``."""
        with self._queue_lock:
            batch, self._queue = self._queue, []
        if batch:
            self._write(batch)
        return batch

    def _write(self, batch: list[_Queued]) -> None:
        """One transaction for ``batch``; alone, a checkpoint is written as it always was."""
        store = self._store
        try:
            if len(batch) == 1 and not batch[0].writes:
                store.save_steps(batch[0].run_id, batch[0].records)
            elif len(batch) == 1:
                with store.transaction():
                    batch[0].apply(store)
            else:
                with store.transaction():
                    _write_together(store, batch)
        except BaseException as error:  # nothing of the batch was committed
            for queued in batch:
                queued.error = queued.error or error
        finally:
            for queued in batch:
                queued.done = True


def _write_together(store: Store, batch: list[_Queued]) -> None:
    """Every checkpoint of ``batch`` in the caller's transaction, the writes of each in a
    savepoint, so that a write that raises undoes its step's part only.

    A Running state queued with ``save_soon`` is left out when a later checkpoint of the batch
    is its step's: a step of a few milliseconds (an inline one always) finds its own Running
    state queued when it checkpoints Succeeded, and writing the row twice in one transaction
    was a step's third statement. Should that later checkpoint fail, the state left out is
    written after all, so that the row ends as it would have."""
    keys = [{(q.run_id, r.step_id) for r in q.records} for q in batch]
    later: set[tuple[str, str]] = set()
    superseded: list[set[tuple[str, str]]] = []
    for queued, written in zip(reversed(batch), reversed(keys), strict=True):
        superseded.append(written & later if queued.soon else set())
        if not queued.soon:
            later |= written
    superseded.reverse()
    left_out: dict[tuple[str, str], StepRecord] = {}
    for queued, skip in zip(batch, superseded, strict=True):
        records = queued.records
        if skip:
            kept = []
            for record in records:
                key = (queued.run_id, record.step_id)
                if key in skip:
                    left_out[key] = record
                else:
                    kept.append(record)
            records = tuple(kept)
        try:
            if queued.writes:
                with store.savepoint():
                    queued.apply(store, records)
            else:  # a checkpoint that fails stops the run: no savepoint
                queued.apply(store, records)
        except Exception as error:  # this step's part only is undone
            queued.error = error
    for queued, written in zip(batch, keys, strict=True):
        if queued.error is not None and not queued.soon:
            back = [left_out[key] for key in sorted(written) if key in left_out]
            store.save_steps(queued.run_id, back)


@dataclass(slots=True)
class _Queued:
    """Checkpoints waiting for a transaction, with the writes to make before them."""

    run_id: str
    records: tuple[StepRecord, ...]
    writes: tuple[Write, ...]
    soon: bool = False  # from ``save_soon``: no thread waits for it
    done: bool = False
    error: BaseException | None = None

    def apply(self, store: Store, records: Sequence[StepRecord] | None = None) -> None:
        """Make the writes, then save ``records`` (all of this checkpoint's by default)."""
        for write in self.writes:
            write()
        store.save_steps(self.run_id, self.records if records is None else records)


class MemoryCheckpointer:
    """Checkpoints in memory, for ``preview`` runs that must leave no trace, and for tests."""

    def __init__(self) -> None:
        self._runs: dict[str, dict[str, StepRecord]] = {}
        self._lock = threading.Lock()

    def load(self, run_id: str) -> Sequence[StepRecord]:
        with self._lock:
            steps = self._runs.get(run_id, {})
            return [steps[sid] for sid in sorted(steps)]

    def succeeded(self, run_id: str, among: Collection[str]) -> Sequence[StepRecord]:
        return [
            r for r in self.load(run_id) if r.status == StepStatus.SUCCEEDED and r.step_id in among
        ]

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

    def save_soon(self, run_id: str, records: Sequence[StepRecord]) -> None:
        self.save_many(run_id, records)

    def flush(self) -> None:
        """Nothing waits: ``save_soon`` wrote already."""
