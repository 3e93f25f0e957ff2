"""``reconciler preview``: what merging a pull request would change, per environment.

Plans the head commit against the state the base would leave (docs/preview.md) and prints it
as Markdown for a pull-request comment, JSON, text or SARIF. Nothing is applied and the store
is only read: a store that does not exist yet is not created, the base's desired state then
stands in for it. Exit codes as ``terraform plan -detailed-exitcode``: 0 no changes, 2 changes,
1 errors (the head's diagnostics are still reported, in every format).
"""

from __future__ import annotations

import enum
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from reconciler.cli.common import EnvOption, RepoOption, StoreOption, fail, open_repository
from reconciler.gitops.repository import Repository
from reconciler.preview import PreviewError, preview
from reconciler.preview.markdown import COMMENT_LIMIT, to_markdown
from reconciler.preview.text import to_text
from reconciler.render import diagnostics as render_diagnostics
from reconciler.store.errors import StoreError
from reconciler.store.store import Store
from reconciler.store.url import default_store_url, parse_store_url


class Format(enum.StrEnum):
    MARKDOWN = "markdown"
    JSON = "json"
    TEXT = "text"
    SARIF = "sarif"


def preview_command(
    base: Annotated[str, typer.Option("--base", help="The pull request's base (target) ref.")],
    head: Annotated[str, typer.Option("--head", help="The pull request's head ref.")] = "HEAD",
    repo: RepoOption = Path("."),
    env: EnvOption = None,
    store: StoreOption = None,
    output: Annotated[
        Format, typer.Option("--format", "-o", help="Output format.")
    ] = Format.MARKDOWN,
    link_base: Annotated[
        str | None,
        typer.Option(
            "--link-base",
            help="URL that repository paths are appended to for links in Markdown, e.g. "
            "https://github.com/OWNER/REPO/blob/HEAD_SHA",
        ),
    ] = None,
    limit: Annotated[
        int, typer.Option("--max-chars", help="Cut Markdown at this many characters.", min=1000)
    ] = COMMENT_LIMIT,
) -> None:
    """Preview what merging --head into --base would create, change and destroy."""
    repository = open_repository(repo)
    with _recorded(store, repository) as recorded:
        try:
            result = preview(repository, base, head, environment=env, recorded=recorded)
        except PreviewError as exc:
            fail(exc.code, exc.message)
    if output is Format.JSON:
        sys.stdout.write(json.dumps(result.to_dict(), indent=2, ensure_ascii=False) + "\n")
    elif output is Format.SARIF:
        sys.stdout.write(render_diagnostics.to_sarif(result.all_diagnostics()))
    elif output is Format.MARKDOWN:
        sys.stdout.write(to_markdown(result, link_base=link_base, limit=limit))
    else:
        Console(highlight=False, soft_wrap=True).print(to_text(result), end="")
    raise typer.Exit(result.exit_code)


@contextmanager
def _recorded(url: str | None, repo: Repository) -> Iterator[Store | None]:
    """The user's store, read only; None when there is none yet (nothing was reconciled)."""
    url = url or default_store_url(repo.common_dir)
    try:
        parsed = parse_store_url(url)
        if parsed.path is not None and not parsed.path.is_file():
            yield None
            return
        store = Store.open(url, migrate=False)
    except StoreError as exc:
        fail(exc.code, exc.message)
    try:
        yield store if store.revision() is not None else None
    except StoreError as exc:
        fail(exc.code, exc.message)
    finally:
        store.close()
