"""Options and helpers shared by the commands that read a repository and the store.

Every such command takes ``--repo`` and ``--store`` after its name, and prints coded errors
(``error RCN-xxxx message`` and the hint) rather than tracebacks.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console

from reconciler.catalogue import Code
from reconciler.engine import Executor
from reconciler.gitops.errors import GitError
from reconciler.gitops.repository import Repository
from reconciler.store.envlock import environment_lock
from reconciler.store.errors import StoreError
from reconciler.store.records import RunRecord
from reconciler.store.store import Store
from reconciler.store.url import default_store_url

RepoOption = Annotated[
    Path,
    typer.Option("--repo", "-r", help="The Git repository (a work tree or a bare repository)."),
]
StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store",
        envvar="RECONCILER_STORE",
        help="State store URL: sqlite:///path/state.db or postgresql://user@host:port/db. "
        "Default: reconciler/state.db in the repository's Git directory.",
    ),
]
RefOption = Annotated[str, typer.Option("--ref", help="The revision to use.")]
EnvOption = Annotated[
    str | None, typer.Option("--env", "-e", help="One environment (default: all).")
]
LockTimeoutOption = Annotated[
    float,
    typer.Option(
        "--lock-timeout",
        min=0.0,
        help="Seconds to wait while the daemon or another command is reconciling the "
        "environment (0: refuse at once).",
    ),
]
DEFAULT_LOCK_TIMEOUT = 60.0
"""Long enough for a daemon's run of a few workloads to end; a first reconcile may take more."""


@contextmanager
def claimed(store: Store, environment: str, wait: float) -> Iterator[None]:
    """Hold the environment against the daemon and other commands while this one applies it;
    a coded error (RCN-5011, naming the holder) once ``wait`` seconds pass."""
    try:
        with environment_lock(
            store, environment, wait=wait, on_wait=lambda text: typer.echo(text, err=True)
        ):
            yield
    except StoreError as exc:
        if exc.code is not Code.ENVIRONMENT_LOCKED:
            raise
        fail(exc.code, exc.message)


def fail(code: Code, message: str, *, exit_code: int = 1) -> NoReturn:
    typer.echo(f"error {code.id} {message}", err=True)
    typer.echo(f"    hint: {code.hint}", err=True)
    raise typer.Exit(exit_code)


def open_repository(path: Path) -> Repository:
    try:
        return Repository.open(path)
    except GitError as exc:
        fail(exc.code, exc.message)


@contextmanager
def open_store(url: str | None, repo: Repository) -> Iterator[Store]:
    try:
        store = Store.open(url or default_store_url(repo.common_dir))
    except StoreError as exc:
        fail(exc.code, exc.message)
    try:
        yield store
    finally:
        store.close()


@contextmanager
def cancel_on_signals(executor: Executor) -> Iterator[None]:
    """SIGTERM and Ctrl-C stop new steps, let running ones finish, checkpoint, exit non-zero."""

    def handler(signum: int, frame: object) -> None:
        executor.cancel()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def no_color() -> bool:
    return bool(os.environ.get("NO_COLOR"))


def print_table(columns: list[str], rows: list[list[str]]) -> None:
    """Upper-case columns two spaces apart, as ``argocd app list`` prints them."""
    console = Console(highlight=False, soft_wrap=True)
    widths = [max(len(str(v)) for v in col) for col in zip(columns, *rows, strict=False)]
    for row in [columns, *rows]:
        console.print("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def find_run(store: Store, run_id: str) -> RunRecord:
    """A run by its id or a unique prefix of it (as ``reconciler runs`` shows 8 characters)."""
    run = store.get_run(run_id)
    if run is None:
        matches = [r for r in store.list_runs(limit=500) if r.id.startswith(run_id)]
        run = store.get_run(matches[0].id) if len(matches) == 1 else None
    if run is None:
        fail(Code.RUN_NOT_FOUND, f"no run '{run_id}'")
    return run
