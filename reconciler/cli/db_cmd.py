"""``reconciler db ...``: create, inspect, back up and restore the state store.

The store is named by ``--store URL`` or ``RECONCILER_STORE``; without either it is the SQLite
file in the Git directory of the repository around ``--repo`` (default: the working directory).
Exit codes: 0 success, 1 a store error (printed as ``error RCN-5xxx message`` and a hint).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from reconciler.store import ENV_VAR, Store, StoreError, parse_store_url
from reconciler.store import backup as backups
from reconciler.store.migrations import head
from reconciler.store.url import resolve_store_url

app = typer.Typer(
    help="Create, inspect, back up and restore the state store.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store",
        envvar=ENV_VAR,
        show_envvar=True,
        help="sqlite:///path/state.db or postgresql://user@host:port/db. "
        "Default: sqlite in the repository's Git directory.",
    ),
]
RepoOption = Annotated[
    Path,
    typer.Option("--repo", help="The repository whose Git directory holds the default store."),
]
BackupPath = Annotated[
    Path, typer.Argument(help="A .json file (portable export) or a SQLite .db file.")
]


@contextmanager
def _reported() -> Iterator[None]:
    """Print a store error the way every command prints errors, and exit 1."""
    try:
        yield
    except StoreError as error:
        typer.echo(f"error {error.code.id} {error.message}", err=True)
        typer.echo(f"  hint: {error.code.hint}", err=True)
        raise typer.Exit(1) from None


def _open(store: str | None, repo: Path, *, migrate: bool = True) -> Store:
    return Store.open(resolve_store_url(store, repo), migrate=migrate)


@app.command("upgrade")
def upgrade(store: StoreOption = None, repo: RepoOption = Path()) -> None:
    """Create the store or bring its schema to this version (the daemon does this at start)."""
    with _reported(), _open(store, repo) as opened:
        typer.echo(f"{opened.url.display}: at revision {opened.revision()} (head)")


@app.command("current")
def current(store: StoreOption = None, repo: RepoOption = Path()) -> None:
    """Show the store's schema revision, without changing anything."""
    with _reported():
        url = resolve_store_url(store, repo)
        file = parse_store_url(url).path
        if file is not None and not file.exists():
            typer.echo(f"none (no store at {file} yet; 'reconciler db upgrade' creates it)")
            return
        with Store.open(url, migrate=False) as opened:
            revision = opened.revision()
    newest = head()
    if revision is None:
        typer.echo(f"none (empty store; 'reconciler db upgrade' creates revision {newest})")
    elif revision == newest:
        typer.echo(f"{revision} (head)")
    else:
        typer.echo(f"{revision} (this reconciler's head is {newest})")


@app.command("backup")
def backup(path: BackupPath, store: StoreOption = None, repo: RepoOption = Path()) -> None:
    """Write a consistent snapshot of the store while the daemon may keep running."""
    with _reported(), _open(store, repo) as opened:
        backups.backup(opened, path)
    typer.echo(f"backed up {opened.url.display} to {path}")


@app.command("restore")
def restore(path: BackupPath, store: StoreOption = None, repo: RepoOption = Path()) -> None:
    """Replace everything in the store with a backup. Stop the daemon first."""
    with _reported(), _open(store, repo) as opened:
        backups.restore(opened, path)
    typer.echo(f"restored {path} into {opened.url.display}")
