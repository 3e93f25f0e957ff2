"""The values the engine runs and returns: steps, their retry policy, contexts and outcomes.

The composer turns a plan's actions into ``Step`` values (a callable per step, closing over the
driver call) and hands them to ``Executor.run``; the engine knows nothing of resources or Git,
only ids, dependencies and callables. A step's callable must be idempotent: after a crash the
step that was running runs again.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

from reconciler.catalogue import Code

Outputs = Mapping[str, Any]
Write = Callable[[], None]
"""A step's own store write, deferred to its Succeeded checkpoint (``StepContext.defer``)."""


class StepStatus(enum.StrEnum):
    """A step's state in the store. ``RolledBack`` is not ``Succeeded`` on purpose: a resumed
    run must apply a compensated step again."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SKIPPED = "Skipped"
    ROLLED_BACK = "RolledBack"


class RunStatus(enum.StrEnum):
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    INTERRUPTED = "Interrupted"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Attempts and waits for failures that retrying can fix (retryable driver errors and
    timeouts). ``max_attempts`` counts the first attempt; ``jitter`` is proportional (see
    ``backoff``)."""

    max_attempts: int = 5
    initial_backoff: float = 1.0
    max_backoff: float = 300.0
    multiplier: float = 2.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.initial_backoff < 0 or self.max_backoff < 0 or self.multiplier < 1:
            raise ValueError("backoffs must be >= 0 and the multiplier >= 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must lie in [0, 1]")


class StepCancelled(Exception):
    """Raised by ``StepContext.raise_if_cancelled``; a step may also just return early."""


class StepContext:
    """What a step's callable sees of the run: its identity, the outputs of finished steps, a
    log that is checkpointed with the step, writes to make with its Succeeded checkpoint, and an
    event set when it should stop (the run is cancelled or this attempt timed out). Each attempt
    gets its own context and event, so that an abandoned attempt stays cancelled while the next
    one runs."""

    __slots__ = (
        "_lines",
        "_open",
        "_writes",
        "attempt",
        "cancelled",
        "outputs",
        "run_id",
        "step_id",
    )

    def __init__(
        self,
        *,
        run_id: str,
        step_id: str,
        attempt: int,
        outputs: Mapping[str, Outputs],
        lines: list[str],
    ) -> None:
        self.run_id = run_id
        self.step_id = step_id
        self.attempt = attempt
        self.outputs = outputs
        self.cancelled = threading.Event()
        self._lines = lines
        self._writes: list[Write] = []
        self._open = True

    def log(self, message: str) -> None:
        """Append a line to the step's log; ignored once the attempt is over (a timed-out
        attempt still running must not write into its successor's log)."""
        if self._open:
            self._lines.append(message)

    def defer(self, write: Write) -> None:
        """Make ``write`` (the step's record of what it did) in the transaction that checkpoints
        the step Succeeded, after the callable returns: the record and the checkpoint are stored
        together or not at all, for one commit instead of two. Writes of a failed attempt are
        never made; a write that raises fails the attempt. Ignored once the attempt is over."""
        if self._open:
            self._writes.append(write)

    @property
    def writes(self) -> tuple[Write, ...]:
        """The writes deferred by this attempt, in order."""
        return tuple(self._writes)

    def raise_if_cancelled(self) -> None:
        if self.cancelled.is_set():
            raise StepCancelled(f"{self.step_id}: cancelled")

    def close(self) -> None:
        self._open = False


class OutputsView(Mapping[str, Outputs]):
    """A read-only, thread-safe view of the outputs of finished steps, shared by every context
    of a run: copying the outputs for each step would cost O(steps²) on a large first run."""

    def __init__(self, outputs: dict[str, Outputs], lock: threading.Lock) -> None:
        self._outputs = outputs
        self._lock = lock

    def __getitem__(self, step_id: str) -> Outputs:
        with self._lock:
            return self._outputs[step_id]

    def __iter__(self) -> Iterator[str]:
        with self._lock:
            return iter(sorted(self._outputs))

    def __len__(self) -> int:
        with self._lock:
            return len(self._outputs)


@dataclass(frozen=True, slots=True)
class Step:
    """One node of the DAG. ``kind``, ``target`` and ``action`` are only recorded (for
    ``reconciler run-show``); ``timeout`` bounds each attempt, in seconds.

    ``inline`` says the step only computes and uses the store and local files: no request to a
    server, no command, no wait on anything but the store. The thread running the executor
    then makes its first attempt itself instead of handing it to a worker thread and waiting
    for the report: for steps of a few milliseconds, the two hand-offs cost a tenth of a first
    reconcile of 10 workloads and a fifth of one of 1,000. Its context's ``cancelled`` is not
    set while it runs (nobody else is there to set it); a cancel stops the run after it. A
    retry waits and runs on a worker, as any step's.
    """

    id: str
    run: Callable[[StepContext], Outputs]
    depends_on: tuple[str, ...] = ()
    kind: str = ""
    target: str = ""
    action: str = ""
    timeout: float | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    compensate: Callable[[StepContext], None] | None = None
    inline: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "depends_on", tuple(dict.fromkeys(self.depends_on)))
        if self.timeout is not None and self.timeout <= 0:
            raise ValueError(f"{self.id}: timeout must be positive")


@dataclass(frozen=True, slots=True)
class StepOutcome:
    """How a step ended in this run. ``resumed`` marks a step that had succeeded before a crash
    and was not run again; ``attempts`` is 0 for a step that never started."""

    status: StepStatus
    attempts: int = 0
    error_code: Code | None = None
    message: str = ""
    outputs: Outputs = field(default_factory=lambda: MappingProxyType({}))
    started_at: datetime | None = None
    finished_at: datetime | None = None
    resumed: bool = False


@dataclass(frozen=True, slots=True)
class RunResult:
    """The end of ``Executor.run``: ``steps`` is in step id order; ``rolled_back`` says that
    compensation ran (each step's outcome says whether its own compensation worked)."""

    status: RunStatus
    steps: Mapping[str, StepOutcome]
    rolled_back: bool = False

    def with_status(self, *statuses: StepStatus) -> list[str]:
        """Ids of the steps in any of ``statuses``, sorted."""
        return [sid for sid, outcome in self.steps.items() if outcome.status in statuses]


def check_graph(steps: Sequence[Step]) -> dict[str, Step]:
    """Index steps by id, refusing duplicates, unknown dependencies and cycles.

    The planner never builds such a graph; this guard keeps a bug there from hanging a run.
    """
    by_id: dict[str, Step] = {}
    for step in steps:
        if step.id in by_id:
            raise ValueError(f"duplicate step id '{step.id}'")
        by_id[step.id] = step
    for sid in sorted(by_id):
        # Each dependency looked up, not the set of ids taken apart: ``set - dict.keys()``
        # walks every key, which made this quadratic (about 3 s for a run of 10,000).
        unknown = sorted({d for d in by_id[sid].depends_on if d not in by_id})
        if unknown:
            raise ValueError(f"step '{sid}' depends on unknown steps: {', '.join(unknown)}")
    indegree = {sid: len(set(step.depends_on)) for sid, step in by_id.items()}
    children: dict[str, list[str]] = {sid: [] for sid in by_id}
    for sid, step in by_id.items():
        for dep in set(step.depends_on):
            children[dep].append(sid)
    todo = [sid for sid, n in indegree.items() if n == 0]
    while todo:
        for child in children[todo.pop()]:
            indegree[child] -= 1
            if indegree[child] == 0:
                todo.append(child)
    cyclic = sorted(sid for sid, n in indegree.items() if n > 0)
    if cyclic:
        raise ValueError(f"steps form a cycle (or depend on one): {', '.join(cyclic)}")
    return by_id
