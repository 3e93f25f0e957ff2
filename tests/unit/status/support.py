"""Statuses to report, shared by the status tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from reconciler.gitops.status import (
    CommitStatus,
    Failure,
    Health,
    Phase,
    Summary,
    Sync,
    WorkloadStatus,
)

SHA = "0123456789abcdef0123456789abcdef01234567"
AT = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def status(
    *,
    environment: str = "prod",
    commit: str = SHA,
    run_id: str = "run-1",
    phase: Phase = Phase.SUCCEEDED,
    at: datetime = AT,
    **more: Any,
) -> CommitStatus:
    """A succeeded, synced, healthy status with two workloads unless told otherwise."""
    values: dict[str, Any] = {
        "sync": Sync.SYNCED,
        "health": Health.HEALTHY,
        "summary": Summary(add=1, change=2, destroy=0),
        "workloads": {
            "web": WorkloadStatus(Sync.SYNCED, Health.HEALTHY, ""),
            "api": WorkloadStatus(Sync.SYNCED, Health.HEALTHY, "rolled out"),
        },
        **more,
    }
    return CommitStatus(
        environment=environment, commit=commit, run_id=run_id, phase=phase, at=at, **values
    )


FAILURE = Failure(
    code="RCN-1202",
    message="containers.web.variables.DB: unknown resource 'db'",
    file="apps/web/score.yaml",
    line=12,
)
