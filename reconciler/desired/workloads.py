"""Resolve one workload's placeholders: variables, file contents and volume sources.

``build`` calls it once per workload, after priming, with each declared resource's outputs as
placeholders see them. The result is the normalised Score document without its ``resources``
(the workload's resource names map to uids instead); ``command`` and ``args`` stay as written,
as score-k8s leaves them. Pure: ``source`` files arrive as text from the caller.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from typing import Any

from reconciler.catalogue import Code
from reconciler.desired.model import DesiredWorkload, digest
from reconciler.diagnostics import Diagnostic
from reconciler.schemacheck import format_path
from reconciler.score.loader import LoadedWorkload
from reconciler.score.models import Workload
from reconciler.score.placeholders import (
    KnownAfterApply,
    PlaceholderProblem,
    Resolver,
    substitute,
    substitute_string,
    workload_resolver,
)
from reconciler.yamldoc import Path, YamlDocument

SERVICE_NAME_ANNOTATION = "k8s.score.dev/service-name"


def file_sources(loaded: LoadedWorkload) -> list[str]:
    """The repository paths of the ``source`` files a workload reads, for the caller to pass in
    ``file_contents`` (relative to the Score file, normalised; links are not followed here)."""
    if loaded.workload is None:
        return []
    return sorted(
        {
            _source_path(loaded.file, spec.source)
            for _, container in sorted(loaded.workload.containers.items())
            for spec in container.files_by_target.values()
            if spec.source is not None
        }
    )


def workload_services(workloads: Sequence[Workload]) -> dict[str, Any]:
    """What provisioners see as ``workload_services``, as score-k8s builds it: per workload its
    service name (the workload's, or the ``k8s.score.dev/service-name`` annotation) and its
    ports, keyed by name and by port number as text."""
    services: dict[str, Any] = {}
    for workload in sorted(workloads, key=lambda w: w.metadata.name):
        annotations = workload.metadata.annotations or {}
        ports: dict[str, Any] = {}
        declared = workload.service.ports if workload.service and workload.service.ports else {}
        for name, port in sorted(declared.items()):
            entry = {
                "name": name,
                "port": port.port,
                "target_port": port.target_port,
                "protocol": port.protocol,
            }
            ports[name] = entry
            ports.setdefault(str(port.port), entry)
        name = workload.metadata.name
        services[name] = {
            "service_name": annotations.get(SERVICE_NAME_ANNOTATION, name),
            "ports": ports,
        }
    return services


def resolve_workload(
    loaded: LoadedWorkload,
    uids: Mapping[str, str],
    outputs: Mapping[str, Mapping[str, object] | None],
    file_contents: Mapping[str, str],
    problems: list[Diagnostic],
    *,
    metadata: Mapping[str, object] | None = None,
) -> DesiredWorkload:
    """The workload with placeholders resolved; problems are appended to ``problems``.

    ``uids`` maps its resource names to uids; ``outputs`` maps them to outputs (None: not known).
    ``metadata`` is the workload's metadata as placeholders read it, when the caller has it
    already (the incremental builder keeps it per workload); else it is dumped from the model.
    """
    assert loaded.workload is not None
    assert loaded.document is not None
    workload, document = loaded.workload, loaded.document
    if metadata is None:
        metadata = workload_metadata(workload)
    resolve = workload_resolver(metadata, outputs)
    resolve_source = workload_resolver(metadata, outputs, uids=dict(uids))
    spec = workload.to_data()
    spec.pop("resources", None)
    sources: set[str] = set()
    found: list[PlaceholderProblem] = []
    texts: dict[str, Any] = {}
    for name, container in sorted(spec["containers"].items()):
        where: Path = ("containers", name)
        found.extend(_variables(container, where, resolve, texts))
        found.extend(
            _files(
                loaded.file, document, container, where, resolve, file_contents, sources, problems
            )
        )
        found.extend(_volumes(container, where, resolve_source))
    problems.extend(placeholder_problems(document, found))
    return DesiredWorkload(
        name=workload.metadata.name,
        file=loaded.file,
        spec=spec,
        resources=dict(sorted(uids.items())),
        depends_on=tuple(sorted(set(uids.values()))),
        spec_hash=digest(spec),
        sources=(loaded.file, *sorted(sources)),
    )


def workload_metadata(workload: Workload) -> dict[str, Any]:
    """The workload's metadata as ``${metadata.*}`` placeholders read it: the keys given."""
    return workload.metadata.model_dump(mode="json", by_alias=True, exclude_unset=True)


def _variables(
    container: dict[str, Any], where: Path, resolve: Resolver, texts: dict[str, Any]
) -> list[PlaceholderProblem]:
    """Resolve the container's variables in place. ``texts`` holds the values this workload
    resolved already without a problem: its containers often share variables (a database URL
    in each), and a text resolves to the same value wherever it is in one workload."""
    variables = container.get("variables")
    if not variables:
        return []
    if not all(type(k) is str and type(v) is str for k, v in variables.items()):
        resolved, found = substitute(variables, resolve, (*where, "variables"))
        container["variables"] = jsonable(resolved)
        return found
    # What the model gives (names and values are text): ``substitute`` then ``jsonable`` in
    # one pass, in name order, with a path made only for a value holding a placeholder.
    out: dict[str, Any] = {}
    found = []
    for name in sorted(variables):
        value = variables[name]
        if "$" in value:
            known = texts.get(value)
            if known is not None:
                out[name] = known
                continue
            text, problems = substitute_string(value, resolve, (*where, "variables", name))
            resolved = jsonable(text)
            if problems:
                found.extend(problems)
            else:
                texts[value] = resolved
            value = resolved
        out[name] = value
    container["variables"] = out
    return found


def _files(
    score_file: str,
    document: YamlDocument,
    container: dict[str, Any],
    where: Path,
    resolve: Resolver,
    file_contents: Mapping[str, str],
    sources: set[str],
    problems: list[Diagnostic],
) -> list[PlaceholderProblem]:
    found: list[PlaceholderProblem] = []
    for target, spec in sorted((container.get("files") or {}).items()):
        path: Path = (*where, "files", target)
        if "source" in spec:
            source = _source_path(score_file, spec.pop("source"))
            if source not in file_contents:
                message = f"{format_path((*path, 'source'))}: '{source}' was not read"
                problems.append(
                    document.diagnostic(Code.FILE_SOURCE_MISSING, message, (*path, "source"))
                )
                continue
            sources.add(source)
            spec["content"] = file_contents[source]
        if "content" in spec and spec.get("noExpand") is not True:
            resolved, problems_here = substitute(spec["content"], resolve, (*path, "content"))
            spec["content"] = jsonable(resolved)
            found.extend(problems_here)
    return found


def _volumes(container: dict[str, Any], where: Path, resolve: Resolver) -> list[PlaceholderProblem]:
    found: list[PlaceholderProblem] = []
    for target, spec in sorted((container.get("volumes") or {}).items()):
        resolved, problems_here = substitute(
            spec["source"], resolve, (*where, "volumes", target, "source")
        )
        spec["source"] = jsonable(resolved)
        found.extend(problems_here)
    return found


def _source_path(score_file: str, source: str) -> str:
    return posixpath.normpath(posixpath.join(posixpath.dirname(score_file), source))


def placeholder_problems(
    document: YamlDocument, found: Sequence[PlaceholderProblem]
) -> list[Diagnostic]:
    return [
        document.diagnostic(p.code, f"{format_path(p.path)}: {p.message}", p.path) for p in found
    ]


def jsonable(value: object) -> Any:
    """Resolved values as JSON: a value known after apply becomes the text users see for it."""
    if type(value) is str:  # most values: nothing to convert
        return value
    if isinstance(value, KnownAfterApply):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value
