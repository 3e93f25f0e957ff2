"""``reconciler status``, ``history`` and ``sync``: what the store knows, as Argo CD users read it.

``status`` prints a table like ``argocd app list`` (upper-case columns two spaces apart, SHAs
shortened to 7 characters), or JSON / YAML with ``-o``.
"""

from __future__ import annotations

import enum
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from ruamel.yaml import YAML

from reconciler.catalogue import Code
from reconciler.cli.apply_cmd import Parallelism, _exit, _run_one
from reconciler.cli.common import (
    EnvOption,
    RepoOption,
    StoreOption,
    fail,
    open_repository,
    open_store,
    print_table,
)
from reconciler.gitops.errors import GitError
from reconciler.gitops.repository import Repository
from reconciler.pipeline import open_source
from reconciler.store.records import PinRecord
from reconciler.store.store import Store


class Output(enum.StrEnum):
    TABLE = "table"
    WIDE = "wide"
    JSON = "json"
    YAML = "yaml"


def _rows(repo: Repository, store: Store, only_env: str | None) -> list[dict[str, Any]]:
    try:
        config = open_source(repo, "HEAD").config
        follows = {name: env.follows for name, env in config.sorted_environments()}
    except GitError:
        follows = {}
    rows = []
    for record in store.environments():
        if only_env is not None and record.name != only_env:
            continue
        try:
            head = repo.resolve(follows[record.name]) if record.name in follows else None
        except GitError:
            head = None
        runs = store.list_runs(record.name, limit=1)
        last = runs[0] if runs else None
        pins = store.pins(record.name)
        for workload in sorted(
            store.recorded(record.name).workloads.values(), key=lambda w: w.name
        ):
            row = _row(record.name, workload.name, workload.commit, head, record.last_commit, last)
            if workload.name in pins:
                pinned = f"pinned to {pins[workload.name].commit[:7]} (reconciler rollback)"
                row["message"] = f"{pinned}; {row['message']}" if row["message"] else pinned
            rows.append(row)
    return rows


def _followed(repo: Repository) -> dict[str, str]:
    """The revision each environment follows, as reconciler.yaml at HEAD says."""
    try:
        config = open_source(repo, "HEAD").config
    except GitError as exc:
        fail(exc.code, exc.message)
    return {name: env.follows for name, env in config.sorted_environments()}


def _row(
    env: str, name: str, commit: str, head: str | None, last: str | None, run: Any
) -> dict[str, Any]:
    synced = head is None or head == last
    failed = run is not None and run.status == "Failed"
    waiting = run is not None and run.status == "WaitingApproval"
    message = ""
    if failed:
        message = f"{run.error_code or ''} {run.message or ''}".strip()
    elif waiting:
        message = f"waiting for approval (run {run.id[:8]})"
    elif not synced and head is not None:
        message = f"{head[:7]} not applied yet"
    return {
        "name": name,
        "environment": env,
        "status": "Synced" if synced and not failed else "OutOfSync",
        "health": "Degraded" if failed else ("Suspended" if waiting else "Healthy"),
        "revision": commit,
        "head": head,
        "message": message,
    }


def status(
    repo: RepoOption = Path("."),
    store: StoreOption = None,
    env: EnvOption = None,
    output: Annotated[Output, typer.Option("--output", "-o", help="table, wide, json or yaml.")] = (
        Output.TABLE
    ),
) -> None:
    """List workloads with their sync and health status, per environment."""
    repository = open_repository(repo)
    with open_store(store, repository) as state:
        rows = _rows(repository, state, env)
    if output is Output.JSON:
        sys.stdout.write(json.dumps({"items": rows}, indent=2) + "\n")
        return
    if output is Output.YAML:
        YAML().dump({"items": rows}, sys.stdout)
        return
    columns = ["NAME", "ENV", "STATUS", "HEALTH", "REVISION", "MESSAGE"]
    if output is Output.WIDE:
        columns.insert(5, "HEAD")
    table = [
        [r["name"], r["environment"], r["status"], r["health"], r["revision"][:7]]
        + ([(r["head"] or "-")[:7]] if output is Output.WIDE else [])
        + [r["message"]]
        for r in rows
    ]
    print_table(columns, table)


def history(
    workload: Annotated[str, typer.Argument(help="The workload's name.")],
    repo: RepoOption = Path("."),
    store: StoreOption = None,
    env: EnvOption = None,
    limit: Annotated[int, typer.Option("--limit", min=1)] = 20,
) -> None:
    """The runs that changed a workload, newest first."""
    repository = open_repository(repo)
    with open_store(store, repository) as state:
        runs = state.list_runs(env, limit=500, with_plans=True)
    rows = []
    for run in runs:
        actions = (run.plan or {}).get("actions", [])
        mine = [a for a in actions if a.get("kind") == "workload" and a.get("id") == workload]
        for action in mine:
            if action.get("action") == "no-op":
                continue
            rows.append(
                [
                    run.environment,
                    run.commit[:7],
                    run.id[:8],
                    action["action"],
                    run.status,
                    f"{run.started_at:%Y-%m-%d %H:%M:%S}",
                ]
            )
    if not rows:
        fail(Code.RUN_NOT_FOUND, f"no run changed workload '{workload}'")
    print_table(["ENV", "REVISION", "RUN", "ACTION", "STATUS", "STARTED"], rows[:limit])


def sync(
    workload: Annotated[str, typer.Argument(help="The workload to reconcile now.")],
    repo: RepoOption = Path("."),
    store: StoreOption = None,
    env: EnvOption = None,
    parallelism: Parallelism = 4,
) -> None:
    """Reconcile a workload now, in each environment that holds it: a run of that workload
    alone (its resources included; approval gates still apply)."""
    console = Console(highlight=False, soft_wrap=True)
    repository = open_repository(repo)
    follows = _followed(repository)
    with open_store(store, repository) as state:
        envs = [e.name for e in state.environments() if env in (None, e.name)]
        holding = [e for e in envs if workload in state.recorded(e).workloads]
        if not holding:
            holding = envs if env is not None else []
        if not holding:
            fail(
                Code.UNKNOWN_ENVIRONMENT, f"no environment records workload '{workload}'; use --env"
            )
        outcomes = []
        for name in holding:
            outcomes += _run_one(
                state,
                repo,
                follows.get(name, "HEAD"),
                name,
                auto_approve=False,
                parallelism=parallelism,
                console=console,
                scope=[workload],
            )
    _exit(outcomes)


def rollback(
    workload: Annotated[str, typer.Argument(help="The workload to roll back.")],
    to: Annotated[str, typer.Option("--to", help="The commit whose desired state to restore.")],
    repo: RepoOption = Path("."),
    store: StoreOption = None,
    env: EnvOption = None,
    parallelism: Parallelism = 4,
) -> None:
    """Pin a workload to an earlier commit's desired state and apply it.

    The pin lasts until a newer commit changes the workload's Score file; ``reconciler status``
    says the workload is pinned meanwhile.
    """
    console = Console(highlight=False, soft_wrap=True)
    repository = open_repository(repo)
    try:
        commit = repository.resolve(to)
        config = open_source(repository, "HEAD").config
    except GitError as exc:
        fail(exc.code, exc.message)
    environments = dict(config.sorted_environments())
    outcomes = []
    with open_store(store, repository) as state:
        holding = [
            name
            for name in environments
            if env in (None, name) and workload in state.recorded(name).workloads
        ]
        if not holding:
            fail(Code.UNKNOWN_ENVIRONMENT, f"no environment records workload '{workload}'")
        for name in holding:
            record = state.recorded(name).workloads[workload]
            if not repository.tree(commit).exists(record.file):
                fail(Code.REVISION_NOT_FOUND, f"{commit[:7]} has no {record.file}")
            followed = environments[name].follows
            head = repository.resolve(followed)
            state.set_pin(name, PinRecord(workload, record.file, commit, head))
            state.audit(
                actor="cli",
                action="workload.pinned",
                environment=name,
                subject=workload,
                detail={"commit": commit},
            )
            console.print(f"{name}: {workload} pinned to {commit[:7]}")
            outcomes += _run_one(
                state,
                repo,
                followed,
                name,
                auto_approve=False,
                parallelism=parallelism,
                console=console,
            )
    _exit(outcomes)
