"""The daemon's work queue: which (environment, workload) needs reconciling next.

Webhooks, the Git watcher and periodic resyncs ``add`` keys; worker threads ``get`` one, reconcile
it, and call ``done``. The queue is level-triggered: it holds keys, not events, because a
reconcile always works from the newest commit, so ten pushes while a key waits need one run.

- A key waiting is not added twice; a key added while it is processed runs once more after.
- A key is processed by one worker at a time.
- After a failure a key waits ``backoff_delay`` (exponential, capped) before its retry; success
  resets the count. Adding a key while it backs off runs it now, because an add means new
  information (a push may be the fix); the failure count stays, so the next wait is longer.
- Ready keys come out in the order they became ready, so a key that keeps failing goes to the
  back each time and cannot starve the others.

Time comes from an injected ``Clock`` so tests move it by hand.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from reconciler.engine.backoff import Uniform, backoff_delay, system_uniform
from reconciler.engine.steps import RetryPolicy

K = TypeVar("K", bound=Hashable)

DEFAULT_BACKOFF = RetryPolicy(initial_backoff=1.0, max_backoff=300.0, multiplier=2.0, jitter=0.1)
"""The queue retries until a key succeeds or is added again, so ``max_attempts`` is unused."""
SKIP_POLL = 0.05
"""Seconds between looks at ready keys ``get`` skipped (their environment's run ends unseen)."""


class Clock(Protocol):
    """Monotonic seconds, and a way to wait on a condition measured in those seconds."""

    def now(self) -> float: ...

    def wait(self, condition: threading.Condition, timeout: float | None) -> None:
        """Wait on ``condition`` (held by the caller) until notified or ``timeout`` passes."""


class SystemClock:
    def now(self) -> float:
        return time.monotonic()

    def wait(self, condition: threading.Condition, timeout: float | None) -> None:
        condition.wait(timeout)


@dataclass(slots=True)
class _State:
    """Mutable bookkeeping of one key, only touched under the queue's lock."""

    due: float | None = None  # waiting until then; None when not waiting
    entry: int = 0  # the heap entry that is current; older ones are skipped when popped
    processing: bool = False
    requeue: float | None = None  # added while processing: when to run again after ``done``
    failures: int = 0


Entry = tuple[float, int, Any]
"""(due, entry number, key): a heap orders by due, then by when the key was scheduled."""


def _one_group(key: object) -> None:
    return None


class WorkQueue(Generic[K]):
    """A keyed, deduplicated, rate-limited queue shared by the daemon's worker threads.

    Keys fall into groups (``group``; the daemon's are environments), each with a heap of its
    own, so that passing over a group (``get``'s ``skip``) or taking a group's ready keys
    (``take_ready``) costs the number of groups, not of keys: a first reconcile queues one key
    per workload, thousands of them in one group, and a worker waiting for another group looks
    at the queue every ``SKIP_POLL``.
    """

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        backoff: RetryPolicy = DEFAULT_BACKOFF,
        uniform: Uniform | None = None,
        group: Callable[[K], Hashable] = _one_group,
    ) -> None:
        self._clock: Clock = clock or SystemClock()
        self._backoff = backoff
        self._uniform = uniform or system_uniform()
        self._group = group
        self._cond = threading.Condition()
        self._states: dict[K, _State] = {}
        self._heaps: dict[Hashable, list[Entry]] = {}  # a group's waiting keys; none empty
        self._entries = 0
        self._shut = False

    def add(self, key: K) -> None:
        """Ask for ``key`` to be processed as soon as a worker is free."""
        self.add_after(key, 0.0)

    def add_after(self, key: K, delay: float) -> None:
        """Ask for ``key`` to be processed in ``delay`` seconds (or sooner if already due)."""
        with self._cond:
            if self._shut:
                return
            due = self._clock.now() + max(0.0, delay)
            state = self._states.setdefault(key, _State())
            if state.processing:
                state.requeue = due if state.requeue is None else min(state.requeue, due)
            else:
                self._schedule(key, state, due)

    def get(
        self, timeout: float | None = None, *, skip: Callable[[K], bool] | None = None
    ) -> K | None:
        """The next ready key, now marked as processing; None on timeout or after shutdown.

        ``skip`` is asked about the first ready key of each group and stands for the whole
        group: a skipped group's keys keep their place and are looked at again every
        ``SKIP_POLL`` seconds (the daemon skips the keys of an environment another worker is
        applying: two runs of one environment at once only slow each other down).
        """
        with self._cond:
            now = self._clock.now()
            deadline = None if timeout is None else now + timeout
            while not self._shut:
                key, skipped = self._pop_ready(now, skip)
                if key is not None:
                    return key
                wake = now + SKIP_POLL if skipped else self._next_due()
                if deadline is not None:
                    if now >= deadline:
                        return None
                    wake = deadline if wake is None else min(wake, deadline)
                self._clock.wait(self._cond, None if wake is None else max(0.0, wake - now))
                now = self._clock.now()
            return None

    def take_ready(
        self, match: Callable[[K], bool], limit: int, *, group: Hashable = None
    ) -> list[K]:
        """Up to ``limit`` more ready keys of ``group`` that ``match``, now marked as
        processing, in the order they became ready: a worker handling one key takes its like
        along, to handle them in one go (the daemon applies several workloads of an
        environment in one run). The others keep their place."""
        taken: list[K] = []
        with self._cond:
            heap = self._heaps.get(group)
            if heap is None:
                return taken
            now = self._clock.now()
            skipped: list[Entry] = []
            while len(taken) < limit:
                self._drop_stale(heap)
                if not heap or heap[0][0] > now:
                    break
                entry = heapq.heappop(heap)
                if match(entry[2]):
                    state = self._states[entry[2]]
                    state.due, state.processing = None, True
                    taken.append(entry[2])
                else:
                    skipped.append(entry)
            for entry in skipped:
                heapq.heappush(heap, entry)
            if not heap:
                del self._heaps[group]
        return taken

    def done(self, key: K, *, ok: bool) -> float | None:
        """Finish processing ``key``; after a failure, return the wait before its retry."""
        with self._cond:
            state = self._states.get(key)
            if state is None or not state.processing:
                raise ValueError(f"{key!r} is not being processed")
            state.processing = False
            now = self._clock.now()
            delay = None
            due = state.requeue
            state.requeue = None
            if ok:
                state.failures = 0
            else:
                state.failures += 1
                delay = backoff_delay(self._backoff, state.failures, self._uniform)
                due = now + delay if due is None else min(due, now + delay)
            if due is not None and not self._shut:
                self._schedule(key, state, due)
            elif state.failures == 0:
                del self._states[key]
            return delay

    def shutdown(self) -> None:
        """Stop handing out keys and wake every waiting worker; adds are ignored from now on."""
        with self._cond:
            self._shut = True
            self._cond.notify_all()

    def depth(self) -> int:
        """Keys waiting to be processed, ready or backing off (not those being processed)."""
        with self._cond:
            return sum(1 for state in self._states.values() if state.due is not None)

    def failures(self, key: K) -> int:
        """Failures of ``key`` since its last success."""
        with self._cond:
            state = self._states.get(key)
            return 0 if state is None else state.failures

    def _schedule(self, key: K, state: _State, due: float) -> None:
        """Make ``key`` wait until ``due``, unless it already waits for an earlier time."""
        if state.due is not None and state.due <= due:
            return
        self._entries += 1
        state.due, state.entry = due, self._entries
        heap = self._heaps.setdefault(self._group(key), [])
        self._drop_stale(heap)
        first = heap[0][0] if heap else None
        heapq.heappush(heap, (due, self._entries, key))
        if first is None or due < first:
            # Waiters sleep until the earliest first key of a group, or poll a skipped group:
            # only a key that comes first in its group can be due before they wake. (Thousands
            # of adds in a row would otherwise wake every waiting worker thousands of times.)
            self._cond.notify_all()

    def _pop_ready(
        self, now: float, skip: Callable[[K], bool] | None = None
    ) -> tuple[K | None, bool]:
        """The first ready key of a group ``skip`` does not match, and whether a ready group
        was skipped."""
        best: list[Entry] | None = None
        best_group: Hashable = None
        skipped = False
        for group, heap in self._live_heaps():
            if heap[0][0] <= now:
                if skip is not None and skip(heap[0][2]):
                    skipped = True
                elif best is None or heap[0][:2] < best[0][:2]:
                    best, best_group = heap, group
        if best is None:
            return None, skipped
        found: K = heapq.heappop(best)[2]
        if not best:
            del self._heaps[best_group]
        state = self._states[found]
        state.due, state.processing = None, True
        return found, skipped

    def _next_due(self) -> float | None:
        return min((heap[0][0] for _, heap in self._live_heaps()), default=None)

    def _live_heaps(self) -> list[tuple[Hashable, list[Entry]]]:
        """Each group's heap with a live entry on top; the groups left with none are dropped."""
        live = []
        for group, heap in list(self._heaps.items()):
            self._drop_stale(heap)
            if heap:
                live.append((group, heap))
            else:
                del self._heaps[group]
        return live

    def _drop_stale(self, heap: list[Entry]) -> None:
        """Pop the entries on top of ``heap`` that are no longer their key's (the key was
        taken, or scheduled again for an earlier time)."""
        while heap:
            _, entry, key = heap[0]
            state = self._states.get(key)
            if state is not None and state.due is not None and state.entry == entry:
                return
            heapq.heappop(heap)
