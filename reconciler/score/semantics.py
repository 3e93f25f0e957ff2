"""Checks on one Score workload that a JSON Schema cannot express.

They run on plain data even when the schema found problems, skipping parts of the wrong shape,
so that a user sees every problem in one pass. Reading ``files.*.source`` needs the repository,
which comes in as a ``Tree``; everything else is pure.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator, Mapping
from typing import Any

from reconciler.catalogue import Code
from reconciler.diagnostics import Diagnostic, Severity
from reconciler.schemacheck import format_path
from reconciler.score.placeholders import PlaceholderProblem, check_text
from reconciler.tree import Tree
from reconciler.yamldoc import Path, YamlDocument


def _containers(data: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    containers = data.get("containers")
    if not isinstance(containers, dict):
        return {}
    return {k: v for k, v in sorted(containers.items()) if isinstance(v, dict)}


def check_before(doc: YamlDocument) -> Iterator[Diagnostic]:
    """``before`` must name sibling containers and must not wait in a circle."""
    containers = _containers(doc.data)
    edges: dict[str, list[str]] = {}
    for name, container in containers.items():
        before = container.get("before")
        if not isinstance(before, dict):
            continue
        for other in sorted(before):
            path = ("containers", name, "before", other)
            if other not in containers:
                yield doc.diagnostic(
                    Code.BEFORE_UNKNOWN_CONTAINER,
                    f"{format_path(path)}: no container '{other}' in this workload",
                    path,
                    on_key=True,
                )
            else:
                edges.setdefault(name, []).append(other)
    cycle = _find_cycle(edges)
    if cycle:
        path = ("containers", cycle[0], "before", cycle[1])
        loop = " -> ".join([*cycle, cycle[0]])
        yield doc.diagnostic(
            Code.BEFORE_CYCLE,
            f"{format_path(path)}: containers wait on each other in a cycle: {loop}",
            path,
            on_key=True,
        )


def _find_cycle(edges: Mapping[str, list[str]]) -> list[str] | None:
    """One cycle in the graph, as the list of nodes on it, found by depth-first search.

    Nearly every workload has no ``before``: then there is no search at all."""
    if not edges:
        return None
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    for start in sorted(edges):
        if start not in state and (found := _visit(start, edges, state, [])):
            return found
    return None


def _visit(
    node: str, edges: Mapping[str, list[str]], state: dict[str, int], stack: list[str]
) -> list[str] | None:
    """``_find_cycle``'s search from ``node``. A function of its own, not a closure: a closure
    that calls itself is a reference cycle, one per Score file loaded, and a plan of 1,000
    workloads left nothing else for the cyclic collector."""
    state[node] = 1
    stack.append(node)
    for nxt in edges.get(node, []):
        if state.get(nxt) == 1:
            return stack[stack.index(nxt) :]
        if nxt not in state and (found := _visit(nxt, edges, state, stack)):
            return found
    stack.pop()
    state[node] = 2
    return None


def _file_entries(container: Mapping[str, Any]) -> Iterator[tuple[Path, dict[str, Any]]]:
    files = container.get("files")
    if isinstance(files, dict):
        for target, spec in sorted(files.items()):
            if isinstance(spec, dict):
                yield (target,), spec
    elif isinstance(files, list):
        for i, spec in enumerate(files):
            if isinstance(spec, dict):
                yield (i,), spec


def check_deprecated_forms(doc: YamlDocument) -> Iterator[Diagnostic]:
    """The list forms still validate, but each item needs a target, and a target is used once."""
    for name, container in _containers(doc.data).items():
        for field in ("files", "volumes"):
            items = container.get(field)
            if not isinstance(items, list):
                continue
            path: Path = ("containers", name, field)
            yield doc.diagnostic(
                Code.DEPRECATED_LIST_FORM,
                f"{format_path(path)}: the list form of '{field}' is deprecated",
                path,
                on_key=True,
                severity=Severity.WARNING,
            )
            yield from _check_targets(doc, path, items)


def _check_targets(doc: YamlDocument, path: Path, items: list[Any]) -> Iterator[Diagnostic]:
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            continue
        target = item.get("target")
        where = format_path((*path, i))
        if not isinstance(target, str) or not target:
            message = f"{where}: missing required field 'target' (the list form needs it)"
            yield doc.diagnostic(Code.MISSING_FIELD, message, (*path, i))
        elif target in seen:
            message = f"{where}: target '{target}' is also used by item {seen[target]}"
            yield doc.diagnostic(Code.DUPLICATE_KEY, message, (*path, i, "target"))
        else:
            seen[target] = i


def check_file_sources(
    doc: YamlDocument, tree: Tree, metadata: Mapping[str, Any], resources: frozenset[str]
) -> Iterator[Diagnostic]:
    """A ``source`` is a file inside the repository, relative to the Score file, and readable.

    Its content is expanded like inline ``content`` (unless ``noExpand``), so placeholders in it
    are checked too, and reported at the ``source`` that pulls it in.
    """
    base = posixpath.dirname(doc.file)
    for name, container in _containers(doc.data).items():
        for sub, spec in _file_entries(container):
            source = spec.get("source")
            if not isinstance(source, str) or not source:
                continue
            path: Path = ("containers", name, "files", *sub, "source")
            where = format_path(path)
            target = _inside(base, source)
            if target is None:
                yield doc.diagnostic(
                    Code.FILE_SOURCE_ESCAPES, f"{where}: '{source}' is outside the repository", path
                )
                continue
            try:
                resolved = tree.resolve(target)
            except FileNotFoundError:
                yield doc.diagnostic(
                    Code.FILE_SOURCE_MISSING, f"{where}: '{source}' does not exist ({target})", path
                )
                continue
            if resolved is None:
                yield doc.diagnostic(
                    Code.FILE_SOURCE_ESCAPES,
                    f"{where}: '{source}' is a link that leads outside the repository",
                    path,
                )
                continue
            if spec.get("noExpand") is True:
                continue
            yield from _check_source_content(doc, tree, resolved, path, metadata, resources)


def _check_source_content(
    doc: YamlDocument,
    tree: Tree,
    resolved: str,
    path: Path,
    metadata: Mapping[str, Any],
    resources: frozenset[str],
) -> Iterator[Diagnostic]:
    where = format_path(path)
    try:
        text = tree.read(resolved).decode("utf-8")
    except (OSError, UnicodeDecodeError):
        yield doc.diagnostic(
            Code.FILE_SOURCE_UNREADABLE, f"{where}: '{resolved}' is not UTF-8 text", path
        )
        return
    problems: list[PlaceholderProblem] = check_text(text, metadata, resources, path)
    for problem in problems:
        message = f"{where} ({resolved}): {problem.message}"
        yield doc.diagnostic(problem.code, message, path, hint=problem.hint)


def _inside(base: str, source: str) -> str | None:
    """The repository path of ``source`` relative to ``base``; None if it leaves the root."""
    if source.startswith("/") or posixpath.isabs(source):
        return None
    joined = posixpath.normpath(posixpath.join(base, source))
    if joined == ".." or joined.startswith("../"):
        return None
    return joined
