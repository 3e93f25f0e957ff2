"""``reconciler workflow list`` and ``reconciler workflow run NAME --param k=v ...``.

Workflows are read from the commit ``--ref`` names (default ``HEAD``), never from the work
tree, like every other command. A run is recorded in the store as a run of the environment
(``--env``, or the only environment defined) with trigger ``workflow:NAME`` and the workflow's
name and params as its plan, so ``reconciler runs`` and ``run-show`` show it.

Exit codes of run: 0 the workflow succeeded, 1 it failed (or its file, params or options have
errors), 3 it waits for approval (``--auto-approve`` lets approval steps pass).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from reconciler.catalogue import Code
from reconciler.cli.common import (
    DEFAULT_LOCK_TIMEOUT,
    EnvOption,
    RefOption,
    RepoOption,
    StoreOption,
    cancel_on_signals,
    fail,
    open_repository,
    open_store,
)
from reconciler.cli.progress import ProgressCheckpointer
from reconciler.config.models import Config
from reconciler.diagnostics import Diagnostic, has_errors
from reconciler.engine import Executor, RetryPolicy, StepContext, StoreCheckpointer
from reconciler.gitops.errors import GitError
from reconciler.gitops.repository import Repository
from reconciler.pipeline import Source, open_source, select_environments
from reconciler.providers.base import DriverError
from reconciler.render import diagnostics as render_diagnostics
from reconciler.runner import apply_environment
from reconciler.schemacheck import did_you_mean
from reconciler.services import services_for
from reconciler.store.envlock import environment_lock
from reconciler.store.errors import StoreError
from reconciler.store.records import RunRecord
from reconciler.store.store import Store
from reconciler.workflows import (
    Actions,
    LoadedWorkflows,
    Runtime,
    Status,
    Workflow,
    WorkflowResult,
    load_workflows,
    parse_assignments,
    resolve,
    run_workflow,
)
from reconciler.workflows.model import WORKFLOW_NOT_FOUND

app = typer.Typer(
    help="Custom workflows (golden paths) defined in the repository.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ParamOption = Annotated[
    list[str] | None,
    typer.Option("--param", "-p", help="A parameter as NAME=VALUE; repeat for several."),
]
AutoApprove = Annotated[
    bool, typer.Option("--auto-approve", help="Let approval steps pass instead of waiting.")
]
Parallelism = Annotated[
    int, typer.Option("--parallelism", min=1, max=64, help="Steps run at once.")
]
_RUN_STATUS = {Status.INTERRUPTED: "Pending"}
"""An interrupted run stays open, as an interrupted apply does; the rest map by name."""


@app.command("list")
def list_workflows(repo: RepoOption = Path("."), ref: RefOption = "HEAD") -> None:
    """List the workflows of a commit, with their parameters."""
    console = Console(highlight=False, soft_wrap=True)
    _, source, loaded = _load(repo, ref, console)
    for name, workflow in sorted(loaded.workflows.items()):
        params = ", ".join(
            f"{p}{'' if spec.default is not None else '*'}:{spec.type}"
            for p, spec in sorted(workflow.params.items())
        )
        console.print(f"{name}  ({params or 'no params'})  {workflow.description}".rstrip())
    if not loaded.workflows and not loaded.diagnostics:
        console.print(f"no workflows match {', '.join(source.config.workflows)}")
    raise typer.Exit(1 if loaded.failed else 0)


@app.command("run")
def run(
    name: Annotated[str, typer.Argument(help="The workflow to run.")],
    param: ParamOption = None,
    repo: RepoOption = Path("."),
    store: StoreOption = None,
    ref: RefOption = "HEAD",
    env: EnvOption = None,
    auto_approve: AutoApprove = False,
    parallelism: Parallelism = 4,
) -> None:
    """Run a workflow with its parameters; the run is recorded in the store."""
    console = Console(highlight=False, soft_wrap=True)
    repository, source, loaded = _load(repo, ref, console)
    workflow = loaded.workflows.get(name)
    if workflow is None:
        if any(d.file == loaded.files.get(name) for d in loaded.diagnostics):
            raise typer.Exit(1)
        guess = did_you_mean(name, sorted(loaded.workflows))
        fail(
            WORKFLOW_NOT_FOUND,
            f"no workflow '{name}'" + (f"; did you mean '{guess}'?" if guess else ""),
        )
    given, problems = parse_assignments(param or [])
    values, more = resolve(workflow, given)
    _stop_on(console, [*problems, *more])
    env_name = _environment(source.config, env)
    with open_store(store, repository) as state:
        record = state.create_run(
            env_name,
            source.commit,
            trigger=f"workflow:{name}",
            plan={"workflow": name, "params": {k: str(v) for k, v in sorted(values.items())}},
            status="Running",
        )
        state.audit(actor="cli", action="run.created", environment=env_name, subject=record.id)
        result = _execute(
            state,
            repository,
            source,
            workflow,
            values,
            record.id,
            env_name,
            approved=auto_approve,
            parallelism=parallelism,
            console=console,
        )
    _report(console, record.id, result)
    raise typer.Exit(result.exit_code)


def _execute(
    state: Store,
    repository: Repository,
    source: Source,
    workflow: Workflow,
    values: Mapping[str, Any],
    run_id: str,
    env_name: str,
    *,
    approved: bool,
    parallelism: int,
    console: Console,
) -> WorkflowResult:
    checkpointer = ProgressCheckpointer(StoreCheckpointer(state), console)
    executor = Executor(checkpointer, parallelism=parallelism)
    runtime = Runtime(
        executor=executor,
        checkpointer=checkpointer,
        run_id=run_id,
        environment=env_name,
        actions=Actions(apply=_applier(repository, state, source)),
        approved=approved,
        retry=_retry(source.config),
    )
    with cancel_on_signals(executor):
        result = run_workflow(workflow, values, runtime)
    _record(state, run_id, env_name, result)
    return result


def resume(state: Store, repo: Path, run: RunRecord, *, parallelism: int) -> int:
    """Carry on an approved workflow run from its checkpoints; its exit code."""
    console = Console(highlight=False, soft_wrap=True)
    repository, source, loaded = _load(repo, run.commit, console)
    plan = run.plan or {}
    workflow = loaded.workflows.get(str(plan.get("workflow", "")))
    if workflow is None:
        fail(
            WORKFLOW_NOT_FOUND,
            f"run {run.id} names workflow {plan.get('workflow')!r}, "
            f"which commit {run.commit[:7]} does not define",
        )
    values, problems = resolve(workflow, dict(plan.get("params", {})))
    _stop_on(console, problems)
    state.update_run(run.id, status="Running")
    result = _execute(
        state,
        repository,
        source,
        workflow,
        values,
        run.id,
        run.environment,
        approved=True,
        parallelism=parallelism,
        console=console,
    )
    _report(console, run.id, result)
    return result.exit_code


def _load(repo: Path, ref: str, console: Console) -> tuple[Repository, Source, LoadedWorkflows]:
    repository = open_repository(repo)
    try:
        source = open_source(repository, ref)
    except GitError as exc:
        fail(exc.code, exc.message)
    _stop_on(console, list(source.diagnostics))
    loaded = load_workflows(source.tree, source.config.workflows)
    if loaded.diagnostics:
        _errors().print(render_diagnostics.to_text(list(loaded.diagnostics), 0), end="")
    return repository, source, loaded


def _stop_on(console: Console, problems: Sequence[Diagnostic]) -> None:
    if has_errors(problems):
        _errors().print(render_diagnostics.to_text(list(problems), 0), end="")
        raise typer.Exit(1)


def _errors() -> Console:
    """Diagnostics go to stderr, as with every other command."""
    return Console(stderr=True, highlight=False, soft_wrap=True)


def _environment(config: Config, wanted: str | None) -> str:
    """The environment the run belongs to: ``--env``, or the only one defined."""
    names = [n for n, _ in select_environments(config, None)]
    if wanted is not None and wanted not in names:
        fail(Code.UNKNOWN_ENVIRONMENT, f"environment '{wanted}' is not defined")
    if wanted is None and len(names) != 1:
        fail(
            Code.UNKNOWN_ENVIRONMENT,
            f"several environments are defined ({', '.join(names)}); choose one with --env",
        )
    return wanted or names[0]


def _retry(config: Config) -> RetryPolicy:
    """The repository's backoff; each step's ``retries`` sets its attempts."""
    return RetryPolicy(
        max_attempts=1,
        initial_backoff=config.retries.initial_backoff.seconds,
        max_backoff=config.retries.max_backoff.seconds,
    )


def _applier(repository: Repository, store: Store, source: Source) -> Any:
    """An ``apply`` step applies the environment it names at the same commit, as a run of its
    own (with that environment's approval rule: a gate there makes the step fail)."""
    environments = dict(select_environments(source.config, None))

    def apply(environment: str, ctx: StepContext) -> Mapping[str, Any]:
        env = environments.get(environment)
        if env is None:
            raise DriverError(
                Code.UNKNOWN_ENVIRONMENT, f"environment '{environment}' is not defined"
            )
        services = services_for(store, repository, environment, env, actor="workflow")
        try:
            with environment_lock(store, environment, wait=DEFAULT_LOCK_TIMEOUT):
                outcome = apply_environment(
                    repository, services, source, environment, env, trigger="workflow"
                )
        except StoreError as exc:
            if exc.code is not Code.ENVIRONMENT_LOCKED:
                raise
            raise DriverError(exc.code, exc.message, retryable=True) from exc
        run_id = outcome.run.id if outcome.run is not None else ""
        ctx.log(f"apply {environment}: {outcome.status} {outcome.message}".rstrip())
        if outcome.run is not None and outcome.exit_code != 0:
            code = outcome.error_code or Code.STEP_FAILED
            raise DriverError(code, f"apply {environment} {outcome.status}: {outcome.message}")
        if outcome.planned is not None and outcome.planned.failed:
            raise DriverError(Code.STEP_FAILED, f"apply {environment}: the commit has errors")
        return {"run": run_id, "status": outcome.status, "message": outcome.message}

    return apply


def _record(store: Store, run_id: str, environment: str, result: WorkflowResult) -> None:
    status = _RUN_STATUS.get(result.status, str(result.status))
    finished = result.status in (Status.SUCCEEDED, Status.FAILED)
    code = result.error_code.id if result.error_code is not None else None
    store.update_run(
        run_id, status=status, error_code=code, message=result.message or None, finished=finished
    )
    store.audit(
        actor="cli",
        action=f"run.{str(result.status).lower()}",
        environment=environment,
        subject=run_id,
        detail={"workflow": result.workflow},
    )


def _report(console: Console, run_id: str, result: WorkflowResult) -> None:
    style = {Status.SUCCEEDED: "green", Status.WAITING: "yellow"}.get(result.status, "red")
    code = f" {result.error_code.id}" if result.error_code is not None else ""
    detail = f" ({code.strip()} {result.message})" if result.message else ""
    console.print(f"workflow {result.workflow}: run {run_id} {result.status}{detail}", style=style)


if __name__ == "__main__":  # until app.py mounts the sub-app: python -m reconciler.cli.workflow_cmd
    app()
