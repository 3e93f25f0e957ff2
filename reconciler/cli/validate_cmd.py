"""``reconciler validate [PATH ...]``: check Score files and reconciler.yaml.

A directory is validated as a repository (its reconciler.yaml decides which files are Score
files); a file is validated on its own, within the repository that holds it (the nearest folder
with reconciler.yaml or .git), so that relative file sources resolve as they will when planned.
Exit codes: 0 no errors (warnings allowed), 1 errors, 2 usage errors.
"""

from __future__ import annotations

import enum
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from reconciler.catalogue import Code
from reconciler.config.loader import CONFIG_FILE
from reconciler.diagnostics import Diagnostic, has_errors, sorted_diagnostics
from reconciler.render import diagnostics as render
from reconciler.tree import DirectoryTree
from reconciler.validate import validate_tree


class Format(enum.StrEnum):
    TEXT = "text"
    JSON = "json"
    SARIF = "sarif"


def repository_root(start: Path) -> Path:
    """The nearest folder at or above ``start`` holding reconciler.yaml or .git."""
    folder = start if start.is_dir() else start.parent
    for candidate in (folder, *folder.parents):
        if (candidate / CONFIG_FILE).is_file() or (candidate / ".git").exists():
            return candidate
    return folder


def _groups(paths: Sequence[Path]) -> dict[Path, list[str] | None]:
    """Repository root → the files to validate in it (None: the whole repository)."""
    groups: dict[Path, list[str] | None] = {}
    for path in paths:
        if path.is_dir():
            groups[path.resolve()] = None
            continue
        root = repository_root(path.resolve())
        rel = path.resolve().relative_to(root).as_posix()
        if root not in groups:
            groups[root] = [rel]
        elif (files := groups[root]) is not None:
            files.append(rel)
    return groups


def _relocate(diag: Diagnostic, root: Path) -> Diagnostic:
    """Name the file relative to the working directory, so that editors can open it."""
    if diag.file is None:
        return diag
    shown = os.path.relpath(root / diag.file, Path.cwd())
    return replace(diag, file=Path(shown).as_posix())


def validate(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="Files or folders to validate. Default: the current repository."),
    ] = None,
    output: Annotated[Format, typer.Option("--format", "-o", help="Output format.")] = Format.TEXT,
) -> None:
    """Validate Score files and reconciler.yaml; report every problem with file, line and code."""
    missing = [p for p in paths or [] if not p.exists()]
    if missing:
        for p in missing:
            problem = Diagnostic(Code.PATH_NOT_FOUND, f"no such file or folder: {p}")
            typer.echo(f"error {problem.code.id} {problem.message}", err=True)
        raise typer.Exit(2)
    targets = list(paths) if paths else [repository_root(Path.cwd())]
    diagnostics: list[Diagnostic] = []
    files = 0
    for root, only in _groups(targets).items():
        report = validate_tree(DirectoryTree(root), only)
        diagnostics.extend(_relocate(d, root) for d in report.diagnostics)
        files += report.files
    diagnostics = sorted_diagnostics(diagnostics)
    _emit(diagnostics, files, output)
    raise typer.Exit(1 if has_errors(diagnostics) else 0)


def _emit(diagnostics: list[Diagnostic], files: int, output: Format) -> None:
    if output is Format.JSON:
        sys.stdout.write(render.to_json(diagnostics, files))
    elif output is Format.SARIF:
        sys.stdout.write(render.to_sarif(diagnostics))
    else:
        Console(highlight=False, soft_wrap=True).print(render.to_text(diagnostics, files), end="")
