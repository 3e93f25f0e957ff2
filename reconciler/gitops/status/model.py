"""The status of one reconcile of one commit in one environment, as every reporter writes it.

The composer builds a ``CommitStatus`` at the end of a reconcile (and a ``Pending`` one when it
starts) and hands it to ``FanOut``; notes store it as a JSON line, the status branch as YAML files
and the forge as a commit status. Keeping one frozen value for all three means they never tell
different stories about the same run.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Literal

SHA_PATTERN = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
"""A full SHA-1 or SHA-256 object id: a short one could name another commit tomorrow."""


class Sync(enum.StrEnum):
    SYNCED = "Synced"
    OUT_OF_SYNC = "OutOfSync"
    UNKNOWN = "Unknown"


class Health(enum.StrEnum):
    HEALTHY = "Healthy"
    PROGRESSING = "Progressing"
    DEGRADED = "Degraded"
    SUSPENDED = "Suspended"
    MISSING = "Missing"
    UNKNOWN = "Unknown"


class Phase(enum.StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    WAITING_APPROVAL = "WaitingApproval"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


Severity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class Summary:
    """The plan's counts, as Terraform's ``Plan: X to add, Y to change, Z to destroy.``"""

    add: int = 0
    change: int = 0
    destroy: int = 0

    def __str__(self) -> str:
        return f"{self.add} to add, {self.change} to change, {self.destroy} to destroy"


@dataclass(frozen=True, slots=True)
class Failure:
    """A coded problem with the file and line that caused it; warnings ride along with errors
    so that a forge with a warning state (Gitea) can show them."""

    code: str
    message: str
    file: str | None = None
    line: int | None = None
    severity: Severity = "error"

    def __str__(self) -> str:
        where = self.file or ""
        if where and self.line is not None:
            where += f":{self.line}"
        return f"{self.code} {where}: {self.message}" if where else f"{self.code} {self.message}"


@dataclass(frozen=True, slots=True)
class WorkloadStatus:
    sync: Sync = Sync.UNKNOWN
    health: Health = Health.UNKNOWN
    message: str = ""


@dataclass(frozen=True, slots=True)
class CommitStatus:
    """One environment's result for one commit and run.

    ``scope`` says what the status speaks for. None: the whole environment, and ``workloads``
    covers all of it, so the status branch can replace the environment's folder with it. A
    tuple of workload names: a run that reconciled just those (the daemon works per workload);
    a name in ``scope`` but not in ``workloads`` was removed. The empty tuple: the
    environment's own verdict on the commit, without per-workload detail (the forge's status).
    """

    environment: str
    commit: str
    run_id: str
    phase: Phase
    at: datetime
    sync: Sync = Sync.UNKNOWN
    health: Health = Health.UNKNOWN
    summary: Summary = Summary()
    message: str = ""
    failures: tuple[Failure, ...] = ()
    workloads: Mapping[str, WorkloadStatus] = field(default_factory=dict)
    target_url: str | None = None
    scope: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not self.environment or "/" in self.environment:
            raise ValueError(f"environment {self.environment!r}: not a name")
        if not SHA_PATTERN.match(self.commit):
            raise ValueError(f"commit {self.commit!r}: not a full object id")
        if self.at.tzinfo is None:
            raise ValueError("at: a time without a zone is ambiguous; give a UTC time")
        for name in self.workloads:
            if not name or "/" in name or name.startswith((".", "_")):
                raise ValueError(f"workload {name!r}: not a name")
        at = self.at.astimezone(UTC)
        object.__setattr__(self, "at", at.replace(microsecond=at.microsecond // 1000 * 1000))
        object.__setattr__(self, "failures", tuple(self.failures))
        object.__setattr__(
            self, "workloads", MappingProxyType(dict(sorted(self.workloads.items())))
        )
        if self.scope is not None:
            object.__setattr__(self, "scope", tuple(sorted(set(self.scope))))
            for name in self.scope:
                if not name or "/" in name or name.startswith((".", "_")):
                    raise ValueError(f"workload {name!r}: not a name")

    @property
    def partial(self) -> bool:
        """A status of some workloads only: one of several runs of the commit."""
        return bool(self.scope)

    @property
    def context(self) -> str:
        """The forge's status context: one status line per environment on a commit."""
        return f"reconciler/{self.environment}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "commit": self.commit,
            "run_id": self.run_id,
            "sync": str(self.sync),
            "health": str(self.health),
            "phase": str(self.phase),
            "summary": {
                "add": self.summary.add,
                "change": self.summary.change,
                "destroy": self.summary.destroy,
            },
            "message": self.message,
            "failures": [_failure_dict(failure) for failure in self.failures],
            "workloads": {
                name: {"sync": str(w.sync), "health": str(w.health), "message": w.message}
                for name, w in self.workloads.items()
            },
            "at": format_time(self.at),
            "target_url": self.target_url,
            **({} if self.scope is None else {"scope": list(self.scope)}),
        }

    def to_json_line(self) -> str:
        """One compact JSON object with sorted keys: ``at`` sorts first, so sorting a note's
        lines sorts them by time, and equal statuses give equal bytes (notes dedupe on them)."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json_line(cls, line: str) -> CommitStatus:
        data = json.loads(line)
        return cls(
            environment=data["environment"],
            commit=data["commit"],
            run_id=data["run_id"],
            phase=Phase(data["phase"]),
            at=datetime.fromisoformat(data["at"]),
            sync=Sync(data["sync"]),
            health=Health(data["health"]),
            summary=Summary(**data["summary"]),
            message=data["message"],
            failures=tuple(Failure(**failure) for failure in data["failures"]),
            workloads={
                name: WorkloadStatus(Sync(w["sync"]), Health(w["health"]), w["message"])
                for name, w in data["workloads"].items()
            },
            target_url=data["target_url"],
            scope=None if data.get("scope") is None else tuple(data["scope"]),
        )


def format_time(at: datetime) -> str:
    """ISO 8601 in UTC with a ``Z``, to the millisecond: fixed width, so text order is time
    order. To the second, a run's line, the verdict and the next ``Running`` line written in one
    second sorted by their other fields, and the last line was not the last status."""
    utc = at.astimezone(UTC)
    return f"{utc:%Y-%m-%dT%H:%M:%S}.{utc.microsecond // 1000:03d}Z"


def _failure_dict(failure: Failure) -> dict[str, Any]:
    return {
        "code": failure.code,
        "file": failure.file,
        "line": failure.line,
        "message": failure.message,
        "severity": failure.severity,
    }
