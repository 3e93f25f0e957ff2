"""Reporting a status everywhere at once without ever holding up a reconcile.

The daemon calls ``FanOut.report(status)`` at the start and end of each reconcile. The call only
queues: every reporter (notes, status branch, forge) has its own lane, a worker thread with an
ordered queue, so a remote that is down or a forge answering 500 delays nothing but its own lane,
and is retried there with exponential backoff. A reporter that names a ``coalesce_key`` lets a
newer status replace an unsent older one with the same key: under a rate limit or an outage only
the latest word per commit and context is sent. ``close(timeout)`` flushes for at most that long.

Failures are logged with their code, counted (``counters()`` feeds the metrics) and never raised.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import count
from typing import Protocol, runtime_checkable

from reconciler.catalogue import Code
from reconciler.gitops.errors import GitError
from reconciler.gitops.status.model import CommitStatus

log = logging.getLogger("reconciler.status")

# The catalogue has no codes for reporting yet (docs/status.md proposes RCN-4006..4012); these
# stand-ins are the closest existing ones, named here so that the switch is one line each.
NOTES_WRITE_FAILED = Code.NOTES_WRITE_FAILED
NOTES_PUSH_FAILED = Code.NOTES_PUSH_FAILED
STATUS_BRANCH_WRITE_FAILED = Code.STATUS_BRANCH_WRITE_FAILED
FORGE_REJECTED = Code.FORGE_REJECTED
FORGE_UNAVAILABLE = Code.FORGE_UNAVAILABLE
FORGE_TOKEN_MISSING = Code.FORGE_TOKEN_MISSING
REPORT_DROPPED = Code.REPORT_DROPPED


class ReportError(GitError):
    """A report that did not arrive; ``retryable`` says whether trying again can help and
    ``retry_after`` (seconds) is the earliest moment the other side asked for."""

    def __init__(
        self, code: Code, message: str, *, retryable: bool = True, retry_after: float | None = None
    ) -> None:
        super().__init__(code, message)
        self.retryable = retryable
        self.retry_after = retry_after


class Throttled(ReportError):
    """Our own rate limit says "not yet": the lane waits without counting an attempt."""

    def __init__(self, code: Code, wait: float) -> None:
        super().__init__(code, f"rate limited; next send in {wait:.2f} s", retry_after=wait)


class Reporter(Protocol):
    """One place statuses go; ``report`` raises ``GitError`` (``ReportError``) when it fails."""

    name: str

    def report(self, status: CommitStatus) -> None: ...


@runtime_checkable
class CoalescingReporter(Protocol):
    """A reporter for which only the latest status per key matters (a forge's commit status)."""

    name: str

    def report(self, status: CommitStatus) -> None: ...

    def coalesce_key(self, status: CommitStatus) -> Hashable: ...


@dataclass(frozen=True, slots=True)
class RetrySettings:
    """Per lane: attempts per status (the first included) and the backoff between them."""

    max_attempts: int = 6
    initial_backoff: float = 1.0
    max_backoff: float = 60.0
    max_retry_after: float = 300.0
    jitter: float = 0.2
    max_pending: int = 1000

    def backoff(self, failed_attempts: int, uniform: float) -> float:
        base = min(self.max_backoff, self.initial_backoff * 2.0 ** (failed_attempts - 1))
        return base * (1.0 + self.jitter * (2.0 * uniform - 1.0))


@dataclass(frozen=True, slots=True)
class ReportCounters:
    """What one lane did so far; ``pending`` is the queue now, the rest are totals."""

    sent: int = 0
    retried: int = 0
    failed: int = 0
    superseded: int = 0
    dropped: int = 0
    pending: int = 0
    last_error: str | None = None


@dataclass(slots=True)
class _Item:
    status: CommitStatus
    attempts: int = 0
    not_before: float = 0.0


class _Lane:
    """One reporter's queue and worker thread."""

    def __init__(
        self, reporter: Reporter, settings: RetrySettings, clock: Callable[[], float]
    ) -> None:
        self.reporter = reporter
        self._settings = settings
        self._clock = clock
        self._uniform = random.Random().random
        self._pending: OrderedDict[Hashable, _Item] = OrderedDict()
        self._serial = count()
        self._busy = False
        self._closing = False
        self._deadline = float("inf")
        self._totals = dict.fromkeys(("sent", "retried", "failed", "superseded", "dropped"), 0)
        self._last_error: str | None = None
        self.abandoned = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(
            target=self._run, name=f"reporter-{reporter.name}", daemon=True
        )
        self._thread.start()

    # -- the caller's side ---------------------------------------------------------------------

    def submit(self, status: CommitStatus) -> None:
        key = self._key(status)
        with self._cond:
            if self._closing:
                self._count(dropped=1)
                return
            old = self._pending.get(key)
            if old is not None:  # an unsent older status: the newer one takes its place
                old.status = status
                self._count(superseded=1)
            else:
                self._pending[key] = _Item(status)
                if len(self._pending) > self._settings.max_pending:
                    self._pending.popitem(last=False)
                    self._count(dropped=1)
            self._cond.notify_all()

    def wait_idle(self, deadline: float) -> bool:
        with self._cond:
            while self._pending or self._busy:
                left = deadline - self._clock()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def begin_close(self, deadline: float) -> None:
        """Take no more statuses; send what is queued until ``deadline``, then stop."""
        with self._cond:
            self._closing = True
            self._deadline = deadline
            self._cond.notify_all()

    def finish(self, deadline: float) -> None:
        """Count what is still queued as dropped (the worker may be stuck in a request) and let
        the worker end; it is a daemon thread, so one stuck in a request ends with the process."""
        with self._cond:
            self._abandon()
            self._cond.notify_all()
        self._thread.join(max(0.0, deadline - self._clock()))

    def counters(self) -> ReportCounters:
        with self._cond:
            return ReportCounters(
                **self._totals,
                pending=len(self._pending) + int(self._busy),
                last_error=self._last_error,
            )

    # -- the worker ----------------------------------------------------------------------------

    def _run(self) -> None:
        while (taken := self._take()) is not None:
            key, item = taken
            outcome = self._attempt(item)
            with self._cond:
                self._busy = False
                if outcome is not None:
                    self._requeue(key, item, outcome)
                self._cond.notify_all()

    def _take(self) -> tuple[Hashable, _Item] | None:
        """The oldest item once it is due; None when closing and empty or past the deadline."""
        with self._cond:
            while True:
                now = self._clock()
                if self._closing and (not self._pending or now >= self._deadline):
                    self._abandon()
                    return None
                if self._pending:
                    key, item = next(iter(self._pending.items()))
                    if item.not_before <= now:
                        del self._pending[key]
                        self._busy = True
                        return key, item
                    wake = min(item.not_before, self._deadline) - now
                else:
                    wake = None
                self._cond.wait(wake)

    def _attempt(self, item: _Item) -> ReportError | None:
        """Send once; None on success, else the error to retry on (giving up is handled here)."""
        try:
            self.reporter.report(item.status)
        except Throttled as exc:
            return exc
        except ReportError as exc:
            error: ReportError = exc
        except GitError as exc:  # a Git write or push: worth another try
            error = ReportError(exc.code, exc.message)
        except Exception as exc:  # a bug in a reporter must not kill the lane
            log.exception("status reporter %s failed unexpectedly", self.reporter.name)
            self._record_failure(item, f"{type(exc).__name__}: {exc}")
            return None
        else:
            with self._cond:
                self._count(sent=1)
            return None
        item.attempts += 1
        if not error.retryable or item.attempts >= self._settings.max_attempts:
            self._record_failure(item, f"{error.code.id} {error.message}")
            return None
        return error

    def _requeue(self, key: Hashable, item: _Item, error: ReportError) -> None:
        if key in self._pending:  # superseded while in flight: the newer status goes instead
            self._count(superseded=1)
            return
        wait = 0.0 if isinstance(error, Throttled) else self._backoff(item)
        if error.retry_after is not None:
            wait = max(wait, min(error.retry_after, self._settings.max_retry_after))
        item.not_before = self._clock() + wait
        self._pending[key] = item
        self._pending.move_to_end(key, last=False)
        if not isinstance(error, Throttled):
            self._count(retried=1, last_error=f"{error.code.id} {error.message}")
            log.warning(
                "status report to %s failed (%s): %s; retrying in %.1f s",
                self.reporter.name,
                error.code.id,
                error.message,
                wait,
            )

    def _backoff(self, item: _Item) -> float:
        return self._settings.backoff(item.attempts, self._uniform())

    def _record_failure(self, item: _Item, text: str) -> None:
        log.error(
            "status report to %s for %s %s gave up after %d attempts: %s",
            self.reporter.name,
            item.status.environment,
            item.status.commit[:7],
            item.attempts,
            text,
        )
        with self._cond:
            self._count(failed=1, last_error=text)

    def _abandon(self) -> None:
        if self._pending:
            log.error(
                "status reporter %s closed with %d reports unsent (%s)",
                self.reporter.name,
                len(self._pending),
                REPORT_DROPPED.id,
            )
            self._count(dropped=len(self._pending))
            self._pending.clear()
            self.abandoned = True

    def _key(self, status: CommitStatus) -> Hashable:
        if isinstance(self.reporter, CoalescingReporter):
            try:
                return self.reporter.coalesce_key(status)
            except Exception:
                log.exception("status reporter %s: no coalescing key", self.reporter.name)
        return ("unique", next(self._serial))

    def _count(self, last_error: str | None = None, **deltas: int) -> None:
        """Add to the totals; the caller holds the lock."""
        for name, delta in deltas.items():
            self._totals[name] += delta
        if last_error is not None:
            self._last_error = last_error


class FanOut:
    """Every reporter, each in its own lane; ``report`` never blocks and never raises."""

    def __init__(
        self,
        reporters: Sequence[Reporter],
        *,
        retry: RetrySettings | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        names = [reporter.name for reporter in reporters]
        if len(set(names)) != len(names):
            raise ValueError(f"reporter names must differ: {names}")
        self._clock = clock
        self._lanes = tuple(_Lane(r, retry or RetrySettings(), clock) for r in reporters)

    def report(self, status: CommitStatus) -> None:
        for lane in self._lanes:
            try:
                lane.submit(status)
            except Exception:  # never let reporting fail a reconcile
                log.exception("status reporter %s refused a status", lane.reporter.name)

    def wait_idle(self, timeout: float) -> bool:
        """Whether every lane emptied (sent or gave up) within ``timeout`` seconds."""
        deadline = self._clock() + timeout
        return all(lane.wait_idle(deadline) for lane in self._lanes)

    def close(self, timeout: float) -> bool:
        """Flush for at most ``timeout`` seconds, then stop; True if nothing was left unsent.

        A request in flight when time runs out is left to its own timeout in a daemon thread.
        """
        deadline = self._clock() + timeout
        for lane in self._lanes:
            lane.begin_close(deadline)
        flushed = all(lane.wait_idle(deadline) for lane in self._lanes)
        for lane in self._lanes:
            lane.finish(deadline)
        return flushed and not any(lane.abandoned for lane in self._lanes)

    def counters(self) -> Mapping[str, ReportCounters]:
        return {lane.reporter.name: lane.counters() for lane in self._lanes}

    def __iter__(self) -> Iterator[Reporter]:
        return iter(lane.reporter for lane in self._lanes)
