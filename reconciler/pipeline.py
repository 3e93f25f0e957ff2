"""The flow of one commit, top to bottom: source, load, desired, plan.

This is the one place that wires the stages together (``gitops`` → ``score``/``config`` →
``desired`` → ``plan``, with ``store`` for what was recorded), so that the whole flow reads as a
list of named steps. Each stage is pure or owns its I/O; this module only passes values along.

Loading is incremental: the tree diff between the environment's last reconciled commit and the
new one names the changed files, and only workloads whose Score file or file sources changed are
parsed again. The others come back from the store as the normalised documents recorded with them,
so planning a one-workload commit parses one workload, whatever the size of the repository.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from reconciler.catalogue import Code
from reconciler.config.loader import CONFIG_FILE, LoadedConfig, load_config
from reconciler.config.models import Config, Environment
from reconciler.desired.build import build
from reconciler.desired.model import DesiredResource, DesiredState
from reconciler.desired.provisioners import (
    ProvisionerSet,
    builtin_provisioner_files,
    load_provisioners,
)
from reconciler.diagnostics import Diagnostic, has_errors, sorted_diagnostics
from reconciler.gitops.changes import ChangeSet
from reconciler.gitops.repository import Repository
from reconciler.gitops.tree import GitTree
from reconciler.plan.diff import diff
from reconciler.plan.model import Plan
from reconciler.score.loader import LoadedWorkload, load_workload
from reconciler.score.models import Workload
from reconciler.store.records import RecordedState, ResourceRecord, WorkloadRecord
from reconciler.store.store import Store
from reconciler.tree import matches
from reconciler.validate import check_unique_names
from reconciler.yamldoc import Positions, YamlDocument


@dataclass(frozen=True, slots=True)
class Source:
    """One commit of the repository, with its configuration."""

    commit: str
    tree: GitTree
    config: Config
    diagnostics: tuple[Diagnostic, ...]


@dataclass(frozen=True, slots=True)
class EnvironmentPlan:
    environment: str
    plan: Plan | None
    desired: DesiredState | None
    diagnostics: tuple[Diagnostic, ...]
    parsed: tuple[str, ...] = ()
    """The Score files parsed for this plan (the rest came from recorded state)."""
    provisioners: ProvisionerSet | None = None
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Each workload's normalised Score document, as the store records it with the workload."""

    @property
    def failed(self) -> bool:
        return has_errors(self.diagnostics)


@dataclass(slots=True)
class _Loaded:
    workloads: list[LoadedWorkload] = field(default_factory=list)
    parsed: list[str] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)


def open_source(repo: Repository, ref: str) -> Source:
    """Resolve ``ref`` and read the configuration of that commit."""
    commit = repo.resolve(ref)
    tree = repo.tree(commit)
    loaded: LoadedConfig = load_config(tree)
    config = loaded.config or Config.default()
    return Source(commit, tree, config, tuple(loaded.diagnostics))


def select_environments(config: Config, wanted: str | None) -> list[tuple[str, Environment]]:
    environments = list(config.sorted_environments())
    if wanted is None:
        return environments
    return [(name, env) for name, env in environments if name == wanted]


def unknown_environment(config: Config, wanted: str) -> Diagnostic:
    known = ", ".join(name for name, _ in config.sorted_environments())
    return Diagnostic(
        Code.UNKNOWN_ENVIRONMENT,
        f"environment '{wanted}' is not defined (defined: {known})",
        file=CONFIG_FILE,
    )


def plan_environment(
    repo: Repository, store: Store, source: Source, name: str, env: Environment
) -> EnvironmentPlan:
    """Plan one environment for the commit in ``source``; never raises for bad input."""
    if has_errors(source.diagnostics):
        return EnvironmentPlan(name, None, None, source.diagnostics)
    recorded = store.recorded(name)
    base = store.last_commit(name)
    changes = repo.changed_paths(base, source.commit) if base else None
    provisioner_files = _provisioner_files(source)
    full = changes is None or _config_changed(changes, source.config, provisioner_files)
    # load: parse what changed, take the rest from what was recorded with the last commit
    loaded = _load_workloads(source, env, recorded, None if full else changes)
    # provisioners: the repository's files in reconciler.yaml order, then the built-in ones
    provisioners, problems = load_provisioners(
        [(p, source.tree.read(p)) for p in provisioner_files] + builtin_provisioner_files()
    )
    loaded.diagnostics.extend(problems)
    ok = [w for w in loaded.workloads if w.workload is not None]
    # desired: identities, provisioners, ordering and placeholders, as pure values
    desired, problems = build(
        environment=name,
        variables=dict(env.variables),
        workloads=ok,
        provisioners=provisioners,
        file_contents=_file_contents(source.tree, ok),
        outputs=_recorded_outputs(recorded),
    )
    loaded.diagnostics.extend(problems)
    diagnostics = tuple(sorted_diagnostics([*source.diagnostics, *loaded.diagnostics]))
    # plan: compare with the recorded state, leaving alone whatever failed to load
    kept_resources, kept_workloads = _protect_failed(recorded, loaded.workloads)
    plan = diff(
        desired,
        kept_resources,
        kept_workloads,
        commit=source.commit,
        base_commit=base,
        diagnostics=diagnostics,
    )
    sources = {w.name: w.workload.to_data() for w in ok if w.name is not None and w.workload}
    return EnvironmentPlan(
        name, plan, desired, diagnostics, tuple(loaded.parsed), provisioners, sources
    )


def _provisioner_files(source: Source) -> list[str]:
    """Provisioner files in the order reconciler.yaml lists their patterns, sorted within one."""
    files = list(source.tree.files())
    ordered: list[str] = []
    for pattern in source.config.provisioners:
        ordered.extend(p for p in files if matches(p, [pattern]) and p not in ordered)
    return ordered


def _config_changed(changes: ChangeSet, config: Config, provisioner_files: Sequence[str]) -> bool:
    """Configuration or provisioners changed: every workload may plan differently."""
    touched = changes.all
    if CONFIG_FILE in touched or touched & set(provisioner_files):
        return True
    return any(matches(p, list(config.provisioners)) for p in touched)


def _in_environment(path: str, config: Config, env: Environment) -> bool:
    if not matches(path, list(config.workloads), list(config.exclude)):
        return False
    return not env.workloads or matches(path, list(env.workloads))


def _load_workloads(
    source: Source,
    env: Environment,
    recorded: RecordedState,
    changes: ChangeSet | None,
) -> _Loaded:
    out = _Loaded()
    if changes is None:
        paths = [p for p in source.tree.files() if _in_environment(p, source.config, env)]
        reuse: dict[str, WorkloadRecord] = {}
    else:
        reuse = _reusable(recorded, changes)
        paths = sorted(
            {r.file for r in recorded.workloads.values() if r.file not in changes.deleted}
            | {
                p
                for p in changes.added | changes.modified
                if _in_environment(p, source.config, env)
            }
        )
    for path in paths:
        record = reuse.get(path)
        if record is not None and record.source:
            out.workloads.append(_from_record(record))
            continue
        loaded = load_workload(source.tree, path)
        out.parsed.append(path)
        out.workloads.append(loaded)
        out.diagnostics.extend(loaded.diagnostics)
    out.diagnostics.extend(check_unique_names(out.workloads))
    return out


def _reusable(recorded: RecordedState, changes: ChangeSet) -> dict[str, WorkloadRecord]:
    """Recorded workloads none of whose files (Score file, file sources) changed."""
    touched = changes.all
    return {
        r.file: r
        for r in recorded.workloads.values()
        if r.file not in touched and not (set(r.sources) & touched)
    }


def _from_record(record: WorkloadRecord) -> LoadedWorkload:
    """A workload as recorded, unparsed: its document has no positions (it was valid then)."""
    data = dict(record.source)
    document = YamlDocument(record.file, data, Positions())
    return LoadedWorkload(record.file, document, Workload.from_data(data), [])


def _file_contents(tree: GitTree, workloads: Iterable[LoadedWorkload]) -> dict[str, str]:
    """The text of every ``files.*.source``, keyed by repository path, for the pure builder."""
    contents: dict[str, str] = {}
    for loaded in workloads:
        if loaded.workload is None:
            continue
        base = posixpath.dirname(loaded.file)
        for container in loaded.workload.containers.values():
            for spec in container.files_by_target.values():
                if spec.source is None:
                    continue
                path = posixpath.normpath(posixpath.join(base, spec.source))
                try:
                    contents[path] = tree.read(path).decode("utf-8")
                except (OSError, UnicodeDecodeError):
                    continue  # validation reported it; the builder reports the missing content
    return contents


def _recorded_outputs(recorded: RecordedState) -> dict[str, Mapping[str, object] | None]:
    """Known outputs: the plain ones and, for secrets, their references (never the values)."""
    return {
        uid: known_outputs(record) if record.outputs or record.secret_refs else None
        for uid, record in recorded.resources.items()
    }


def known_outputs(record: ResourceRecord) -> dict[str, object]:
    """Outputs and secret references; keys starting with '_' are the drivers' own (a seed)."""
    merged = {**record.outputs, **record.secret_refs}
    return {k: v for k, v in merged.items() if not k.startswith("_")}


def _protect_failed(
    recorded: RecordedState, workloads: Sequence[LoadedWorkload]
) -> tuple[dict[str, ResourceRecord], dict[str, WorkloadRecord]]:
    """Hide from the diff what belongs to a file that failed to load.

    A Score file with an error says nothing about what its workload should be: planning its
    deletion (and its resources') would destroy a running application because of a typo.
    """
    failed_files = {w.file for w in workloads if w.workload is None}
    failed = {n for n, r in recorded.workloads.items() if r.file in failed_files}
    kept_workloads = {n: r for n, r in recorded.workloads.items() if n not in failed}
    kept_resources = {
        uid: r for uid, r in recorded.resources.items() if r.source_workload not in failed
    }
    return kept_resources, kept_workloads


def record_desired(
    store: Store, desired: DesiredState, commit: str, workloads: Sequence[LoadedWorkload]
) -> None:
    """Record ``desired`` as reconciled at ``commit``: what apply writes once every step succeeded.

    Kept here so that the plan's incremental loading and its tests share one definition of what
    a reconciled commit leaves in the store.
    """
    by_name = {w.name: w for w in workloads if w.workload is not None}
    with store.transaction():
        for resource in desired.resources:
            store.save_resource(desired.environment, resource_record(resource))
        for wl in desired.workloads:
            loaded = by_name[wl.name]
            assert loaded.workload is not None
            store.save_workload(
                desired.environment,
                WorkloadRecord(
                    name=wl.name,
                    commit=commit,
                    file=wl.file,
                    spec_hash=wl.spec_hash,
                    spec=wl.spec,
                    sources=dict.fromkeys(wl.sources, ""),
                    source=loaded.workload.to_data(),
                    status="Synced",
                ),
            )
        recorded = store.recorded(desired.environment)
        for name in set(recorded.workloads) - {w.name for w in desired.workloads}:
            store.delete_workload(desired.environment, name)
        for uid in set(recorded.resources) - {r.uid for r in desired.resources}:
            store.delete_resource(desired.environment, uid)
        store.set_last_commit(desired.environment, commit)


def resource_record(
    resource: DesiredResource,
    *,
    outputs: Mapping[str, Any] | None = None,
    secret_refs: Mapping[str, str] | None = None,
    state: Mapping[str, Any] | None = None,
) -> ResourceRecord:
    """What the store keeps of a resource once provisioned (secrets as references only)."""
    return ResourceRecord(
        uid=resource.uid,
        type=resource.type,
        class_=resource.class_,
        res_id=resource.id,
        provisioner=resource.provisioner,
        params_hash=resource.params_hash,
        params=resource.params,
        state=dict(state or {}),
        outputs=dict(outputs or {}),
        secret_refs=dict(secret_refs or {}),
        source_workload=resource.source_workload,
    )
