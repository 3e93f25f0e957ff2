"""``reconciler plan``: what applying a commit would change, per environment.

Exit codes follow ``terraform plan -detailed-exitcode``: 0 no changes, 2 changes present,
1 errors (with the same diagnostics as ``reconciler validate``).
"""

from __future__ import annotations

import enum
import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from reconciler.cli.common import (
    EnvOption,
    RefOption,
    RepoOption,
    StoreOption,
    fail,
    open_repository,
    open_store,
)
from reconciler.diagnostics import Diagnostic, has_errors, sorted_diagnostics
from reconciler.gitops.errors import GitError
from reconciler.pipeline import (
    EnvironmentPlan,
    open_source,
    plan_environment,
    select_environments,
    unknown_environment,
)
from reconciler.plan import render
from reconciler.render import diagnostics as render_diagnostics

EXIT_NO_CHANGES, EXIT_ERROR, EXIT_CHANGES = 0, 1, 2


class Format(enum.StrEnum):
    TEXT = "text"
    JSON = "json"
    MARKDOWN = "markdown"


def plan(
    repo: RepoOption = Path("."),
    ref: RefOption = "HEAD",
    env: EnvOption = None,
    store: StoreOption = None,
    output: Annotated[Format, typer.Option("--format", "-o", help="Output format.")] = Format.TEXT,
) -> None:
    """Show what applying a commit would create, change and destroy."""
    repository = open_repository(repo)
    try:
        source = open_source(repository, ref)
    except GitError as exc:
        fail(exc.code, exc.message)
    environments = select_environments(source.config, env)
    if env is not None and not environments:
        _emit_errors([unknown_environment(source.config, env)], output)
        raise typer.Exit(EXIT_ERROR)
    with open_store(store, repository) as state:
        results = [plan_environment(repository, state, source, n, e) for n, e in environments]
    diagnostics = sorted_diagnostics(d for r in results for d in r.diagnostics)
    if has_errors(diagnostics):
        _emit_errors(diagnostics, output)
        raise typer.Exit(EXIT_ERROR)
    _emit(results, diagnostics, output)
    changed = any(r.plan is not None and r.plan.summary.has_changes for r in results)
    raise typer.Exit(EXIT_CHANGES if changed else EXIT_NO_CHANGES)


def _emit_errors(diagnostics: list[Diagnostic], output: Format) -> None:
    if output is Format.JSON:
        sys.stdout.write(render_diagnostics.to_json(diagnostics, 0))
        return
    Console(stderr=True, highlight=False, soft_wrap=True).print(
        render_diagnostics.to_text(diagnostics, 0), end=""
    )


def _emit(results: list[EnvironmentPlan], diagnostics: list[Diagnostic], output: Format) -> None:
    plans = [r.plan for r in results if r.plan is not None]
    if output is Format.JSON:
        document = (
            plans[0].to_dict() if len(plans) == 1 else {"plans": [p.to_dict() for p in plans]}
        )
        sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
        return
    if output is Format.MARKDOWN:
        sys.stdout.write("\n".join(render.to_markdown(p) for p in plans))
        return
    console = Console(highlight=False, soft_wrap=True)
    if diagnostics:
        console.print(render_diagnostics.to_text(diagnostics, 0), end="")
    for i, p in enumerate(plans):
        if i:
            console.print()
        console.print(render.to_text(p), end="")
