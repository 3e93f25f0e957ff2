"""Build the desired state of one environment from loaded workloads: ``build(...)``.

The steps, in order, each collecting its problems rather than stopping:

1. prime: give every declared resource its identity and merge shared declarations, as score-go
   does (workloads by name, resources by name; the first declaration is the source workload, a
   later one with params takes it over; different params or metadata conflict);
2. match each resource to its provisioner (first match in precedence order);
3. resolve params in the source workload's context, and order resources by the
   ``${resources...}`` references in their params;
4. resolve each workload's variables, files and volume sources (``workloads.py``).

Outputs come from the caller (recorded by earlier runs); an output not known yet makes the value
``(known after apply)``. Pure: the caller passes file contents and outputs in. Who calls it: the
planner, once per environment.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from reconciler.catalogue import Code
from reconciler.desired import graph
from reconciler.desired.identity import ResourceUid, uid_text
from reconciler.desired.model import (
    DesiredResource,
    DesiredState,
    digest,
)
from reconciler.desired.provisioners import Provisioner, ProvisionerSet
from reconciler.desired.secrets import embed_refs
from reconciler.desired.workloads import (
    jsonable,
    placeholder_problems,
    resolve_workload,
    workload_metadata,
    workload_services,
)
from reconciler.diagnostics import Diagnostic, Severity
from reconciler.schemacheck import format_path
from reconciler.score.loader import LoadedWorkload
from reconciler.score.models import Resource, Workload
from reconciler.score.placeholders import (
    KNOWN_AFTER_APPLY,
    Resolver,
    find_refs,
    split_ref,
    substitute,
    workload_resolver,
)
from reconciler.yamldoc import Path, YamlDocument

Outputs = Mapping[str, Mapping[str, object] | None]


@dataclass(frozen=True, slots=True)
class _Definition:
    """One declaration of a resource by one workload: what priming reads of it (its type,
    class, id, params and metadata) and the document that places its problems. Not the typed
    ``Resource``: the incremental builder keeps every declaration between plans, and a typed
    model with its metadata model weighs several times what priming reads of it."""

    workload: str
    name: str
    type: str
    class_: str | None
    id: str | None
    params: dict[str, Any] | None
    """The declared params (a copy of the top level), or None when none or empty."""
    metadata: dict[str, Any] | None
    """The declared metadata as given, or None when none or empty."""
    document: YamlDocument

    @classmethod
    def of(
        cls, workload: str, name: str, resource: Resource, document: YamlDocument
    ) -> _Definition:
        return cls(
            workload,
            name,
            resource.type,
            resource.class_,
            resource.id,
            _params(resource),
            _resource_metadata(resource),
            document,
        )

    def diagnostic(
        self, code: Code, message: str, *rest: str | int, on_key: bool = False, **kw: Any
    ) -> Diagnostic:
        path: Path = ("resources", self.name, *rest)
        return self.document.diagnostic(
            code, f"{format_path(path)}: {message}", path, on_key=on_key, **kw
        )


@dataclass(slots=True)
class _Primed:
    """A resource while priming; the first definition seeds it, later ones may take over."""

    uid: ResourceUid
    source: _Definition
    params: dict[str, Any] | None
    metadata: dict[str, Any] | None
    metadata_from: _Definition
    definitions: list[_Definition] = field(default_factory=list)

    @classmethod
    def seeded(cls, uid: ResourceUid, definition: _Definition) -> _Primed:
        """A resource as its first definition declares it."""
        params = definition.params
        return cls(
            uid,
            definition,
            None if params is None else dict(params),
            definition.metadata,
            definition,
            [definition],
        )


@dataclass(frozen=True, slots=True)
class _Loaded:
    name: str
    workload: Workload
    document: YamlDocument
    loaded: LoadedWorkload


def build(
    *,
    environment: str,
    variables: Mapping[str, str],
    workloads: Sequence[LoadedWorkload],
    provisioners: ProvisionerSet,
    file_contents: Mapping[str, str],
    outputs: Outputs,
) -> tuple[DesiredState, list[Diagnostic]]:
    """The desired state of ``environment`` and every problem met on the way.

    Workloads that failed to load (no typed workload) are skipped: their diagnostics come from
    loading. ``outputs`` maps a uid to its recorded outputs (secret ones as ``secret://``
    references), or to None (or nothing) when the resource is not provisioned yet.
    """
    loaded = _usable(workloads)
    problems: list[Diagnostic] = []
    primed, uids = _prime(loaded, problems)
    matched = {uid: _match(p, provisioners, problems) for uid, p in primed.items()}
    views = {uid: _output_view(outputs.get(uid), matched[uid]) for uid in primed}
    by_name = {w.name: w for w in loaded}

    def outputs_of(workload: str) -> dict[str, Mapping[str, object] | None]:
        return {name: views[uid] for name, uid in uids[workload].items()}

    resources: dict[str, DesiredResource] = {}
    for uid, item in sorted(primed.items()):
        source = by_name[item.source.workload]
        resolve = workload_resolver(_metadata(source.workload), outputs_of(source.name))
        resources[uid] = _resource(item, matched[uid], resolve, uids[source.name], problems)
    ordering = graph.order({uid: r.depends_on for uid, r in resources.items()})
    problems.extend(_cycle_problems(ordering, primed))
    desired = [
        resolve_workload(w.loaded, uids[w.name], outputs_of(w.name), file_contents, problems)
        for w in loaded
    ]
    state = DesiredState(
        environment=environment,
        resources=tuple(resources[uid] for uid in (*ordering.order, *ordering.blocked)),
        workloads=tuple(desired),
        workload_services=workload_services([w.workload for w in loaded]),
        variables=dict(sorted(variables.items())),
    )
    return state, problems


# -- 1. priming ---------------------------------------------------------------------------------


def _usable(workloads: Sequence[LoadedWorkload]) -> list[_Loaded]:
    usable = [
        _Loaded(w.workload.metadata.name, w.workload, w.document, w)
        for w in workloads
        if w.workload is not None and w.document is not None
    ]
    return sorted(usable, key=lambda w: (w.name, w.loaded.file))


def _prime(
    loaded: Sequence[_Loaded], problems: list[Diagnostic]
) -> tuple[dict[str, _Primed], dict[str, dict[str, str]]]:
    primed: dict[str, _Primed] = {}
    uids: dict[str, dict[str, str]] = {}
    for workload in loaded:
        uids[workload.name] = {}
        for name, resource in sorted((workload.workload.resources or {}).items()):
            uid = ResourceUid.of(workload.name, name, resource.type, resource.class_, resource.id)
            definition = _Definition.of(workload.name, name, resource, workload.document)
            text = uid_text(uid)
            uids[workload.name][name] = text
            existing = primed.get(text)
            if existing is None:
                primed[text] = _Primed.seeded(uid, definition)
            else:
                existing.definitions.append(definition)
                problems.extend(_merge(existing, definition))
    return primed, uids


def _merge(existing: _Primed, definition: _Definition) -> Iterator[Diagnostic]:
    """score-go's rules for a second declaration of a shared resource."""
    params = None if definition.params is None else dict(definition.params)
    if params:
        if existing.params and existing.params != params:
            yield _conflict(existing, definition, "params", existing.source)
        else:
            existing.params = params
            existing.source = definition
    metadata = definition.metadata
    if metadata:
        if existing.metadata and existing.metadata != metadata:
            yield _conflict(existing, definition, "metadata", existing.metadata_from)
        else:
            existing.metadata = metadata
            existing.metadata_from = definition


def _conflict(
    existing: _Primed, definition: _Definition, what: str, first: _Definition
) -> Diagnostic:
    mark = first.document.positions.nearest(("resources", first.name, what), prefer_key=True)
    message = (
        f"resource '{existing.uid}': multiple definitions with different {what} "
        f"(workload '{first.workload}' declares it at {first.document.file}:{mark.line})"
    )
    return definition.diagnostic(Code.SHARED_RESOURCE_CONFLICT, message, what, on_key=True)


def _params(resource: Resource) -> dict[str, Any] | None:
    return dict(resource.params) if resource.params else None


def _resource_metadata(resource: Resource) -> dict[str, Any] | None:
    if resource.metadata is None:
        return None
    dumped = resource.metadata.model_dump(mode="json", by_alias=True, exclude_unset=True)
    return dumped or None


def _metadata(workload: Workload) -> dict[str, Any]:
    return workload_metadata(workload)


# -- 2. provisioners ------------------------------------------------------------------------------


def _match(
    item: _Primed, provisioners: ProvisionerSet, problems: list[Diagnostic]
) -> Provisioner | None:
    provisioner = provisioners.match(item.uid)
    source = item.source
    if provisioner is None:
        message = f"resource '{item.uid}' is not supported by any provisioner"
        problems.append(source.diagnostic(Code.NO_PROVISIONER, message, "type"))
        return None
    supported = provisioner.supported_params
    for key in sorted(item.params or {}) if supported else ():
        if key not in supported:
            message = (
                f"provisioner '{provisioner.uri}' does not support param '{key}' "
                f"(it supports: {', '.join(supported)})"
            )
            problems.append(
                source.diagnostic(
                    Code.UNSUPPORTED_PARAM,
                    message,
                    "params",
                    key,
                    on_key=True,
                    severity=Severity.WARNING,
                )
            )
    return provisioner


def _output_view(
    recorded: Mapping[str, object] | None, provisioner: Provisioner | None
) -> Mapping[str, object] | None:
    """Outputs as placeholders see them.

    Recorded secret references become markers, so that they survive inside strings. Before the
    first apply, a provisioner that lists its outputs gives each a value known after apply, so
    a key it does not list is an error now rather than at apply time.
    """
    if recorded is not None:
        view = embed_refs(recorded)
        return view if isinstance(view, Mapping) else None
    if provisioner is not None and provisioner.expected_outputs:
        return dict.fromkeys(provisioner.expected_outputs, KNOWN_AFTER_APPLY)
    return None


# -- 3. resources ----------------------------------------------------------------------------------


_NONE: dict[str, Any] = {}
"""Every desired resource's empty params or metadata (most have neither; values are never
changed once built): the planner keeps a desired resource per resource between plans."""


def _resource(
    item: _Primed,
    provisioner: Provisioner | None,
    resolve: Resolver,
    names: Mapping[str, str],
    problems: list[Diagnostic],
) -> DesiredResource:
    source = item.source
    where: Path = ("resources", source.name, "params")
    resolved, found = substitute(item.params or {}, resolve, where)
    problems.extend(placeholder_problems(source.document, found))
    params = jsonable(resolved)
    assert isinstance(params, dict)
    consumers = sorted({d.workload for d in item.definitions})
    return DesiredResource(
        uid=uid_text(item.uid),
        type=item.uid.type,
        class_=item.uid.class_,
        id=item.uid.id,
        source_workload=source.workload,
        consumers=tuple(consumers),
        provisioner=provisioner.uri if provisioner else "",
        params=params or _NONE,
        metadata=item.metadata or _NONE,
        depends_on=tuple(sorted(_referenced(item.params or {}, names))),
        shared=source.id is not None,
        params_hash=digest(params),
        secret_outputs=provisioner.secret_outputs if provisioner else (),
        expected_outputs=provisioner.expected_outputs if provisioner else (),
    )


def _referenced(value: object, names: Mapping[str, str]) -> set[str]:
    """The uids of the resources that ``${resources.NAME...}`` placeholders in ``value`` name."""
    if isinstance(value, str):
        found = set()
        for ref in find_refs(value):
            parts = split_ref(ref)
            if len(parts) >= 2 and parts[0] == "resources" and parts[1] in names:
                found.add(names[parts[1]])
        return found
    if isinstance(value, Mapping):
        return set().union(*(_referenced(v, names) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(_referenced(v, names) for v in value))
    return set()


def _cycle_problems(ordering: graph.Ordering, primed: Mapping[str, _Primed]) -> list[Diagnostic]:
    problems = []
    for members in ordering.cycles:
        first = primed[members[0]].source
        message = "a cycle exists involving resource param placeholders: " + ", ".join(members)
        problems.append(first.diagnostic(Code.RESOURCE_CYCLE, message, "params", on_key=True))
    return problems
