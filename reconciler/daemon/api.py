"""The daemon's read-only JSON API (``/api/v1``): what the store recorded, as plain data."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from reconciler.config.models import Environment
from reconciler.store.store import Store


def environments(store: Store, configured: Mapping[str, Environment]) -> Sequence[dict[str, Any]]:
    """``/api/v1/environments``: each configured environment with what the store recorded."""
    known = {e.name: e for e in store.environments()}
    out = []
    for name, env in configured.items():
        record = known.get(name)
        out.append(
            {
                "name": name,
                "follows": env.follows,
                "approval": env.approval,
                "last_commit": record.last_commit if record else None,
                "last_reconciled_at": _iso(record.last_reconciled_at) if record else None,
            }
        )
    return out


def workloads(store: Store, configured: Mapping[str, Environment]) -> Sequence[dict[str, Any]]:
    """``/api/v1/workloads``: every recorded workload of every configured environment."""
    out = []
    for name in configured:
        for workload in store.recorded(name).workloads.values():
            out.append(
                {
                    "environment": name,
                    "name": workload.name,
                    "commit": workload.commit,
                    "file": workload.file,
                    "status": workload.status,
                }
            )
    return out


def run(store: Store, run_id: str) -> dict[str, Any] | None:
    """``/api/v1/runs/{id}``: a run with its steps; None when there is no such run."""
    found = store.get_run(run_id)
    if found is None:
        return None
    steps = store.steps(found.id)
    return {
        "id": found.id,
        "environment": found.environment,
        "commit": found.commit,
        "status": found.status,
        "trigger": found.trigger,
        "started_at": _iso(found.started_at),
        "finished_at": _iso(found.finished_at),
        "error_code": found.error_code,
        "message": found.message,
        "steps": [
            {
                "id": s.step_id,
                "action": s.action,
                "status": s.status,
                "attempts": s.attempt,
                "error_code": s.error_code,
                "message": s.message,
            }
            for s in steps
        ],
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
