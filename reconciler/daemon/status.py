"""What the daemon says about a commit: a ``CommitStatus`` built from a run's outcome.

One function maps the outcome of ``runner.apply_environment`` to the Argo CD / Flux vocabulary
(sync, health, phase), with each failure's code, file and line, so that notes, the status branch
and the forge all say the same thing.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import replace
from datetime import UTC, datetime

from reconciler.config.models import Config
from reconciler.diagnostics import Severity
from reconciler.gitops.repository import Repository
from reconciler.gitops.status import (
    CommitStatus,
    Failure,
    ForgeStatuses,
    GitNotes,
    Health,
    Phase,
    Reporter,
    StatusBranch,
    Summary,
    Sync,
    WorkloadStatus,
)
from reconciler.pipeline import EnvironmentPlan
from reconciler.runner import RunOutcome
from reconciler.store.records import RunRecord

_PHASES = {
    "Succeeded": Phase.SUCCEEDED,
    "Failed": Phase.FAILED,
    "WaitingApproval": Phase.WAITING_APPROVAL,
    "Pending": Phase.PENDING,
    "Running": Phase.RUNNING,
}


def reporters_for(
    repo: Repository, config: Config, target_url: str | None, *, remote: str | None = None
) -> list[Reporter]:
    """The reporters reconciler.yaml asks for; each can fail without failing a reconcile.

    With a ``remote``, notes and the status branch are pushed there too, so that ``git fetch``
    brings them to users.
    """
    chosen: list[Reporter] = []
    settings = config.reporters
    if settings.notes.enabled:
        chosen.append(GitNotes(repo.path, ref=settings.notes.ref, remote=remote))
    if settings.status_branch.enabled:
        chosen.append(StatusBranch(repo.path, branch=settings.status_branch.branch, remote=remote))
    if settings.forge is not None:
        chosen.append(ForgeStatuses.from_settings(settings.forge))
    return chosen


def commit_status(
    environment: str,
    commit: str,
    phase: Phase | None,
    *,
    run_id: str,
    outcome: RunOutcome | None = None,
    target_url: str | None = None,
    scope: Collection[str] | None = None,
) -> CommitStatus:
    """The status of ``commit`` in ``environment``: ``phase`` alone while work is under way, or
    everything the finished ``outcome`` tells. With ``scope`` it speaks for those workloads
    only (a run of some workloads; see ``CommitStatus.scope``)."""
    now = datetime.now(UTC)
    if outcome is None:
        return CommitStatus(
            environment=environment,
            commit=commit,
            run_id=run_id,
            phase=phase or Phase.RUNNING,
            at=now,
            sync=Sync.OUT_OF_SYNC,
            health=Health.PROGRESSING,
            message="reconciling",
            target_url=target_url,
            scope=None if scope is None else tuple(scope),
        )
    diagnostics = outcome.planned.diagnostics if outcome.planned is not None else ()
    failures = [
        Failure(code=d.code.id, message=d.message, file=d.file, line=d.line)
        for d in diagnostics
        if d.severity is Severity.ERROR
    ]
    if outcome.run is not None and outcome.run.error_code and not failures:
        failures.append(Failure(code=outcome.run.error_code, message=outcome.run.message or ""))
    status = outcome.status
    final = _PHASES.get(status, Phase.FAILED)
    if failures and final is Phase.SUCCEEDED:
        final = Phase.FAILED
    broken_files = {f.file for f in failures if f.file}
    workloads = {}
    desired = outcome.planned.desired if outcome.planned is not None else None
    for wl in desired.workloads if desired is not None else ():
        if scope is None or wl.name in scope:
            workloads[wl.name] = _workload_status(
                final, wl.file in broken_files, bool(broken_files)
            )
    summary = outcome.plan.summary if outcome.plan is not None else None
    return CommitStatus(
        environment=environment,
        commit=commit,
        run_id=run_id,
        phase=final,
        at=now,
        sync=Sync.SYNCED if final is Phase.SUCCEEDED else Sync.OUT_OF_SYNC,
        health=_health(final),
        summary=Summary(summary.add, summary.change, summary.destroy) if summary else Summary(),
        message=outcome.message or status,
        failures=tuple(failures),
        workloads=workloads,
        target_url=target_url,
        scope=None if scope is None else tuple(scope),
    )


def environment_verdict(
    planned: EnvironmentPlan,
    commit: str,
    *,
    run_id: str,
    failed: Sequence[RunRecord] = (),
    target_url: str | None = None,
) -> CommitStatus:
    """The environment's verdict on ``commit`` once its workloads' runs are over: what the
    forge shows (one status per environment) and the last line of the commit's note.

    ``planned`` is the whole environment's plan of the commit now: its error diagnostics are
    the commit's failures (a broken Score file, with its file and line); ``failed`` are runs of
    the commit that failed and whose workloads still have changes left.
    """
    failures = [
        Failure(code=d.code.id, message=d.message, file=d.file, line=d.line)
        for d in planned.diagnostics
        if d.severity is Severity.ERROR
    ]
    failures += [
        Failure(code=run.error_code or "", message=run.message or "")
        for run in failed
        if run.error_code
    ]
    waiting = not failures and any(run.status == "WaitingApproval" for run in failed)
    if waiting:
        phase = Phase.WAITING_APPROVAL
    else:
        phase = Phase.FAILED if failures or failed else Phase.SUCCEEDED
    count = len(planned.desired.workloads) if planned.desired is not None else 0
    if phase is Phase.SUCCEEDED:
        message = f"{count} workload(s) in sync"
    elif phase is Phase.WAITING_APPROVAL:
        message = "waiting for approval"
    else:
        message = f"{len(failures) or len(failed)} failure(s)"
    return CommitStatus(
        environment=planned.environment,
        commit=commit,
        run_id=run_id,
        phase=phase,
        at=datetime.now(UTC),
        sync=Sync.SYNCED if phase is Phase.SUCCEEDED else Sync.OUT_OF_SYNC,
        health=_health(phase),
        message=message,
        failures=tuple(failures),
        target_url=target_url,
        scope=(),
    )


def stopped_status(
    environment: str,
    commit: str,
    failure: Failure,
    *,
    run_id: str,
    target_url: str | None = None,
) -> CommitStatus:
    """The environment's verdict on ``commit`` when its reconcile stopped on an error before
    any run could say how it went (the store or Git gone, a bug): Failed with that error, so
    the commit's note does not say Running until the next commit. The retry's verdict
    replaces it."""
    under_way = commit_status(
        environment, commit, Phase.FAILED, run_id=run_id, target_url=target_url, scope=()
    )
    message = "reconcile stopped; retrying"
    return replace(under_way, health=Health.DEGRADED, message=message, failures=(failure,))


def _health(phase: Phase) -> Health:
    return {
        Phase.SUCCEEDED: Health.HEALTHY,
        Phase.FAILED: Health.DEGRADED,
        Phase.WAITING_APPROVAL: Health.SUSPENDED,
    }.get(phase, Health.PROGRESSING)


def _workload_status(phase: Phase, broken: bool, only_files_broke: bool) -> WorkloadStatus:
    """A workload's own state: with broken files, the others were applied all the same."""
    if broken:
        return WorkloadStatus(Sync.OUT_OF_SYNC, Health.DEGRADED, "its Score file has errors")
    if phase is Phase.WAITING_APPROVAL:
        return WorkloadStatus(Sync.OUT_OF_SYNC, Health.SUSPENDED, "waiting for approval")
    if phase is Phase.FAILED and not only_files_broke:
        return WorkloadStatus(Sync.OUT_OF_SYNC, Health.DEGRADED, "the run failed")
    return WorkloadStatus(Sync.SYNCED, Health.HEALTHY, "")


def drift_status(
    environment: str,
    commit: str,
    missing: list[str],
    run_id: str,
    target_url: str | None = None,
    *,
    scope: Collection[str] | None = None,
) -> CommitStatus:
    """What a resync that found drift says: applied, but the target no longer holds it. With
    ``scope=()``, the environment's verdict; else the missing workloads' own statuses."""
    return CommitStatus(
        environment=environment,
        commit=commit,
        run_id=run_id,
        phase=Phase.SUCCEEDED,
        at=datetime.now(UTC),
        sync=Sync.OUT_OF_SYNC,
        health=Health.MISSING,
        message="drift: missing from the target: " + ", ".join(missing),
        workloads={}
        if scope is not None and not scope
        else {w: WorkloadStatus(Sync.OUT_OF_SYNC, Health.MISSING, "missing") for w in missing},
        target_url=target_url,
        scope=tuple(missing) if scope is None else tuple(scope),
    )
