"""Apply a commit to one environment: plan, gate, execute, record, as one run.

The composer of the execute half of the flow, as ``pipeline.py`` is of the plan half. A run goes:

1. plan against the recorded state (``pipeline.plan_environment``);
2. gate: an environment with ``approval: required`` stops in ``WaitingApproval`` until approved;
3. provision resources, wave by wave: each wave holds the resources whose params are fully known
   (their dependencies' outputs are recorded by the waves before), so ``${resources.dns.host}`` in a
   route's params is resolved with the real host before the route is provisioned;
4. re-plan, now with every output known, and put workloads in place: record each, stage it on the
   target, remove what left the commit, then publish (one deploy-branch commit);
5. record the commit as reconciled, or, on failure with ``on_failure: rollback``, undo what the run
   created, newest first.

A run may be scoped to some workloads (the daemon queues work per workload): it then carries out
only their part of the plan (``plan.scope``): their own actions, the resources they use and
the deletions of what they brought. The environment's commit is recorded as reconciled only by a
run of the whole environment; the daemon records it once no workload has changes left.

Every step is checkpointed by the engine, and its record of what it did is written in the
transaction of its Succeeded checkpoint (``StepContext.defer``), so a finished step is always
recorded; applying again resumes the unfinished run of the same commit: finished steps are not run
again, and re-planning against the recorded state turns what a killed process already did into
no-ops. Secrets go to the secret store; only references are recorded.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from opentelemetry import context as otel_context

from reconciler.catalogue import Code
from reconciler.config.models import Environment
from reconciler.desired.model import DesiredResource, DesiredState, DesiredWorkload
from reconciler.desired.provisioners import ProvisionerSet
from reconciler.desired.secrets import secret_ref
from reconciler.engine import (
    Checkpointer,
    Executor,
    RetryPolicy,
    RunResult,
    RunStatus,
    Step,
    StepContext,
    StoreCheckpointer,
)
from reconciler.gitops.repository import Repository
from reconciler.observability import logger, span
from reconciler.pipeline import (
    EnvironmentPlan,
    ParsedFiles,
    Source,
    known_outputs,
    plan_environment,
    resource_record,
    workload_record,
)
from reconciler.plan.diff import UNPUBLISHED, diff
from reconciler.plan.model import ActionKind, Plan, Subject
from reconciler.plan.scope import restrict, scoped_diagnostics
from reconciler.providers.base import (
    DriverError,
    ResourceDriver,
    ResourceRequest,
    SecretStore,
    WorkloadRequest,
    WorkloadTarget,
)
from reconciler.providers.registry import driver_for
from reconciler.score.loader import LoadedWorkload
from reconciler.store.records import OPEN_RUN_STATUSES, ResourceRecord, RunRecord
from reconciler.store.store import Store
from reconciler.workflows.loader import load_workflows
from reconciler.workflows.run import Runtime, Stage, run_hooks

_log = logger("reconciler.run")

MANIFESTS_STATE_KEY = "_manifests"
"""Where a resource's rendered Kubernetes objects are kept in its recorded state."""

MAX_WAVES = 64

DriverFactory = Callable[[str, ProvisionerSet], ResourceDriver]


@dataclass(frozen=True, slots=True)
class Services:
    """What a run talks to; built once per process and shared by runs."""

    store: Store
    secrets: SecretStore
    target: WorkloadTarget
    drivers: DriverFactory
    actor: str = "cli"


def default_drivers(postgres_url: str | None = None) -> DriverFactory:
    def make(uri: str, provisioners: ProvisionerSet) -> ResourceDriver:
        return driver_for(uri, provisioners=provisioners, postgres_url=postgres_url)

    return make


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """How an apply ended; ``exit_code`` is what ``reconciler apply`` exits with. ``run`` is
    the run's record without its plan (``plan`` is that plan, decoded already)."""

    environment: str
    run: RunRecord | None
    plan: Plan | None
    planned: EnvironmentPlan | None
    results: tuple[RunResult, ...] = ()
    message: str = ""
    error_code: Code | None = None

    @property
    def status(self) -> str:
        """The run's status; without a run, Succeeded when there was nothing to do."""
        if self.run is not None:
            return self.run.status
        failed = self.planned is not None and self.planned.failed
        return "Failed" if failed or self.plan is None else "Succeeded"

    @property
    def exit_code(self) -> int:
        return {"Succeeded": 0, "WaitingApproval": 3}.get(self.status, 1)


@dataclass
class _Run:
    """One run in progress: the values its steps share."""

    repo: Repository
    services: Services
    source: Source
    name: str
    env: Environment
    run_id: str
    executor: Executor
    checkpointer: Checkpointer
    results: list[RunResult] = field(default_factory=list)
    parsed: dict[str, LoadedWorkload] | ParsedFiles = field(default_factory=dict)
    scope: frozenset[str] | None = None
    staged: set[str] = field(default_factory=set)
    """Workloads this run's steps put on the target in this process (set.add is atomic)."""
    last_plan: tuple[tuple[object, ...], EnvironmentPlan] | None = None

    @property
    def store(self) -> Store:
        return self.services.store

    def plan(self) -> EnvironmentPlan:
        """Re-plan against what the run recorded so far; files are parsed once per run.

        The last plan is returned again while nothing it read from the store has changed
        (recorded state, last commit, pins): the first wave and the plan ``apply_environment``
        made before the run, or the wave that finds nothing left to provision and the plan for
        the workloads after it, are plans of the same state, and one full plan of a large
        environment costs as much as hundreds of steps. Another replica's writes to the
        environment change its revision token, so they are seen.
        """
        store = self.store
        key = store.plan_key(self.name)
        if self.last_plan is not None and self.last_plan[0] == key:
            return self.last_plan[1]
        planned = plan_environment(
            self.repo, store, self.source, self.name, self.env, parsed=self.parsed
        )
        planned = scoped(planned, store, self.scope)
        self.last_plan = (key, planned)
        return planned

    def execute(self, steps: Sequence[Step]) -> RunResult:
        known = {s.id for s in steps}
        steps = [
            replace(s, run=traced(s), depends_on=tuple(d for d in s.depends_on if d in known))
            for s in steps
        ]
        result = self.executor.run(self.run_id, steps)
        self.results.append(result)
        return result


def was_approved(store: Store, run: RunRecord) -> bool:
    """Approval is an audited event: ``reconciler approve`` records it, apply looks it up."""
    return any(
        entry.action == "run.approved" and entry.subject == run.id
        for entry in store.audit_log(run.environment, limit=200)
    )


def scoped(planned: EnvironmentPlan, store: Store, scope: frozenset[str] | None) -> EnvironmentPlan:
    """``planned`` cut down to what a run for the workloads in ``scope`` carries out (all of it
    for None): their actions, and the diagnostics of their files and of no file."""
    if scope is None or planned.plan is None:
        return planned
    owners = deletion_owners(store, planned.environment, planned.plan)
    files = set()
    for wl in planned.desired.workloads if planned.desired is not None else ():
        if wl.name in scope:
            files.add(wl.file)
            files.update(wl.sources)
    plan = restrict(planned.plan, planned.desired, scope, owners)
    return replace(
        planned,
        plan=replace(plan, diagnostics=scoped_diagnostics(plan.diagnostics, files)),
        diagnostics=scoped_diagnostics(planned.diagnostics, files),
        expired_pins=tuple(w for w in planned.expired_pins if w in scope),
    )


def deletion_owners(store: Store, environment: str, plan: Plan) -> dict[str, str]:
    """The workload that brought each resource ``plan`` deletes, as recorded ("" for none):
    a deletion belongs to that workload's part of the plan (``plan.scope``)."""
    deleting = [
        a.id for a in plan.changes() if a.kind is Subject.RESOURCE and a.action is ActionKind.DELETE
    ]
    return {
        uid: record.source_workload or ""
        for uid, record in store.resources_of(environment, deleting).items()
    }


def _overlaps(run: RunRecord, scope: frozenset[str] | None) -> bool:
    return run.scope is None or scope is None or not scope.isdisjoint(run.scope)


def _supersede(
    store: Store,
    environment: str,
    commit: str,
    scope: frozenset[str] | None = None,
    *,
    recent: Sequence[RunRecord] | None = None,
) -> None:
    """A newer commit replaces runs left on older ones: only the latest can apply.

    That includes a run still marked Running: the environment's lease (or, for a scoped run,
    the leases of its workloads) means no live process owns it, so its process died and it
    would otherwise stay Running for ever. Runs of other workloads are left alone.
    ``recent`` is the environment's last runs when the caller has read them already.
    """
    for run in store.list_runs(environment, limit=20) if recent is None else recent:
        if (
            run.commit != commit
            and run.status in (*OPEN_RUN_STATUSES, "WaitingApproval")
            and _overlaps(run, scope)
        ):
            store.update_run(
                run.id,
                status="Failed",
                message=f"superseded by {commit[:7]}",
                finished=True,
                with_plan=False,
            )


def traced(step: Step) -> Callable[[StepContext], Mapping[str, Any]]:
    """The step's callable inside an OpenTelemetry span that is a child of the reconcile's span.

    Steps run on the engine's worker threads, where the caller's context is not current; it is
    captured here and attached in the worker, so every step's logs carry the run's trace id.
    """
    parent = otel_context.get_current()
    run = step.run

    def run_in_span(ctx: StepContext) -> Mapping[str, Any]:
        token = otel_context.attach(parent)
        try:
            with span(f"step {step.action or 'run'}", step=step.id, run_id=ctx.run_id):
                _log.info("step started", attempt=ctx.attempt)
                outputs = run(ctx)
                _log.info("step succeeded", attempt=ctx.attempt)
                return outputs
        finally:
            otel_context.detach(token)

    return run_in_span


def find_open_run(
    store: Store,
    environment: str,
    commit: str,
    scope: frozenset[str] | None = None,
    *,
    recent: Sequence[RunRecord] | None = None,
) -> RunRecord | None:
    """The unfinished run of this commit, to resume rather than start afresh.

    A scoped run resumes an open run whose workloads it covers (a killed replica's): holding
    the leases of all of them, it owns that run's work now. ``recent`` is the environment's
    last runs when the caller has read them already.
    """
    for run in store.list_runs(environment, limit=20) if recent is None else recent:
        if run.commit != commit or run.status not in (*OPEN_RUN_STATUSES, "WaitingApproval"):
            continue
        if scope is None or (run.scope is not None and scope.issuperset(run.scope)):
            return run
    return None


def apply_environment(
    repo: Repository,
    services: Services,
    source: Source,
    name: str,
    env: Environment,
    *,
    approved: bool = False,
    executor: Executor | None = None,
    trigger: str = "cli",
    on_plan: Callable[[EnvironmentPlan], bool] | None = None,
    partial: bool = False,
    checkpointer: Checkpointer | None = None,
    scope: Collection[str] | None = None,
    parsed: dict[str, LoadedWorkload] | ParsedFiles | None = None,
) -> RunOutcome:
    """Plan and apply ``source``'s commit to environment ``name``; never raises for bad input.

    ``on_plan`` sees the plan before anything runs and may decline it (a TTY confirmation).
    With ``partial`` (the daemon), Score files with errors are reported and left alone while the
    rest of the commit is applied; the commit is then not recorded as reconciled, so the next
    plan reads the broken files again. With ``scope``, only those workloads' part of the plan
    is applied (see the module's docstring). ``parsed`` holds files already parsed at this
    commit (``plan_environment``): the daemon's plans and runs of one commit share them.
    """
    store = services.store
    parsed = {} if parsed is None else parsed
    key = store.plan_key(name)
    whole = plan_environment(repo, store, source, name, env, parsed=parsed)
    config_broken = any(d.file == "reconciler.yaml" for d in whole.diagnostics) or (
        whole.plan is None
    )
    workloads = None if scope is None else frozenset(scope)
    planned = scoped(whole, store, workloads)
    if planned.plan is None or (planned.failed and (not partial or config_broken)):
        return RunOutcome(name, None, planned.plan, planned, message="the commit has errors")
    recent = store.list_runs(name, limit=20)
    run = find_open_run(store, name, source.commit, workloads, recent=recent)
    if run is None and not planned.plan.summary.has_changes:
        if not planned.failed and workloads is None:
            store.set_last_commit(name, source.commit)
        return RunOutcome(name, None, planned.plan, planned, message="no changes")
    # A new run that nothing stands before (no approval to wait for, no one to confirm) is
    # created Running: the same record, one write fewer.
    starts = on_plan is None and (env.approval != "required" or approved)
    created_running = run is None and starts
    if run is None:
        with store.transaction():
            _supersede(store, name, source.commit, workloads, recent=recent)
            run = store.create_run(
                name,
                source.commit,
                trigger=trigger,
                plan=planned.plan.to_dict(),
                status="Running" if starts else "Pending",
                scope=workloads,
            )
            store.audit(
                actor=services.actor,
                action="run.created",
                environment=name,
                subject=run.id,
                detail={"commit": source.commit, "summary": planned.plan.summary.to_dict()},
            )
        run = replace(run, plan=None)  # as update_run returns it: the plan is held already
    if env.approval == "required" and not approved and not was_approved(store, run):
        if run.status != "WaitingApproval":
            run = store.update_run(run.id, status="WaitingApproval", with_plan=False)
        return RunOutcome(name, run, planned.plan, planned, message="waiting for approval")
    if on_plan is not None and not on_plan(planned):
        run = store.update_run(
            run.id, status="Failed", message="declined", finished=True, with_plan=False
        )
        return RunOutcome(name, run, planned.plan, planned, message="declined")
    if not created_running:
        run = store.update_run(run.id, status="Running", scope=workloads, with_plan=False)
    checkpointer = checkpointer or StoreCheckpointer(store)
    state = _Run(
        repo,
        services,
        source,
        name,
        env,
        run.id,
        executor or Executor(checkpointer),
        checkpointer,
        parsed=parsed,
        scope=workloads,
        last_plan=(key, planned),  # the first wave plans the same state again otherwise
    )
    failure = _hooks(state, "before_apply", env.hooks.before_apply)
    if failure is None:
        failure = _execute(state, partial=partial)
        if failure is None:
            failure = _hooks(state, "after_apply", env.hooks.after_apply)
    return _finish(state, planned, failure)


def _hooks(state: _Run, stage: Stage, names: Sequence[str]) -> tuple[Code, str] | None:
    """Run the environment's hook workflows for ``stage`` inside this run; the failure, if any."""
    if not names:
        return None
    loaded = load_workflows(state.source.tree, state.source.config.workflows)
    runtime = Runtime(
        executor=state.executor,
        checkpointer=state.checkpointer,
        run_id=state.run_id,
        environment=state.name,
        approved=True,
        retry=_retry(state),
    )
    result = run_hooks(stage, state.name, names=names, workflows=loaded.workflows, runtime=runtime)
    if result.ok:
        return None
    return result.error_code or Code.WORKFLOW_HOOK_FAILED, result.message


def _finish(state: _Run, planned: EnvironmentPlan, failure: tuple[Code, str] | None) -> RunOutcome:
    store = state.store
    interrupted = any(r.status is RunStatus.INTERRUPTED for r in state.results)
    if failure is not None and not interrupted:
        code, message = failure
        # Input errors stop nothing that ran: only a failed step calls for undoing the run.
        if state.env.on_failure == "rollback" and code.value.number >= 3000:
            failure = code, message + "; " + _rollback(state)
    with store.transaction():  # the run's end, its commit and its audit entry: one write
        run, action = _record_end(state, planned, failure, interrupted)
        store.audit(
            actor=state.services.actor,
            action=action,
            environment=state.name,
            subject=state.run_id,
            detail={"commit": state.source.commit, "message": run.message or ""},
        )
    return RunOutcome(
        state.name,
        run,
        planned.plan,
        planned,
        tuple(state.results),
        run.message or "",
        None if failure is None else failure[0],
    )


def _record_end(
    state: _Run, planned: EnvironmentPlan, failure: tuple[Code, str] | None, interrupted: bool
) -> tuple[RunRecord, str]:
    """Record how the run ended; the run as stored and the audit action that says so."""
    store = state.store
    if failure is None:
        if state.scope is None:
            store.set_last_commit(state.name, state.source.commit)
        for workload in planned.expired_pins:  # a newer commit changed it: the rollback ends
            store.delete_pin(state.name, workload)
        run = store.update_run(state.run_id, status="Succeeded", finished=True, with_plan=False)
        return run, "run.succeeded"
    if interrupted:
        code, message = Code.RUN_INTERRUPTED, "interrupted; apply again to resume"
        run = store.update_run(
            state.run_id, status="Pending", error_code=code.id, message=message, with_plan=False
        )
        return run, "run.interrupted"
    code, message = failure
    run = store.update_run(
        state.run_id,
        status="Failed",
        error_code=code.id,
        message=message,
        finished=True,
        with_plan=False,
    )
    return run, "run.failed"


def _execute(state: _Run, *, partial: bool = False) -> tuple[Code, str] | None:
    """Provision in waves, then put workloads in place; the first failure, or None."""
    for _ in range(MAX_WAVES):
        planned = state.plan()
        if (planned.failed and not partial) or planned.plan is None or planned.desired is None:
            return Code.STEP_FAILED, "the commit no longer plans cleanly"
        ready = _ready_resources(planned.plan, planned.desired)
        if not ready:
            break
        steps = [_provision_step(state, planned, resource) for resource in ready]
        result = state.execute(steps)
        if result.status is not RunStatus.SUCCEEDED:
            return _first_failure(result)
    planned = state.plan()
    if planned.plan is None or planned.desired is None:
        return Code.STEP_FAILED, "the commit no longer plans cleanly"
    waiting = [
        a.id
        for a in planned.plan.changes()
        if a.kind is Subject.RESOURCE and a.action is not ActionKind.DELETE
    ]
    if waiting:
        return Code.STEP_FAILED, "resources could not be resolved: " + ", ".join(waiting)
    result = state.execute(_workload_steps(state, planned))
    if result.status is not RunStatus.SUCCEEDED:
        return _first_failure(result)
    errors = [d for d in planned.diagnostics if str(d.severity) == "error"]
    if errors:
        first = errors[0]
        where = f"{first.file}:{first.line}" if first.file else "the commit"
        return first.code, f"{len(errors)} error(s), first at {where}: {first.message}"
    return None


def _first_failure(result: RunResult) -> tuple[Code, str]:
    for step_id, outcome in sorted(result.steps.items()):
        if outcome.error_code is not None and outcome.error_code is not Code.DEPENDENCY_FAILED:
            return outcome.error_code, f"{step_id}: {outcome.message}"
    return Code.STEP_FAILED, f"run ended {result.status}"


def _ready_resources(plan: Plan, desired: DesiredState) -> list[DesiredResource]:
    """Resources to create or change whose params are fully known now."""
    wanted = {
        a.id
        for a in plan.changes()
        if a.kind is Subject.RESOURCE and a.action is not ActionKind.DELETE
    }
    return [r for r in desired.resources if r.uid in wanted and not _unknown(r.params)]


def _unknown(value: Any) -> bool:
    if isinstance(value, str):
        return "(known after apply)" in value
    if isinstance(value, Mapping):
        return any(_unknown(v) for v in value.values())
    if isinstance(value, list):
        return any(_unknown(v) for v in value)
    return False


# -- resources ---------------------------------------------------------------------------------


def _request(
    state: _Run, desired: DesiredState, resource: DesiredResource | ResourceRecord
) -> ResourceRequest:
    recorded = state.store.resources_of(state.name, [resource.uid]).get(resource.uid)
    secrets = state.services.secrets
    previous = {
        k: secrets.get(ref) for k, ref in (recorded.secret_refs if recorded else {}).items()
    }
    if isinstance(resource, DesiredResource):
        params, metadata, source = resource.params, resource.metadata, resource.source_workload
        provisioner, class_, res_id = resource.provisioner, resource.class_, resource.id
    else:
        params, metadata = dict(resource.params), {}
        source = resource.source_workload or ""
        provisioner, class_, res_id = resource.provisioner, resource.class_, resource.res_id
    return ResourceRequest(
        environment=state.name,
        uid=resource.uid,
        type=resource.type,
        class_=class_,
        id=res_id,
        params=params,
        metadata=metadata,
        source_workload=source,
        provisioner_uri=provisioner,
        workload_services=desired.workload_services,
        variables=dict(state.env.variables),
        previous_state=dict(recorded.state) if recorded else {},
        previous_outputs=dict(recorded.outputs) if recorded else {},
        previous_secrets={k: v for k, v in previous.items() if v is not None},
    )


def _provision_step(state: _Run, planned: EnvironmentPlan, resource: DesiredResource) -> Step:
    assert planned.desired is not None
    assert planned.provisioners is not None
    desired, provisioners = planned.desired, planned.provisioners

    def run(ctx: StepContext) -> Mapping[str, Any]:
        request = _request(state, desired, resource)
        driver = state.services.drivers(resource.provisioner, provisioners)
        result = driver.apply(request)
        refs = {key: secret_ref(state.name, resource.uid, key) for key in sorted(result.secrets)}
        values = {refs[k]: v for k, v in result.secrets.items()}
        secrets = state.services.secrets
        if not secrets.in_state_store:  # Vault: before the record, outside any transaction
            secrets.put_many(values)
        recorded_state = dict(result.state)
        if result.manifests:
            recorded_state[MANIFESTS_STATE_KEY] = [dict(m) for m in result.manifests]
        outputs = {k: v for k, v in result.outputs.items() if k not in result.secrets}
        record = resource_record(resource, outputs=outputs, secret_refs=refs, state=recorded_state)
        ctx.defer(lambda: state.store.save_resource(state.name, record))
        if secrets.in_state_store:  # after the record: its write locks the environment first
            ctx.defer(lambda: secrets.put_many(values))
        ctx.log(f"provisioned {resource.uid} with {resource.provisioner}")
        return {"outputs": sorted(outputs)}

    return Step(
        id=f"resource:{resource.uid}",
        run=run,
        depends_on=tuple(f"resource:{uid}" for uid in resource.depends_on),
        kind="resource",
        target=resource.uid,
        action="apply",
        retry=_retry(state),
        inline=_provisions_locally(state, resource.provisioner, provisioners),
    )


def _provisions_locally(state: _Run, uri: str, provisioners: ProvisionerSet) -> bool:
    """Whether provisioning with ``uri`` only computes and writes the store (``Step.inline``):
    a template driver, and secrets kept in the store rather than in Vault. A driver that
    cannot be made fails in its step, which says why."""
    if not state.services.secrets.in_state_store:
        return False
    try:
        return state.services.drivers(uri, provisioners).local
    except DriverError:
        return False


def _delete_resource_step(
    state: _Run, desired: DesiredState, provisioners: ProvisionerSet, uid: str, after: Sequence[str]
) -> Step:
    def run(ctx: StepContext) -> Mapping[str, Any]:
        recorded = state.store.resources_of(state.name, [uid]).get(uid)
        if recorded is None:
            return {}
        driver = state.services.drivers(recorded.provisioner, provisioners)
        driver.delete(_request(state, desired, recorded))
        secrets = state.services.secrets
        refs = list(recorded.secret_refs.values())
        if not secrets.in_state_store:
            _forget(secrets, refs)
        ctx.defer(lambda: state.store.delete_resource(state.name, uid))
        if secrets.in_state_store:  # with the record's deletion, in its step's transaction
            ctx.defer(lambda: _forget(secrets, refs))
        ctx.log(f"deleted {uid}")
        return {}

    return Step(
        id=f"resource:{uid}",
        run=run,
        depends_on=tuple(after),
        kind="resource",
        target=uid,
        action="delete",
        retry=_retry(state),
    )


def _forget(secrets: SecretStore, refs: Sequence[str]) -> None:
    for ref in refs:
        secrets.delete(ref)


def _retry(state: _Run) -> RetryPolicy:
    retries = state.source.config.retries
    return RetryPolicy(
        max_attempts=retries.max_attempts,
        initial_backoff=retries.initial_backoff.seconds,
        max_backoff=retries.max_backoff.seconds,
    )


# -- workloads ---------------------------------------------------------------------------------


def workload_request(
    store: Store, environment: str, desired: DesiredState, workload: DesiredWorkload, commit: str
) -> WorkloadRequest:
    """A workload with its resources' outputs and the manifests of the resources it brought."""
    recorded = store.resources_of(environment, workload.resources.values())
    outputs: dict[str, Mapping[str, Any]] = {}
    manifests: list[Mapping[str, Any]] = []
    for name, uid in sorted(workload.resources.items()):
        record = recorded.get(uid)
        if record is None:
            continue
        outputs[name] = known_outputs(record)
        if record.source_workload == workload.name:  # a shared resource lands in one folder
            manifests.extend(record.state.get(MANIFESTS_STATE_KEY, []))
    return WorkloadRequest(
        environment=environment,
        name=workload.name,
        spec=workload.spec,
        resources=dict(workload.resources),
        resource_outputs=outputs,
        resource_manifests=manifests,
        file=workload.file,
        commit=commit,
    )


def _workload_steps(state: _Run, planned: EnvironmentPlan) -> list[Step]:
    assert planned.plan is not None
    assert planned.desired is not None
    desired, plan = planned.desired, planned.plan
    assert planned.provisioners is not None
    steps: list[Step] = []
    by_name = {w.name: w for w in desired.workloads}  # ``desired.workload`` scans them all
    for action in plan.changes():
        if action.kind is Subject.WORKLOAD and action.action is not ActionKind.DELETE:
            steps.append(_workload_step(state, planned, by_name[action.id]))
        elif action.kind is Subject.WORKLOAD:
            steps.append(_delete_workload_step(state, action.id))
    workload_ids = [s.id for s in steps]
    for action in plan.changes():
        if action.kind is Subject.RESOURCE and action.action is ActionKind.DELETE:
            steps.append(
                _delete_resource_step(state, desired, planned.provisioners, action.id, workload_ids)
            )
    applied = [s.target for s in steps if s.kind == "workload" and s.action == "apply"]
    removed = [s.target for s in steps if s.kind == "workload" and s.action == "delete"]
    after = [s.id for s in steps]
    steps.append(_publish_step(state, desired, after, changed=applied, removed=removed))
    return steps


def _workload_step(state: _Run, planned: EnvironmentPlan, wl: DesiredWorkload) -> Step:
    assert planned.desired is not None
    desired = planned.desired
    source = planned.sources.get(wl.name, {})

    def run(ctx: StepContext) -> Mapping[str, Any]:
        request = workload_request(state.store, state.name, desired, wl, state.source.commit)
        state.services.target.apply(request)
        state.staged.add(wl.name)
        record = workload_record(wl, state.source.commit, source, UNPUBLISHED, spec=request.spec)
        ctx.defer(lambda: state.store.save_workload(state.name, record))
        ctx.log(f"recorded {wl.name}")
        return {}

    return Step(
        id=f"workload:{wl.name}",
        run=run,
        depends_on=tuple(f"resource:{uid}" for uid in wl.depends_on),
        kind="workload",
        target=wl.name,
        action="apply",
        retry=_retry(state),
        inline=state.services.target.local,
    )


def _delete_workload_step(state: _Run, name: str) -> Step:
    def run(ctx: StepContext) -> Mapping[str, Any]:
        state.services.target.delete(state.name, name)
        state.staged.discard(name)
        # Kept until the publish removes it from the target too: a process killed before
        # then leaves the record, and the next plan removes the workload again.
        ctx.defer(lambda: state.store.set_workload_status(state.name, [name], UNPUBLISHED))
        ctx.log(f"removed {name}")
        return {}

    return Step(
        id=f"workload:{name}",
        run=run,
        kind="workload",
        target=name,
        action="delete",
        retry=_retry(state),
        inline=state.services.target.local,
    )


def _publish_step(
    state: _Run,
    desired: DesiredState,
    after: Sequence[str],
    *,
    changed: Sequence[str] | None = None,
    removed: Sequence[str] = (),
) -> Step:
    """Stage the workloads this run changed again, then publish once (one deploy commit).

    Staging is in memory, so it is redone here from the recorded state: after a crash between a
    workload's step and this one nothing is lost, and an unchanged tree makes no commit. Only
    ``changed`` and ``removed`` workloads are staged, so publishing costs what the run changed;
    ``changed=None`` stages every recorded workload (self-healing after drift). A workload this
    run's own step staged in this process is staged already, from the same recorded state, and
    is not rendered again, except on a retry (a failed flush may have dropped what it held).
    The workloads published are marked ``Synced`` and the records of those removed are
    forgotten with the step's checkpoint; until then both stay ``UNPUBLISHED``.
    """

    def run(ctx: StepContext) -> Mapping[str, Any]:
        recorded = state.store.recorded(state.name).workloads
        # Everything recorded but not yet published, whichever run (or killed process) recorded
        # it, and what this run changed.
        wanted = {n for n, r in recorded.items() if r.status == UNPUBLISHED}
        wanted |= set(recorded) if changed is None else set(changed) & set(recorded)
        gone = set(removed) | _removed_earlier(state)
        staged = set(state.staged) if ctx.attempt == 1 else set()
        published: list[str] = []
        for wl in desired.workloads:
            if wl.name in wanted:
                published.append(wl.name)
                if wl.name not in staged:
                    request = workload_request(
                        state.store, state.name, desired, wl, state.source.commit
                    )
                    state.services.target.apply(request)
        gone.difference_update(published)
        for name in sorted(gone):
            state.services.target.delete(state.name, name)
        message = f"reconciler: {state.name} at {state.source.commit[:7]} (run {state.run_id[:8]})"
        commit = state.services.target.flush(state.name, message)
        synced = sorted(n for n in published if recorded[n].status != "Synced")
        ctx.defer(lambda: state.store.set_workload_status(state.name, synced, "Synced"))
        ctx.defer(lambda: state.store.delete_workloads(state.name, gone))
        ctx.log(f"published {commit}" if commit else "deploy branch already up to date")
        return {"deploy_commit": commit}

    return Step(
        id="publish",
        run=run,
        depends_on=tuple(after),
        kind="target",
        target=state.name,
        action="publish",
        retry=_retry(state),
        inline=state.services.target.local,
    )


def _removed_earlier(state: _Run) -> set[str]:
    """Workloads this run removed before a crash: their removal must still be published.

    The plan names them again anyway (a removal's record stays until its publish); this also
    covers a run killed under an earlier version, whose removals deleted their records at once."""
    removed = state.store.step_targets(
        state.run_id, kind="workload", action="delete", status="Succeeded"
    )
    return set(removed)


# -- rollback ----------------------------------------------------------------------------------


def _rollback(state: _Run) -> str:
    """Undo what this run created, newest first; say what happened."""
    created = [
        s
        for s in state.store.steps(state.run_id)
        if s.status == "Succeeded" and s.action == "apply" and s.kind in ("resource", "workload")
    ]
    created.sort(key=lambda s: str(s.finished_at or s.started_at or ""), reverse=True)
    planned = state.plan()
    desired = planned.desired or DesiredState(state.name, (), ())
    provisioners = planned.provisioners or ProvisionerSet(())
    steps: list[Step] = []
    previous: list[str] = []
    for record in created:
        if record.kind == "workload":
            undo = _delete_workload_step(state, record.target)
        else:
            undo = _delete_resource_step(state, desired, provisioners, record.target, ())
        undo = Step(
            id=f"rollback:{record.step_id}",
            run=undo.run,
            depends_on=tuple(previous[-1:]),
            kind=undo.kind,
            target=undo.target,
            action="rollback",
            retry=undo.retry,
        )
        steps.append(undo)
        previous.append(undo.id)
    steps.append(
        Step(
            id="rollback:publish",
            run=_publish_step(
                state,
                DesiredState(state.name, (), ()),
                (),
                changed=(),
                removed=[r.target for r in created if r.kind == "workload"],
            ).run,
            depends_on=tuple(previous[-1:]),
            kind="target",
            target=state.name,
            action="rollback",
        )
    )
    result = state.execute(steps)
    if result.status is RunStatus.SUCCEEDED:
        return f"rolled back {len(created)} created step(s)"
    return "rollback incomplete (" + Code.ROLLBACK_FAILED.id + ")"


def new_run_id() -> str:
    return str(uuid.uuid4())


def destroy_environment(
    repo: Repository,
    services: Services,
    source: Source,
    name: str,
    env: Environment,
    *,
    executor: Executor | None = None,
) -> RunOutcome:
    """Remove everything recorded for an environment: workloads first, then their resources."""
    store = services.store
    planned = plan_environment(repo, store, source, name, env)
    recorded = store.recorded(name)
    nothing = DesiredState(name, (), ())
    plan = diff(
        nothing,
        recorded.resources,
        recorded.workloads,
        commit=source.commit,
        base_commit=store.last_commit(name),
    )
    if not plan.summary.has_changes:
        return RunOutcome(name, None, plan, None, message="nothing recorded")
    run = store.create_run(name, source.commit, trigger="destroy", plan=plan.to_dict())
    store.audit(
        actor=services.actor,
        action="run.created",
        environment=name,
        subject=run.id,
        detail={"destroy": True},
    )
    store.update_run(run.id, status="Running", with_plan=False)
    checkpointer = StoreCheckpointer(store)
    teardown = EnvironmentPlan(
        name, plan, nothing, (), provisioners=planned.provisioners or ProvisionerSet(())
    )
    state = _Run(
        repo, services, source, name, env, run.id, executor or Executor(checkpointer), checkpointer
    )
    result = state.execute(_workload_steps(state, teardown))
    failure = None if result.status is RunStatus.SUCCEEDED else _first_failure(result)
    if failure is None:
        store.set_last_commit(name, None)
        run = store.update_run(run.id, status="Succeeded", finished=True, with_plan=False)
    else:
        run = store.update_run(
            run.id,
            status="Failed",
            error_code=failure[0].id,
            message=failure[1],
            finished=True,
            with_plan=False,
        )
    store.audit(
        actor=services.actor,
        action=f"destroy.{run.status.lower()}",
        environment=name,
        subject=run.id,
    )
    return RunOutcome(name, run, plan, teardown, (result,), run.message or "")


def republish_environment(
    repo: Repository,
    services: Services,
    source: Source,
    name: str,
    env: Environment,
    *,
    executor: Executor | None = None,
) -> RunOutcome:
    """Put every recorded workload back on the target: self-healing after drift.

    Nothing is provisioned or recorded anew; the publish step re-stages the recorded workloads
    and publishes them, so a deploy branch edited by hand (or a folder deleted) is restored.
    """
    store = services.store
    planned = plan_environment(repo, store, source, name, env)
    if planned.desired is None or planned.plan is None:
        return RunOutcome(name, None, planned.plan, planned, message="the commit has errors")
    run = store.create_run(name, source.commit, trigger="self-heal", plan=planned.plan.to_dict())
    store.update_run(run.id, status="Running", with_plan=False)
    checkpointer = StoreCheckpointer(store)
    state = _Run(
        repo, services, source, name, env, run.id, executor or Executor(checkpointer), checkpointer
    )
    result = state.execute([_publish_step(state, planned.desired, ())])
    ok = result.status is RunStatus.SUCCEEDED
    failure = None if ok else _first_failure(result)
    run = store.update_run(
        run.id,
        status="Succeeded" if ok else "Failed",
        error_code=None if failure is None else failure[0].id,
        message="healed drift" if ok else (failure[1] if failure else ""),
        finished=True,
        with_plan=False,
    )
    store.audit(actor=services.actor, action="run.self-heal", environment=name, subject=run.id)
    return RunOutcome(name, run, planned.plan, planned, (result,), run.message or "")
