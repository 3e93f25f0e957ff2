"""Run a workflow: turn its steps into engine steps, wave by wave, and say how it ended.

``workflow run`` calls ``run_workflow``; the apply runner calls ``run_hooks`` before and after an
environment is applied. The engine skips every dependent of a failed step, which is right for a
plan but not for ``when: on_failure`` or ``always``; so a workflow runs as a sequence of engine
waves over the same run id. Each wave holds the steps whose ``needs`` have all finished:

1. ``when`` decides from the needs' statuses whether the step runs (else it is ``Skipped``);
2. ``for_each`` is evaluated (it may read the needs' outputs) and expands the step into
   ``id[0]``, ``id[1]``... (an empty list runs nothing and succeeds);
3. ``if`` is evaluated per expansion (with ``item``); false skips it, not fails it;
4. an ``approval`` step that was not approved is recorded ``Pending`` and holds its dependents
   back: the run ends ``WaitingApproval`` once nothing else can run;
5. the rest goes to ``Executor.run`` together (retries, timeouts, checkpoints are the engine's).

Skipped and waiting steps are written through the checkpointer directly, so a run's record
shows every step. Running again with the same run id resumes: steps that succeeded are restored
by the engine with their outputs, and the same decisions follow from them.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

from reconciler.catalogue import Code
from reconciler.diagnostics import Diagnostic
from reconciler.engine import (
    Checkpointer,
    Executor,
    RetryPolicy,
    RunResult,
    RunStatus,
    Step,
    StepContext,
    StepStatus,
)
from reconciler.engine.steps import Outputs
from reconciler.providers.base import DriverError
from reconciler.schemacheck import did_you_mean
from reconciler.store import StepRecord
from reconciler.workflows import expressions
from reconciler.workflows.model import (
    HOOK_FAILED,
    TEMPLATE_FAILED,
    WORKFLOW_NOT_FOUND,
    ApplyStep,
    ApprovalStep,
    ProvisionStep,
    StepSpec,
    Workflow,
)
from reconciler.workflows.params import ParamValue, resolve
from reconciler.workflows.steps import Actions, step_call

Stage = Literal["before_apply", "after_apply"]


class Status(enum.StrEnum):
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SKIPPED = "Skipped"
    WAITING = "WaitingApproval"
    INTERRUPTED = "Interrupted"


EXIT_CODES: Mapping[Status, int] = {Status.SUCCEEDED: 0, Status.WAITING: 3}
"""As ``reconciler apply``: 0 success, 3 waiting for approval, 1 anything else."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Runtime:
    """Where and how a workflow runs. ``retry`` shapes the backoff between attempts (a step's
    ``retries`` sets the attempts); ``prefix`` keeps the engine ids of hook workflows apart
    inside an apply run; ``approved`` lets approval steps pass."""

    executor: Executor
    checkpointer: Checkpointer
    run_id: str
    environment: str | None = None
    actions: Actions = field(default_factory=Actions)
    approved: bool = False
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    prefix: str = ""
    now: Callable[[], datetime] = _utc_now


@dataclass(frozen=True, slots=True)
class StepResult:
    """How one workflow step ended; ``outputs`` is a list (one entry per item) for ``for_each``."""

    id: str
    status: Status
    outputs: Any = field(default_factory=dict)
    error_code: Code | None = None
    message: str = ""
    failed_upstream: bool = False
    """Skipped because a step it needs did not succeed: its ``on_success`` dependents skip too."""


@dataclass(frozen=True, slots=True)
class WorkflowResult:
    workflow: str
    status: Status
    steps: Mapping[str, StepResult]
    error_code: Code | None = None
    message: str = ""

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.status, 1)


@dataclass(slots=True)
class _Unit:
    """One engine-level piece of a wave: a step, or one item of a ``for_each`` step."""

    engine_id: str
    step: Step | None = None
    result: StepResult | None = None


def run_workflow(
    workflow: Workflow, params: Mapping[str, ParamValue], runtime: Runtime
) -> WorkflowResult:
    """Run (or resume) ``workflow`` with resolved ``params``; never raises for a failing step."""
    done: dict[str, StepResult] = {}
    waiting: set[str] = set()
    interrupted = False
    while not interrupted:
        ready = [
            s
            for s in workflow.steps
            if s.id not in done and s.id not in waiting and all(n in done for n in s.needs)
        ]
        if not ready:
            break
        units = {s.id: _units(s, workflow, params, done, runtime) for s in ready}
        engine_steps = [u.step for us in units.values() for u in us if u.step is not None]
        if engine_steps:
            result = runtime.executor.run(runtime.run_id, engine_steps)
            interrupted = result.status is RunStatus.INTERRUPTED
            _fold(units, result, runtime.prefix)
        for step in ready:
            outcome = _aggregate(step, units[step.id])
            if outcome.status is Status.WAITING:
                waiting.add(step.id)
            else:
                done[step.id] = outcome
    return _summary(workflow, done, waiting, interrupted)


def _units(
    step: StepSpec,
    workflow: Workflow,
    params: Mapping[str, ParamValue],
    done: Mapping[str, StepResult],
    runtime: Runtime,
) -> list[_Unit]:
    blocked = _blocked(step, done)
    if blocked is not None:
        reason, upstream = blocked
        code = Code.DEPENDENCY_FAILED if upstream else None
        skipped = StepResult(step.id, Status.SKIPPED, {}, code, reason, upstream)
        return [_recorded(_Unit(step.id, result=skipped), step, workflow, runtime)]
    names = expressions.context(params, _visible(done), runtime.environment)
    if step.for_each is None:
        return [_unit(step.id, step, workflow, names, runtime)]
    try:
        items = expressions.evaluate(step.for_each, names)
        if not isinstance(items, list | tuple):
            raise expressions.TemplateError(f"for_each gave {type(items).__name__}, not a list")
    except expressions.TemplateError as exc:
        return [_failing(step.id, step, workflow, str(exc), runtime)]
    return [
        _unit(
            f"{step.id}[{i}]",
            step,
            workflow,
            expressions.context(params, _visible(done), runtime.environment, item, has_item=True),
            runtime,
        )
        for i, item in enumerate(items)
    ]


def _blocked(step: StepSpec, done: Mapping[str, StepResult]) -> tuple[str, bool] | None:
    """Why ``when`` holds the step back, and whether that is a failure upstream; None: it runs."""
    failed = [n for n in step.needs if done[n].status is Status.FAILED]
    if step.when == "always":
        return None
    if step.when == "on_failure":
        return None if failed else ("when: on_failure, and no step it needs failed", False)
    bad = failed + [n for n in step.needs if done[n].failed_upstream]
    if bad:
        return f"skipped: {', '.join(sorted(set(bad)))} did not succeed", True
    return None


def _visible(done: Mapping[str, StepResult]) -> dict[str, dict[str, Any]]:
    return {sid: {"outputs": r.outputs, "status": str(r.status)} for sid, r in done.items()}


def _unit(
    engine_id: str,
    step: StepSpec,
    workflow: Workflow,
    names: Mapping[str, Any],
    runtime: Runtime,
) -> _Unit:
    if step.if_ is not None:
        try:
            runs = expressions.truthy(expressions.evaluate(step.if_, names))
        except expressions.TemplateError as exc:
            return _failing(engine_id, step, workflow, str(exc), runtime)
        if not runs:
            skipped = StepResult(engine_id, Status.SKIPPED, {}, None, "if: false")
            return _recorded(_Unit(engine_id, result=skipped), step, workflow, runtime)
    if isinstance(step, ApprovalStep) and not runtime.approved:
        message = _approval_message(step, names)
        waiting = StepResult(engine_id, Status.WAITING, {}, None, message)
        return _recorded(_Unit(engine_id, result=waiting), step, workflow, runtime)
    seconds = step.timeout.seconds if step.timeout is not None else None
    call = step_call(step, names, runtime.actions, seconds)
    return _Unit(engine_id, _engine_step(engine_id, step, workflow, call, runtime))


def _approval_message(step: ApprovalStep, names: Mapping[str, Any]) -> str:
    try:
        text = expressions.render(step.message, names) if step.message else ""
    except expressions.TemplateError:
        text = step.message
    return f"waiting for approval: {text}" if text else "waiting for approval"


def _engine_step(
    engine_id: str,
    step: StepSpec,
    workflow: Workflow,
    call: Callable[[StepContext], Outputs],
    runtime: Runtime,
) -> Step:
    # Shell and http steps bound their own attempts (a killed process group, an httpx timeout);
    # injected actions cannot, so the engine bounds them.
    bounded = isinstance(step, ProvisionStep | ApplyStep) and step.timeout is not None
    return Step(
        id=runtime.prefix + engine_id,
        run=call,
        kind=step.type,
        target=workflow.name,
        action="run",
        timeout=step.timeout.seconds if bounded and step.timeout is not None else None,
        retry=replace(runtime.retry, max_attempts=step.retries + 1),
    )


def _failing(
    engine_id: str, step: StepSpec, workflow: Workflow, message: str, runtime: Runtime
) -> _Unit:
    """A step whose ``if`` or ``for_each`` cannot be evaluated fails through the engine, so that
    it is recorded like any other failure."""

    def fail(ctx: StepContext) -> Outputs:
        raise DriverError(TEMPLATE_FAILED, message)

    return _Unit(engine_id, _engine_step(engine_id, step, workflow, fail, runtime))


def _recorded(unit: _Unit, step: StepSpec, workflow: Workflow, runtime: Runtime) -> _Unit:
    assert unit.result is not None
    result = unit.result
    now = runtime.now()
    runtime.checkpointer.save(
        runtime.run_id,
        StepRecord(
            step_id=runtime.prefix + unit.engine_id,
            kind=step.type,
            target=workflow.name,
            action="skip" if result.status is Status.SKIPPED else "wait",
            status="Skipped" if result.status is Status.SKIPPED else "Pending",
            started_at=now,
            finished_at=now if result.status is Status.SKIPPED else None,
            error_code=result.error_code.id if result.error_code else None,
            message=result.message,
        ),
    )
    return unit


def _fold(units: Mapping[str, list[_Unit]], result: RunResult, prefix: str) -> None:
    for unit in (u for us in units.values() for u in us if u.step is not None):
        outcome = result.steps[prefix + unit.engine_id]
        status = {
            StepStatus.SUCCEEDED: Status.SUCCEEDED,
            StepStatus.SKIPPED: Status.SKIPPED,
        }.get(outcome.status, Status.FAILED)
        unit.result = StepResult(
            unit.engine_id,
            status,
            dict(outcome.outputs) if status is Status.SUCCEEDED else {},
            outcome.error_code,
            outcome.message,
        )


def _aggregate(step: StepSpec, units: Sequence[_Unit]) -> StepResult:
    """One result per workflow step; a ``for_each`` step sums up its items."""
    results = [u.result for u in units if u.result is not None]
    if len(units) == 1 and units[0].engine_id == step.id and results:
        return replace(results[0], id=step.id)  # not expanded: skipped, failed or no for_each
    outputs = [r.outputs if r.status is Status.SUCCEEDED else None for r in results]
    for status in (Status.FAILED, Status.WAITING):
        first = next((r for r in results if r.status is status), None)
        if first is not None:
            message = f"{first.id}: {first.message}"
            return StepResult(step.id, status, outputs, first.error_code, message)
    if results and all(r.status is Status.SKIPPED for r in results):
        upstream = any(r.failed_upstream for r in results)
        first_skip = results[0]
        return StepResult(
            step.id, Status.SKIPPED, outputs, first_skip.error_code, first_skip.message, upstream
        )
    return StepResult(step.id, Status.SUCCEEDED, outputs)


def _summary(
    workflow: Workflow, done: Mapping[str, StepResult], waiting: set[str], interrupted: bool
) -> WorkflowResult:
    order = [s.id for s in workflow.steps]
    steps = {sid: done[sid] for sid in order if sid in done}
    for sid in order:
        if sid in waiting:
            steps[sid] = StepResult(sid, Status.WAITING, message="waiting for approval")
    failed = [r for r in steps.values() if r.status is Status.FAILED]
    if interrupted:
        status = Status.INTERRUPTED
    elif failed:
        status = Status.FAILED
    elif waiting:
        status = Status.WAITING
    else:
        status = Status.SUCCEEDED
    code = failed[0].error_code if failed else (Code.RUN_INTERRUPTED if interrupted else None)
    message = f"{failed[0].id}: {failed[0].message}" if failed else ""
    if interrupted and not failed:
        message = "interrupted; run again with the same run id to resume"
    if status is Status.WAITING:
        message = "waiting for approval: " + ", ".join(sorted(waiting))
    return WorkflowResult(workflow.name, status, steps, code, message)


# -- hooks -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HookResult:
    """What the hooks of one stage did; ``status`` is what the runner turns into its own."""

    stage: Stage
    environment: str
    results: tuple[WorkflowResult, ...] = ()
    diagnostics: tuple[Diagnostic, ...] = ()

    @property
    def status(self) -> Status:
        if self.diagnostics:
            return Status.FAILED
        for result in self.results:
            if result.status is not Status.SUCCEEDED:
                return result.status
        return Status.SUCCEEDED

    @property
    def ok(self) -> bool:
        return self.status is Status.SUCCEEDED

    @property
    def error_code(self) -> Code | None:
        if self.diagnostics:
            return self.diagnostics[0].code
        return None if self.ok else HOOK_FAILED

    @property
    def message(self) -> str:
        if self.diagnostics:
            return f"{self.stage} hooks: {self.diagnostics[0].message}"
        for result in self.results:
            if result.status is not Status.SUCCEEDED:
                detail = f": {result.message}" if result.message else ""
                return f"{self.stage} hook '{result.workflow}' {result.status}{detail}"
        return ""


def run_hooks(
    stage: Stage,
    environment: str,
    *,
    names: Sequence[str],
    workflows: Mapping[str, Workflow],
    runtime: Runtime,
) -> HookResult:
    """Run the workflows named for ``stage`` of ``environment``, in order, with their params'
    defaults; stop at the first that does not succeed. Their steps go into ``runtime``'s run
    (the apply run) as ``hook:<stage>:<workflow>:<step>``."""
    problems = [_unknown_workflow(n, workflows) for n in names if n not in workflows]
    for name in names:
        if name in workflows:
            _, missing = resolve(workflows[name], {})
            problems.extend(replace(d, message=f"hook '{name}': {d.message}") for d in missing)
    if problems:
        return HookResult(stage, environment, (), tuple(problems))
    results = []
    for name in names:
        workflow = workflows[name]
        params, _ = resolve(workflow, {})
        hook_runtime = replace(
            runtime, environment=environment, prefix=f"{runtime.prefix}hook:{stage}:{name}:"
        )
        result = run_workflow(workflow, params, hook_runtime)
        results.append(result)
        if result.status is not Status.SUCCEEDED:
            break
    return HookResult(stage, environment, tuple(results))


def _unknown_workflow(name: str, workflows: Mapping[str, Workflow]) -> Diagnostic:
    guess = did_you_mean(name, sorted(workflows))
    hint = f"did you mean '{guess}'?" if guess else "workflow list shows the defined workflows"
    return Diagnostic(WORKFLOW_NOT_FOUND, f"no workflow '{name}'", hint=hint)
