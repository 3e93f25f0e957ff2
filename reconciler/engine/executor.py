"""``Executor``: runs a DAG of steps with bounded parallelism until every step has an outcome.

The composer builds one executor per daemon and calls ``run`` per run id; the daemon's SIGTERM
handler calls ``cancel``. One coordinator (the thread calling ``run``) owns all scheduling state
and is the only reader of the inbox where workers report; worker threads, added up to the
parallelism while steps wait (``_Run._ramp``), each drive one step at a time through its
attempts, writing the step's checkpoints themselves; the coordinator makes the first attempt of
an ``inline`` step itself, the same way, between its other duties. Only the coordinator writes
batches (Pending at start, Skipped) and the states of steps it gives up on, and it marks those
steps abandoned under the step's lock first, so that a late worker can never overwrite what
the run reported.

Failures never escape as exceptions except one: a checkpoint that cannot be written. Then the
run stops starting steps, waits for the running ones, and re-raises the store's error, because
continuing without checkpoints would break the promise that a resumed run applies nothing twice.
"""

from __future__ import annotations

import heapq
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from types import MappingProxyType

from reconciler.catalogue import Code
from reconciler.engine.attempts import (
    Failure,
    describe,
    exhausted,
    failure_of,
    interrupted,
    run_attempt,
)
from reconciler.engine.backoff import Sleep, Uniform, backoff_delay, event_sleep, system_uniform
from reconciler.engine.checkpoint import Checkpointer
from reconciler.engine.steps import (
    Outputs,
    OutputsView,
    RunResult,
    RunStatus,
    Step,
    StepContext,
    StepOutcome,
    StepStatus,
    Write,
    check_graph,
)
from reconciler.store import StepRecord

GRACE_PERIOD = 30.0
SIGNAL_POLL = 0.2
"""Seconds the coordinator blocks at most on the main thread. A signal the kernel delivers to a
worker thread does not wake the main thread, and Python runs its handler (``cancel`` on
SIGTERM) only when the main thread is back in the interpreter: without a bound, SIGTERM waited
for the running step to finish."""
RUNNING_FLUSH = 0.05
"""Seconds within which a step's first Running checkpoint is written when no other
transaction took it first (see ``Checkpointer.save_soon``): a long step shows Running at once,
and a step of a few milliseconds costs no transaction of its own to say so."""
WORKER_RAMP = 0.002
"""Seconds a step runs, mostly waiting rather than computing, before the coordinator starts
another worker for the ready steps behind it (see ``_Run._ramp``)."""
_CANCEL = object()
_LOOK_AGAIN = object()


def utc_now() -> datetime:
    return datetime.now(UTC)


class _Abandoned(Exception):
    """The coordinator gave up on this step; its worker must write nothing more."""


class _WriteFailed(Exception):
    """A write the step deferred raised: its attempt failed (the checkpoint did not)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass(frozen=True, slots=True)
class _Report:
    step_id: str
    outcome: StepOutcome | None = None
    error: BaseException | None = None  # a checkpoint (or engine) failure: stop the run


@dataclass(slots=True)
class _Slot:
    """A running step, shared by the coordinator and the step's worker. ``started`` is when
    the coordinator recorded it Running (its first attempt's checkpoint)."""

    step: Step
    lines: list[str]
    started: datetime
    lock: threading.Lock = field(default_factory=threading.Lock)
    abandoned: bool = False
    context: StepContext | None = None
    clock: int | None = None
    """The CPU-time clock of the worker that took the step, once it has (``_Run._ramp``)."""
    taken_at: float = 0.0
    cpu_at: float = 0.0
    attempts: int = 0
    """Attempts made so far; with ``failure``, where a worker takes up an inline step."""
    failure: Failure | None = None
    """Why the last attempt failed, when it is to be retried after a backoff."""


class Executor:
    """Runs steps; see docs/engine.md. ``sleep`` and ``uniform`` shape the backoff waits,
    ``clock`` (monotonic seconds) the grace period, ``now`` the recorded timestamps.

    ``cancel`` is safe to call from a signal handler: it only sets a flag and posts to a
    ``SimpleQueue``, whose ``put`` is reentrant. Several runs may go on at once (one per
    application); ``cancel`` stops them all, and an executor stays cancelled once cancelled.
    """

    def __init__(
        self,
        checkpointer: Checkpointer,
        *,
        parallelism: int = 4,
        grace_period: float = GRACE_PERIOD,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = utc_now,
        sleep: Sleep = event_sleep,
        uniform: Uniform | None = None,
    ) -> None:
        if parallelism < 1:
            raise ValueError("parallelism must be at least 1")
        self._checkpointer = checkpointer
        self._parallelism = parallelism
        self._grace_period = grace_period
        self._clock = clock
        self._now = now
        self._sleep = sleep
        self._uniform = uniform or system_uniform()
        self._cancelled = False
        self._inboxes: set[queue.SimpleQueue[object]] = set()

    def run(self, run_id: str, steps: Sequence[Step], *, rollback: bool = False) -> RunResult:
        """Run ``steps`` (or resume ``run_id``) to the end. Raises ValueError for a duplicate
        id, an unknown dependency or a cycle, before anything is written."""
        by_id = check_graph(steps)
        inbox: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._inboxes.add(inbox)
        try:
            return _Run(self, run_id, by_id, inbox).execute(rollback=rollback)
        finally:
            self._inboxes.discard(inbox)

    def cancel(self) -> None:
        """Stop starting steps, signal the running ones and give them the grace period."""
        self._cancelled = True
        for inbox in tuple(self._inboxes):  # one C-level copy: atomic under the GIL
            inbox.put(_CANCEL)


class _Run:
    """The state of one ``Executor.run`` call."""

    def __init__(
        self, ex: Executor, run_id: str, steps: Mapping[str, Step], inbox: queue.SimpleQueue[object]
    ) -> None:
        self.ex = ex
        self.run_id = run_id
        self.steps = steps
        self.inbox = inbox
        self.work: queue.SimpleQueue[_Slot | None] = queue.SimpleQueue()
        self.dependents: dict[str, list[str]] = {sid: [] for sid in steps}
        for sid in sorted(steps):
            for dep in steps[sid].depends_on:
                self.dependents[dep].append(sid)
        self.waiting: dict[str, int] = {}
        self.ready: list[str] = []
        self.running: dict[str, _Slot] = {}
        self.outcomes: dict[str, StepOutcome] = {}
        self.logs: dict[str, list[str]] = {}
        self.completed: list[str] = []  # succeeded, in order of completion, for rollback
        self.outputs_lock = threading.Lock()
        self.outputs: dict[str, Outputs] = {}
        self.view = OutputsView(self.outputs, self.outputs_lock)
        self.stop = threading.Event()  # set by the coordinator only
        self.deadline: float | None = None
        self.fatal: BaseException | None = None
        self.unsaved: dict[str, StepRecord] = {}  # Pending, written with the first Running
        self.flush_at: float | None = None  # monotonic time by which ``save_soon`` is flushed
        self.workers: list[threading.Thread] = []
        self.most_workers = min(ex._parallelism, len(steps))

    # -- coordinator ------------------------------------------------------------------------

    def execute(self, *, rollback: bool) -> RunResult:
        self._start()
        try:
            self._loop()
        finally:
            for _ in self.workers:
                self.work.put(None)
            self._flush()
        if self.fatal is None:
            self._interrupt_rest()
        if self.fatal is not None:
            raise self.fatal
        status = self._status()
        rolled_back = rollback and status is RunStatus.FAILED
        if rolled_back:
            self._rollback()
        ordered = {sid: self.outcomes[sid] for sid in sorted(self.outcomes)}
        return RunResult(status=status, steps=MappingProxyType(ordered), rolled_back=rolled_back)

    def _start(self) -> None:
        """Restore what a previous process finished, then record every other step Pending."""
        done = {r.step_id: r for r in self.ex._checkpointer.succeeded(self.run_id, self.steps)}
        for record in sorted(
            done.values(), key=lambda r: (r.finished_at or self.ex._now(), r.step_id)
        ):
            self.outcomes[record.step_id] = StepOutcome(
                status=StepStatus.SUCCEEDED,
                attempts=record.attempt,
                message=record.message or "",
                outputs=MappingProxyType(dict(record.outputs)),
                started_at=record.started_at,
                finished_at=record.finished_at,
                resumed=True,
            )
            self.outputs[record.step_id] = self.outcomes[record.step_id].outputs
            self.logs[record.step_id] = record.log.splitlines()
            self.completed.append(record.step_id)
        pending = [sid for sid in sorted(self.steps) if sid not in done]
        # Written by the first dispatch, with the Running states of the steps it starts: one
        # transaction, still committed before any step runs.
        self.unsaved = {sid: self._record(sid, StepOutcome(StepStatus.PENDING)) for sid in pending}
        for sid in pending:
            self.waiting[sid] = sum(dep not in done for dep in self.steps[sid].depends_on)
            if self.waiting[sid] == 0:
                self.ready.append(sid)
        heapq.heapify(self.ready)

    def _add_worker(self) -> None:
        name = f"engine-{len(self.workers)}"
        worker = threading.Thread(target=self._work, name=name, daemon=True)
        worker.start()
        self.workers.append(worker)

    def _ramp(self) -> float | None:
        """Start another worker when ready steps wait behind a step that waits: one that has
        run for ``WORKER_RAMP`` and spent less than a quarter of that on the CPU (a request, a
        command, a lock). Workers are added one at a time up to ``parallelism`` and kept for
        the run. Returns the monotonic time to look again, or None when there is nothing to
        look for (or a worker was just added).

        A run starts one worker (for its first step that is not inline), so steps that compute
        run one after another, as they would under the GIL anyway: four workers computing at
        once only took the GIL from each other, and the hand-offs cost a run of short steps
        more than a tenth of its time."""
        if not self.ready or len(self.workers) >= self.most_workers or self.stop.is_set():
            return None
        if len(self.running) < len(self.workers):
            return None  # a worker is free: ``_dispatch`` gives it the next step
        now = time.monotonic()
        looks: list[float] = []
        for slot in self.running.values():
            clock = slot.clock
            if clock is None:  # not taken yet: look again soon after
                looks.append(now + WORKER_RAMP)
                continue
            ran = now - slot.taken_at
            if ran < WORKER_RAMP:
                looks.append(slot.taken_at + WORKER_RAMP)
                continue
            try:
                computed = time.clock_gettime(clock) - slot.cpu_at
            except OSError:  # the worker is gone (it ended): its report is on its way
                continue
            if computed < ran / 4:
                self._add_worker()
                return None
            looks.append(now + max(WORKER_RAMP, ran))  # the longer it computed, the less often
        return min(looks, default=None)

    def _loop(self) -> None:
        while True:
            if self._dispatch():  # it ran a step: take the reports that came meanwhile
                self._take_reports()
                continue
            if not self.running:
                return
            workers = len(self.workers)
            look_at = self._ramp()
            if len(self.workers) > workers:
                continue  # a worker was added: give it a step
            if self.flush_at is not None and time.monotonic() >= self.flush_at:
                self._flush()
            message = self._next_message(look_at)
            if message is _LOOK_AGAIN:
                continue
            if message is None:  # the grace period is over
                self._abandon_running()
                return
            self._take_reports(message)

    def _take_reports(self, message: object = None) -> None:
        """Handle ``message`` and every other one waiting, so that the steps they free start
        together."""
        while True:
            if message is _CANCEL:
                self._begin_stop()
            elif isinstance(message, _Report):
                self._finish(message)
            try:
                message = self.inbox.get_nowait()
            except queue.Empty:
                return

    def _dispatch(self) -> bool:
        """Start what is ready, in id order, and run the first ready ``inline`` step here; True
        when it ran one. The first call writes every step Pending, with the Running
        checkpoints of the steps it starts, in one transaction before any runs; later calls
        queue the Running checkpoints with ``save_soon`` (see ``RUNNING_FLUSH``): with
        SQLite's one writer, a transaction of their own made the workers queue for it, and
        it was most of a short step's cost. The first worker is started for the first step
        that is not inline: a run of inline steps starts no thread."""
        if self.ex._cancelled:  # seen before its inbox message: start nothing more
            self._begin_stop()
        started: list[_Slot] = []
        inline: _Slot | None = None  # the last of ``started`` when there is one
        while self.ready and inline is None and not self.stop.is_set():
            step = self.steps[self.ready[0]]
            busy = len(self.running) + len(started)
            if busy >= (self.ex._parallelism if step.inline else len(self.workers) or 1):
                break
            if not step.inline and not self.workers:
                self._add_worker()
            heapq.heappop(self.ready)
            started.append(_Slot(step, self.logs.setdefault(step.id, []), self.ex._now()))
            if step.inline:
                inline = started[-1]
        if not started and not self.unsaved:
            return False
        records, self.unsaved = self.unsaved, {}
        first = bool(records)
        for slot in started:
            records[slot.step.id] = self._record(
                slot.step.id,
                StepOutcome(StepStatus.RUNNING, 1, started_at=slot.started),
                slot.lines,
            )
        try:
            if first:  # the run's steps, durably listed before any runs
                self.ex._checkpointer.save_many(self.run_id, list(records.values()))
            else:
                self.ex._checkpointer.save_soon(self.run_id, list(records.values()))
                if self.flush_at is None:
                    self.flush_at = time.monotonic() + RUNNING_FLUSH
        except Exception as error:  # as a worker's checkpoint failing: none of them runs
            self.fatal = self.fatal or error
            for slot in started:
                self.outcomes[slot.step.id] = StepOutcome(StepStatus.FAILED, message=str(error))
            self._begin_stop()
            return False
        for slot in started:
            self.running[slot.step.id] = slot
            if slot is not inline:
                self.work.put(slot)
        if inline is None:
            return False
        self._run_inline(inline)
        return True

    def _run_inline(self, slot: _Slot) -> None:
        """The first attempt of an inline step, here; a retry goes to a worker, which waits
        the backoff and makes the next attempts (see ``_drive``)."""
        try:
            outcome = self._drive(slot, inline=True)
        except BaseException as error:  # a checkpoint failed (or Ctrl-C): stop the run
            self._finish(_Report(slot.step.id, error=error))
            return
        if outcome is not None:
            self._finish(_Report(slot.step.id, outcome=outcome))
            return
        if len(self.running) > len(self.workers) and len(self.workers) < self.most_workers:
            self._add_worker()  # every worker is busy: the retry does not wait for one
        self.work.put(slot)

    def _next_message(self, look_at: float | None = None) -> object | None:
        """The next message of the inbox, or None once the grace period has run out; waited
        for in slices of ``SIGNAL_POLL`` on the main thread, so that signal handlers run, and
        no later than ``flush_at``, to flush the Running checkpoints no transaction took, and
        ``look_at``, when it is ``_LOOK_AGAIN`` (see ``_ramp``)."""
        remaining = self._remaining_grace()
        main = threading.current_thread() is threading.main_thread()
        while True:
            wait = remaining
            if main:
                wait = SIGNAL_POLL if wait is None else min(SIGNAL_POLL, wait)
            now = time.monotonic()
            flush_in = None if self.flush_at is None else self.flush_at - now
            look_in = None if look_at is None else look_at - now
            flushing = flush_in is not None and (wait is None or flush_in < wait)
            if flushing:
                wait = max(0.0, flush_in or 0.0)
            looking = look_in is not None and (wait is None or look_in < wait)
            if looking:
                wait = max(0.0, look_in or 0.0)
            try:
                return self.inbox.get(timeout=wait)
            except queue.Empty:
                if looking:
                    return _LOOK_AGAIN
                if flushing:
                    self._flush()
                if remaining is not None:
                    assert wait is not None
                    remaining -= wait
                    if remaining <= 0:
                        return None

    def _flush(self) -> None:
        """Write the Running checkpoints ``_dispatch`` queued with ``save_soon``, if no
        transaction took them yet; a failure stops the run as a failed checkpoint does."""
        self.flush_at = None
        try:
            self.ex._checkpointer.flush()
        except Exception as error:
            self.fatal = self.fatal or error
            self._begin_stop()

    def _remaining_grace(self) -> float | None:
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - self.ex._clock())

    def _begin_stop(self) -> None:
        if self.stop.is_set():
            return
        self.stop.set()
        self.deadline = self.ex._clock() + self.ex._grace_period
        for slot in self.running.values():
            if slot.context is not None:
                slot.context.cancelled.set()

    def _finish(self, report: _Report) -> None:
        del self.running[report.step_id]
        if report.error is not None or report.outcome is None:
            self.fatal = self.fatal or report.error
            self.outcomes[report.step_id] = StepOutcome(
                StepStatus.FAILED, message=str(report.error)
            )
            self._begin_stop()
            return
        sid, outcome = report.step_id, report.outcome
        self.outcomes[sid] = outcome
        if outcome.status is StepStatus.SUCCEEDED:
            with self.outputs_lock:
                self.outputs[sid] = outcome.outputs
            self.completed.append(sid)
            for child in self.dependents[sid]:
                self.waiting[child] -= 1
                if self.waiting[child] == 0:
                    heapq.heappush(self.ready, child)
        elif outcome.error_code is not Code.RUN_INTERRUPTED:
            self._skip_dependents(sid)  # an interrupted step's dependents are interrupted too

    def _skip_dependents(self, failed: str) -> None:
        skipped: list[str] = []
        todo = list(self.dependents[failed])
        while todo:
            sid = todo.pop()
            if sid in self.outcomes:
                continue
            self.outcomes[sid] = StepOutcome(
                StepStatus.SKIPPED,
                error_code=Code.DEPENDENCY_FAILED,
                message=f"skipped: step '{failed}' it depends on failed",
            )
            skipped.append(sid)
            todo.extend(self.dependents[sid])
        self._save_batch(sorted(skipped))

    def _abandon_running(self) -> None:
        """The grace period is over: give up on steps that did not stop."""
        for sid in sorted(self.running):
            slot = self.running.pop(sid)
            with slot.lock:
                slot.abandoned = True
            self.outcomes[sid] = StepOutcome(
                StepStatus.FAILED,
                error_code=Code.RUN_INTERRUPTED,
                message=f"interrupted: did not stop within {self.ex._grace_period:g} s",
            )
            self._save_batch([sid])

    def _interrupt_rest(self) -> None:
        rest = [sid for sid in sorted(self.steps) if sid not in self.outcomes]
        for sid in rest:
            self.outcomes[sid] = StepOutcome(
                StepStatus.SKIPPED,
                error_code=Code.RUN_INTERRUPTED,
                message="skipped: the run was interrupted before the step started",
            )
        self._save_batch(rest)

    def _status(self) -> RunStatus:
        if all(o.status is StepStatus.SUCCEEDED for o in self.outcomes.values()):
            return RunStatus.SUCCEEDED
        return RunStatus.INTERRUPTED if self.stop.is_set() else RunStatus.FAILED

    def _save_batch(self, step_ids: Sequence[str]) -> None:
        if not step_ids or self.fatal is not None:
            return
        try:
            self.ex._checkpointer.save_many(
                self.run_id,
                [self._record(sid, self.outcomes[sid], self.logs.get(sid, ())) for sid in step_ids],
            )
        except Exception as error:
            self.fatal = error
            self._begin_stop()

    # -- rollback ---------------------------------------------------------------------------

    def _rollback(self) -> None:
        """Undo, newest first, what this run (and the process it resumes) completed."""
        for sid in reversed(self.completed):
            step = self.steps[sid]
            if step.compensate is None:
                continue
            lines = self.logs.setdefault(sid, [])
            context = StepContext(
                run_id=self.run_id, step_id=sid, attempt=1, outputs=self.view, lines=lines
            )
            outcome = self.outcomes[sid]
            try:
                step.compensate(context)
            except BaseException as error:
                message = f"compensation failed: {describe(error)}"
                lines.append(message)
                outcome = replace(outcome, error_code=Code.ROLLBACK_FAILED, message=message)
            else:
                lines.append("compensated")
                outcome = replace(outcome, status=StepStatus.ROLLED_BACK, message="rolled back")
            finally:
                context.close()
            self.outcomes[sid] = outcome
            self._save_batch([sid])

    # -- workers ----------------------------------------------------------------------------

    def _work(self) -> None:
        clock = time.pthread_getcpuclockid(threading.get_ident())
        while (slot := self.work.get()) is not None:
            slot.cpu_at = time.clock_gettime(clock)
            slot.taken_at = time.monotonic()
            slot.clock = clock  # last: the coordinator reads the two above once this is set
            try:
                outcome = self._drive(slot)
            except _Abandoned:
                continue
            except BaseException as error:
                self.inbox.put(_Report(slot.step.id, error=error))
            else:
                self.inbox.put(_Report(slot.step.id, outcome=outcome))

    def _drive(self, slot: _Slot, *, inline: bool = False) -> StepOutcome | None:
        """The attempts of one step, with a checkpoint before and after each, from where
        ``slot`` stands (a worker takes up an inline step after its first attempt). On the
        coordinator (``inline``), None when the attempt is to be retried: the backoff would
        hold up the whole run there."""
        policy = slot.step.retry
        started = slot.started
        while True:
            failure = slot.failure
            if failure is not None:  # retryable, with attempts left: wait, then try again
                if inline:
                    return None
                slot.failure = None
                if self._wait_to_retry(slot, failure):
                    interruption = interrupted("while waiting to retry")
                    return self._end(slot, slot.attempts, started, interruption)
            attempt = slot.attempts + 1
            if self.stop.is_set():
                return self._end(slot, attempt - 1, started, interrupted("before the attempt"))
            if attempt > 1:  # the first attempt's was written by the coordinator (_dispatch)
                self._write(slot, StepOutcome(StepStatus.RUNNING, attempt, started_at=started))
            slot.attempts = attempt
            result = self._attempt(slot, attempt)
            if not isinstance(result, Failure):
                outcome = StepOutcome(
                    StepStatus.SUCCEEDED, attempt, None, "", result, started, self.ex._now()
                )
                assert slot.context is not None
                failed = self._succeed(slot, outcome, slot.context.writes)
                if failed is None:
                    return outcome
                result = failed
            if self.stop.is_set():
                return self._end(slot, attempt, started, interrupted("", result))
            if not result.retryable:
                return self._end(slot, attempt, started, result)
            if attempt >= policy.max_attempts:
                return self._end(slot, attempt, started, exhausted(result, attempt))
            slot.failure = result

    def _wait_to_retry(self, slot: _Slot, failure: Failure) -> bool:
        """Checkpoint why the step waits, then wait the backoff; True if the run was
        cancelled meanwhile."""
        attempt = slot.attempts
        delay = backoff_delay(slot.step.retry, attempt, self.ex._uniform)
        note = f"attempt {attempt} failed: {failure.code.id} {failure.message}; "
        slot.lines.append(note + f"retrying in {delay:.1f} s")
        waiting = StepOutcome(
            StepStatus.RUNNING, attempt, failure.code, slot.lines[-1], started_at=slot.started
        )
        self._write(slot, waiting)
        return self.ex._sleep(delay, self.stop)

    def _attempt(self, slot: _Slot, attempt: int) -> Outputs | Failure:
        step = slot.step
        context = StepContext(
            run_id=self.run_id,
            step_id=step.id,
            attempt=attempt,
            outputs=self.view,
            lines=slot.lines,
        )
        slot.context = context
        if self.stop.is_set():  # a cancel between the check in _drive and here
            context.cancelled.set()
        return run_attempt(step, context)

    def _end(self, slot: _Slot, attempts: int, started: datetime, failure: Failure) -> StepOutcome:
        outcome = StepOutcome(
            StepStatus.FAILED,
            attempts,
            failure.code,
            failure.message,
            started_at=started,
            finished_at=self.ex._now(),
        )
        self._write(slot, outcome)
        return outcome

    def _write(self, slot: _Slot, state: StepOutcome) -> None:
        with slot.lock:
            if slot.abandoned:
                raise _Abandoned
            self.ex._checkpointer.save(self.run_id, self._record(slot.step.id, state, slot.lines))

    def _succeed(
        self, slot: _Slot, outcome: StepOutcome, writes: Sequence[Write]
    ) -> Failure | None:
        """Checkpoint the step Succeeded with the writes it deferred, in one transaction; a
        write that raises rolls both back and fails the attempt instead."""

        def guarded(write: Write) -> Write:
            def run() -> None:
                try:
                    write()
                except BaseException as error:
                    raise _WriteFailed(error) from error

            return run

        record = self._record(slot.step.id, outcome, slot.lines)
        with slot.lock:
            if slot.abandoned:
                raise _Abandoned
            try:
                self.ex._checkpointer.save(self.run_id, record, [guarded(w) for w in writes])
            except _WriteFailed as failed:
                return failure_of(failed.error, slot.step)
        return None

    def _record(self, sid: str, state: StepOutcome, lines: Sequence[str] = ()) -> StepRecord:
        step = self.steps[sid]
        return StepRecord(
            step_id=sid,
            kind=step.kind,
            target=step.target,
            action=step.action,
            status=str(state.status),
            attempt=state.attempts,
            depends_on=step.depends_on,
            started_at=state.started_at,
            finished_at=state.finished_at,
            error_code=None if state.error_code is None else state.error_code.id,
            message=state.message or None,
            outputs=dict(state.outputs),
            log="".join(f"{line}\n" for line in lines),
        )
