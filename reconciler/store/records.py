"""The values the store accepts and returns: frozen, typed, free of any database type.

Callers build these and never see a row. JSON-valued fields are plain mappings and lists; the
store returns them with keys in sorted order, so two reads of the same state compare and render
the same. Timestamps are aware UTC. Statuses are strings named as in docs/architecture.md
(runs: Pending, Running, WaitingApproval, Succeeded, Failed); the store does not police them.

No field holds a secret value: ``ResourceRecord.outputs`` holds non-secret outputs only and
``secret_refs`` maps each secret output to a reference (for example ``vault:kv/app#password``)
that a driver resolves when it needs the value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

JsonObject = Mapping[str, Any]

OPEN_RUN_STATUSES = ("Pending", "Running")
"""A run some process may still be applying (or will resume): neither ended nor waiting."""


def _require_aware(record: object, *names: str) -> None:
    """Refuse naive timestamps when a record is built, not later in a database driver: a naive
    timestamp is a bug in the caller, and its zone is not something to guess."""
    for name in names:
        value = getattr(record, name)
        if isinstance(value, datetime) and value.tzinfo is None:
            raise ValueError(f"{type(record).__name__}.{name}: naive timestamp; use aware UTC")


@dataclass(frozen=True, slots=True)
class EnvironmentRecord:
    name: str
    last_commit: str | None
    last_reconciled_at: datetime | None
    updated_at: datetime

    def __post_init__(self) -> None:
        _require_aware(self, "last_reconciled_at", "updated_at")


@dataclass(frozen=True, slots=True)
class WorkloadRecord:
    """A workload as last applied: its resolved spec (secrets as references) and where it came
    from, so that the next commit can be diffed and reloaded incrementally."""

    name: str
    commit: str
    file: str
    spec_hash: str
    spec: JsonObject
    sources: Mapping[str, str] = field(default_factory=dict)
    source: JsonObject = field(default_factory=dict)
    """The normalised Score document as loaded: reused, unparsed, while its files are unchanged."""
    status: str = "Synced"
    updated_at: datetime | None = None  # set by the store on every save

    def __post_init__(self) -> None:
        _require_aware(self, "updated_at")


@dataclass(frozen=True, slots=True)
class ResourceRecord:
    """A provisioned resource. ``uid`` is its Score identity (``type.class#id``)."""

    uid: str
    type: str
    class_: str
    res_id: str
    provisioner: str
    params_hash: str
    params: JsonObject = field(default_factory=dict)
    state: JsonObject = field(default_factory=dict)
    outputs: JsonObject = field(default_factory=dict)
    secret_refs: Mapping[str, str] = field(default_factory=dict)
    source_workload: str | None = None
    status: str = "Healthy"
    created_at: datetime | None = None  # set by the store on the first save, then kept
    updated_at: datetime | None = None  # set by the store on every save

    def __post_init__(self) -> None:
        _require_aware(self, "created_at", "updated_at")


@dataclass(frozen=True, slots=True)
class RecordedState:
    """Everything recorded for one environment: what the planner diffs the desired state with."""

    environment: str
    workloads: Mapping[str, WorkloadRecord]
    resources: Mapping[str, ResourceRecord]


@dataclass(frozen=True, slots=True)
class PlanInputs:
    """What planning an environment reads from the store, read together (``Store.plan_inputs``):
    a plan that finds nothing changed costs little more than these reads."""

    recorded: RecordedState
    last_commit: str | None
    """The commit the environment was last reconciled at (None: never, or forgotten)."""
    pins: Mapping[str, PinRecord]
    """Pinned workloads by name (``reconciler rollback``)."""
    unsettled: frozenset[str] = frozenset()
    """Commits runs started applying since ``last_commit`` was settled: a workload recorded at
    one of them may be ahead of ``last_commit``, so what changed since ``last_commit`` does not
    tell whether its file changed since; a plan compares its file at its own commit."""


@dataclass(frozen=True, slots=True)
class RunRecord:
    id: str
    environment: str
    commit: str
    status: str
    trigger: str
    started_at: datetime
    plan: JsonObject | None = None
    trace_id: str | None = None
    finished_at: datetime | None = None
    error_code: str | None = None
    message: str | None = None
    scope: tuple[str, ...] | None = None
    """The workloads the run reconciles (sorted); None for the whole environment."""

    def __post_init__(self) -> None:
        _require_aware(self, "started_at", "finished_at")


@dataclass(frozen=True, slots=True)
class StepRecord:
    """One step of a run, checkpointed before and after it runs (``attempt`` counts retries)."""

    step_id: str
    kind: str
    target: str
    action: str
    status: str
    attempt: int = 0
    depends_on: Sequence[str] = ()
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error_code: str | None = None
    message: str | None = None
    outputs: JsonObject = field(default_factory=dict)
    log: str = ""

    def __post_init__(self) -> None:
        _require_aware(self, "started_at", "finished_at")
        # A tuple whatever the caller passed, so that a record equals itself read back.
        object.__setattr__(self, "depends_on", tuple(self.depends_on))


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One audit entry; ``hash`` chains it to the entry before (``prev_hash``)."""

    id: int
    at: datetime
    actor: str
    action: str
    environment: str | None
    subject: str
    detail: JsonObject
    prev_hash: str
    hash: str

    def __post_init__(self) -> None:
        _require_aware(self, "at")


@dataclass(frozen=True, slots=True)
class PinRecord:
    """A workload held at ``commit``'s desired state until a commit after ``head`` (the
    followed commit when it was pinned) changes its Score file."""

    workload: str
    file: str
    commit: str
    head: str
