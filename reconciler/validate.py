"""``reconciler validate``: every problem in a repository's Score files and configuration.

The same loading code serves the planner; this module only decides which files to read and adds
the checks that span files (a workload name used twice).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from reconciler.catalogue import Code
from reconciler.config.loader import CONFIG_FILE, load_config
from reconciler.config.models import Config
from reconciler.diagnostics import Diagnostic, Severity, sorted_diagnostics
from reconciler.score.loader import LoadedWorkload, load_workloads
from reconciler.tree import Tree, matches


@dataclass(frozen=True, slots=True)
class Report:
    diagnostics: tuple[Diagnostic, ...]
    files: int
    workloads: tuple[LoadedWorkload, ...] = ()


def discover(tree: Tree, config: Config) -> list[str]:
    """The Score files of a repository, as its configuration's globs select them."""
    return [p for p in tree.files() if matches(p, list(config.workloads), list(config.exclude))]


def validate_tree(tree: Tree, only: Sequence[str] | None = None) -> Report:
    """Validate a repository, or just the files in ``only`` (repository-relative paths)."""
    loaded_config = load_config(tree)
    config = loaded_config.config or Config.default()
    diagnostics: list[Diagnostic] = []
    files = 0
    if only is None or CONFIG_FILE in only:
        diagnostics.extend(loaded_config.diagnostics)
        files += int(loaded_config.present)
    if only is None:
        paths = discover(tree, config)
        if not paths:
            diagnostics.append(
                Diagnostic(
                    Code.NO_SCORE_FILES,
                    "no Score files match " + ", ".join(config.workloads),
                    severity=Severity.WARNING,
                    file=CONFIG_FILE if loaded_config.present else None,
                )
            )
    else:
        paths = [p for p in only if p != CONFIG_FILE]
    workloads = list(load_workloads([(tree, path) for path in paths]))
    files += len(workloads)
    for loaded in workloads:
        diagnostics.extend(loaded.diagnostics)
    diagnostics.extend(check_unique_names(workloads))
    return Report(tuple(sorted_diagnostics(diagnostics)), files, tuple(workloads))


def check_unique_names(workloads: Iterable[LoadedWorkload]) -> list[Diagnostic]:
    """Workload names identify workloads in the store and in resource identities: one each."""
    first: dict[str, LoadedWorkload] = {}
    problems = []
    for loaded in workloads:
        name = loaded.name
        if name is None or loaded.document is None:
            continue
        if name not in first:
            first[name] = loaded
            continue
        original = first[name]
        assert original.document is not None
        mark = original.document.positions.nearest(("metadata", "name"))
        problems.append(
            loaded.document.diagnostic(
                Code.DUPLICATE_WORKLOAD,
                f"metadata.name: workload '{name}' is also defined in {original.file}:{mark.line}",
                ("metadata", "name"),
            )
        )
    return problems
