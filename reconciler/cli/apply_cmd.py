"""``reconciler apply``, ``destroy``, ``approve``, ``reject``, ``runs`` and ``run-show``.

Exit codes of apply: 0 success (or nothing to do), 1 failure, 3 waiting for approval.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from reconciler.catalogue import Code
from reconciler.cli import workflow_cmd
from reconciler.cli.common import (
    DEFAULT_LOCK_TIMEOUT,
    EnvOption,
    LockTimeoutOption,
    RefOption,
    RepoOption,
    StoreOption,
    cancel_on_signals,
    claimed,
    fail,
    find_run,
    open_repository,
    open_store,
    print_table,
)
from reconciler.cli.progress import ProgressCheckpointer, print_run
from reconciler.diagnostics import has_errors
from reconciler.engine import Executor, StoreCheckpointer
from reconciler.gitops.errors import GitError
from reconciler.pipeline import EnvironmentPlan, open_source, select_environments
from reconciler.plan.collector import full_collections_held
from reconciler.plan.render import to_text
from reconciler.providers.base import DriverError
from reconciler.render import diagnostics as render_diagnostics
from reconciler.runner import RunOutcome, apply_environment, destroy_environment
from reconciler.services import services_for
from reconciler.store.records import RunRecord
from reconciler.store.store import Store

EXIT_WAITING = 3

AutoApprove = Annotated[
    bool,
    typer.Option("--auto-approve", help="Skip the confirmation and any approval gate."),
]
Parallelism = Annotated[
    int, typer.Option("--parallelism", min=1, max=64, help="Steps run at once.")
]


def _confirm(console: Console, auto: bool) -> object:
    def ask(planned: EnvironmentPlan) -> bool:
        if auto or not sys.stdin.isatty():
            return True
        return typer.confirm(f"Apply these changes to {planned.environment}?", default=False)

    return ask


def _run_one(
    store: Store,
    repo_path: Path,
    ref: str,
    env_name: str | None,
    *,
    auto_approve: bool,
    parallelism: int,
    approved: bool = False,
    console: Console,
    scope: Sequence[str] | None = None,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
) -> list[RunOutcome]:
    repository = open_repository(repo_path)
    try:
        source = open_source(repository, ref)
    except GitError as exc:
        fail(exc.code, exc.message)
    if has_errors(source.diagnostics):
        console.print(render_diagnostics.to_text(list(source.diagnostics), 0), end="")
        raise typer.Exit(1)
    environments = select_environments(source.config, env_name)
    if env_name is not None and not environments:
        fail(Code.UNKNOWN_ENVIRONMENT, f"environment '{env_name}' is not defined")
    outcomes = []
    for name, env in environments:
        try:
            services = services_for(store, repository, name, env)
        except DriverError as exc:
            fail(exc.code, exc.message)
        checkpointer = ProgressCheckpointer(StoreCheckpointer(store), console)
        executor = Executor(checkpointer, parallelism=parallelism)
        # A command ends with its run: no full collection during it (plan/collector.py).
        with (
            claimed(store, name, lock_timeout),
            cancel_on_signals(executor),
            full_collections_held(),
        ):
            outcome = apply_environment(
                repository,
                services,
                source,
                name,
                env,
                approved=approved or auto_approve,
                executor=executor,
                checkpointer=checkpointer,
                on_plan=_show_and_confirm(console, auto_approve),  # type: ignore[arg-type]
                scope=scope,
            )
        outcomes.append(outcome)
        _report(console, outcome)
    return outcomes


def _show_and_confirm(console: Console, auto: bool) -> object:
    ask = _confirm(console, auto)

    def show(planned: EnvironmentPlan) -> bool:
        if planned.plan is not None:
            console.print(to_text(planned.plan), end="")
        return bool(ask(planned))  # type: ignore[operator]

    return show


def _report(console: Console, outcome: RunOutcome) -> None:
    if outcome.planned is not None and outcome.planned.failed:
        console.print(render_diagnostics.to_text(list(outcome.planned.diagnostics), 0), end="")
        return
    run = outcome.run
    if run is None:
        console.print(f"{outcome.environment}: {outcome.message}")
        return
    if run.status == "WaitingApproval":
        console.print(
            f"{outcome.environment}: run {run.id} is waiting for approval: "
            f"reconciler approve {run.id}"
        )
        return
    style = "green" if run.status == "Succeeded" else "red"
    detail = f" ({run.error_code} {run.message})" if run.error_code else ""
    console.print(f"{outcome.environment}: run {run.id} {run.status}{detail}", style=style)


def _exit(outcomes: list[RunOutcome]) -> None:
    codes = [o.exit_code for o in outcomes]
    if any(c == 1 for c in codes):
        raise typer.Exit(1)
    raise typer.Exit(EXIT_WAITING if EXIT_WAITING in codes else 0)


def apply(
    repo: RepoOption = Path("."),
    ref: RefOption = "HEAD",
    env: EnvOption = None,
    store: StoreOption = None,
    auto_approve: AutoApprove = False,
    parallelism: Parallelism = 4,
    lock_timeout: LockTimeoutOption = DEFAULT_LOCK_TIMEOUT,
) -> None:
    """Plan a commit and apply it: provision resources, publish workloads, record the result."""
    console = Console(highlight=False, soft_wrap=True)
    repository = open_repository(repo)
    with open_store(store, repository) as state:
        outcomes = _run_one(
            state,
            repo,
            ref,
            env,
            auto_approve=auto_approve,
            parallelism=parallelism,
            console=console,
            lock_timeout=lock_timeout,
        )
    _exit(outcomes)


def approve(
    run_id: Annotated[str, typer.Argument(help="The run waiting for approval.")],
    repo: RepoOption = Path("."),
    store: StoreOption = None,
    parallelism: Parallelism = 4,
    lock_timeout: LockTimeoutOption = DEFAULT_LOCK_TIMEOUT,
) -> None:
    """Approve a run waiting for approval, and carry it out."""
    console = Console(highlight=False, soft_wrap=True)
    repository = open_repository(repo)
    with open_store(store, repository) as state:
        run = _waiting_run(state, run_id)
        state.audit(actor="cli", action="run.approved", environment=run.environment, subject=run.id)
        if run.trigger.startswith("workflow:"):
            raise typer.Exit(workflow_cmd.resume(state, repo, run, parallelism=parallelism))
        outcomes = _run_one(
            state,
            repo,
            run.commit,
            run.environment,
            auto_approve=True,
            parallelism=parallelism,
            approved=True,
            console=console,
            scope=run.scope,  # a daemon's run of some workloads stays a run of those
            lock_timeout=lock_timeout,
        )
    _exit(outcomes)


def reject(
    run_id: Annotated[str, typer.Argument(help="The run waiting for approval.")],
    repo: RepoOption = Path("."),
    store: StoreOption = None,
) -> None:
    """Reject a run waiting for approval: it ends Failed and nothing is applied."""
    repository = open_repository(repo)
    with open_store(store, repository) as state:
        run = _waiting_run(state, run_id)
        state.update_run(run.id, status="Failed", message="rejected", finished=True)
        state.audit(actor="cli", action="run.rejected", environment=run.environment, subject=run.id)
    typer.echo(f"run {run.id} rejected")


def _waiting_run(store: Store, run_id: str) -> RunRecord:
    run = find_run(store, run_id)
    if run.status != "WaitingApproval":
        fail(Code.RUN_NOT_WAITING, f"run {run.id} is {run.status}")
    return run


def runs(
    repo: RepoOption = Path("."),
    store: StoreOption = None,
    env: EnvOption = None,
    limit: Annotated[int, typer.Option("--limit", min=1)] = 20,
) -> None:
    """List runs, newest first."""
    repository = open_repository(repo)
    with open_store(store, repository) as state:
        listed = state.list_runs(env, limit=limit)
    header = ["RUN", "ENV", "STATUS", "REVISION", "STARTED", "MESSAGE"]
    rows = [
        [
            r.id[:8],
            r.environment,
            r.status,
            r.commit[:7],
            f"{r.started_at:%Y-%m-%d %H:%M:%S}",
            r.message or "",
        ]
        for r in listed
    ]
    print_table(header, rows)


def run_show(
    run_id: Annotated[str, typer.Argument(help="A run id (a unique prefix is enough).")],
    repo: RepoOption = Path("."),
    store: StoreOption = None,
) -> None:
    """Show a run and its steps, with their logs."""
    console = Console(highlight=False, soft_wrap=True)
    repository = open_repository(repo)
    with open_store(store, repository) as state:
        run = find_run(state, run_id)
        print_run(console, run, state.steps(run.id))


def destroy(
    env: Annotated[str, typer.Option("--env", "-e", help="The environment to tear down.")],
    repo: RepoOption = Path("."),
    ref: RefOption = "HEAD",
    store: StoreOption = None,
    auto_approve: AutoApprove = False,
    lock_timeout: LockTimeoutOption = DEFAULT_LOCK_TIMEOUT,
) -> None:
    """Remove every workload and resource recorded for an environment."""
    console = Console(highlight=False, soft_wrap=True)
    repository = open_repository(repo)
    try:
        source = open_source(repository, ref)
    except GitError as exc:
        fail(exc.code, exc.message)
    environments = dict(select_environments(source.config, env))
    if env not in environments:
        fail(Code.UNKNOWN_ENVIRONMENT, f"environment '{env}' is not defined")
    if not auto_approve and sys.stdin.isatty():
        typer.confirm(f"Destroy everything recorded for {env}?", abort=True)
    with open_store(store, repository) as state:
        services = services_for(state, repository, env, environments[env])
        checkpointer = ProgressCheckpointer(StoreCheckpointer(state), console)
        executor = Executor(checkpointer)
        with claimed(state, env, lock_timeout), cancel_on_signals(executor):
            outcome = destroy_environment(
                repository, services, source, env, environments[env], executor=executor
            )
    _report(console, outcome)
    raise typer.Exit(0 if outcome.run is None or outcome.run.status == "Succeeded" else 1)
