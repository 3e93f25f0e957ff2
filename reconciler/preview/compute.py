"""Plan a pull request: the head commit against the state its base would leave, per environment.

When the base is the commit an environment last reconciled, that environment's recorded state
(read only) is what merging changes, so the head is planned against it, as ``reconciler plan``
would after the merge. Otherwise (a CI runner with no store, a base that moved on) the base's
own desired state stands in for it: the base is planned on an empty scratch store, recorded
there as if it had been applied, and the head is planned against that. Either way nothing is
applied and the user's store is never written; the scratch store lives in a temporary folder.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Mapping
from contextlib import ExitStack
from pathlib import Path

from reconciler.config.loader import CONFIG_FILE
from reconciler.config.models import Config, Environment
from reconciler.desired.model import DesiredState
from reconciler.diagnostics import Diagnostic, Severity, sorted_diagnostics
from reconciler.gitops.errors import GitError
from reconciler.gitops.repository import Repository
from reconciler.pipeline import (
    EnvironmentPlan,
    Source,
    open_source,
    plan_environment,
    record_desired,
    select_environments,
    unknown_environment,
)
from reconciler.plan.model import Action, Subject
from reconciler.preview.manifests import RenderedFiles, manifests_diff, render_files
from reconciler.preview.model import Basis, EnvironmentPreview, Preview, WorkloadPreview
from reconciler.score.loader import LoadedWorkload, load_workload
from reconciler.score.models import Workload
from reconciler.store.store import Store
from reconciler.tree import matches

SCRATCH_STORE = "preview.db"


class PreviewError(Exception):
    """The preview could not start: a ref that does not resolve, an unreadable repository."""

    def __init__(self, error: GitError) -> None:
        super().__init__(error.message)
        self.code = error.code
        self.message = error.message


def preview(
    repo: Repository,
    base_ref: str,
    head_ref: str,
    *,
    environment: str | None = None,
    recorded: Store | None = None,
) -> Preview:
    """The preview of merging ``head_ref`` into ``base_ref``; never raises for bad input.

    ``recorded`` is the user's store, read only; without it every environment is planned
    against the base's desired state.
    """
    try:
        base = open_source(repo, base_ref)
        head = open_source(repo, head_ref)
    except GitError as exc:
        raise PreviewError(exc) from exc
    selected = select_environments(head.config, environment)
    problems: list[Diagnostic] = []
    if environment is not None and not selected:
        problems.append(unknown_environment(head.config, environment))
    base_problems: list[Diagnostic] = list(_errors(base.diagnostics))
    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="reconciler-")))
        scratch = stack.enter_context(Store.open(f"sqlite:///{folder / SCRATCH_STORE}"))
        environments = []
        for name, env in selected:
            result, base_diags = _environment(repo, scratch, recorded, base, head, name, env)
            environments.append(result)
            base_problems.extend(base_diags)
    return Preview(
        base_ref=base_ref,
        base_commit=base.commit,
        head_ref=head_ref,
        head_commit=head.commit,
        environments=tuple(environments),
        diagnostics=tuple(problems),
        base_diagnostics=tuple(_unique(base_problems)),
    )


def _environment(
    repo: Repository,
    scratch: Store,
    recorded: Store | None,
    base: Source,
    head: Source,
    name: str,
    env: Environment,
) -> tuple[EnvironmentPreview, list[Diagnostic]]:
    base_env = dict(base.config.sorted_environments()).get(name)
    base_plan = None
    if base_env is not None:  # an environment the head adds starts from nothing
        base_plan = plan_environment(repo, scratch, base, name, base_env)
    base_desired = base_plan.desired if base_plan is not None else None
    basis: Basis = "base"
    against = scratch
    if recorded is not None and recorded.last_commit(name) == base.commit:
        basis, against = "recorded", recorded
    elif base_plan is not None and base_desired is not None:
        record_desired(scratch, base_desired, base.commit, loaded_workloads(base_plan))
    planned = plan_environment(repo, against, head, name, env)
    base_files, base_render = _render_all(against, base_desired, base.commit)
    head_files, head_render = _render_all(against, planned.desired, head.commit)
    diagnostics = (*planned.diagnostics, *head_render)
    failed = {
        path: load_workload(head.tree, path).name or path
        for path in _failed_files(diagnostics, head.config, env)
    }
    workloads = _workloads(planned, base_desired, against, name, failed, base_files, head_files)
    result = EnvironmentPreview(
        environment=name,
        basis=basis,
        base_commit=base.commit,
        head_commit=head.commit,
        plan=planned.plan,
        workloads=workloads,
        diagnostics=tuple(_unique(diagnostics)),
    )
    base_diags = list(_errors(base_plan.diagnostics)) if base_plan is not None else []
    return result, [*base_diags, *base_render]


def loaded_workloads(planned: EnvironmentPlan) -> list[LoadedWorkload]:
    """The base's workloads as ``record_desired`` takes them: typed, from their documents."""
    assert planned.desired is not None
    files = {w.name: w.file for w in planned.desired.workloads}
    return [
        LoadedWorkload(files.get(name, ""), None, Workload.from_data(dict(data)), [])
        for name, data in planned.sources.items()
    ]


def _render_all(
    store: Store, desired: DesiredState | None, commit: str
) -> tuple[dict[str, RenderedFiles], list[Diagnostic]]:
    if desired is None:
        return {}, []
    files: dict[str, RenderedFiles] = {}
    problems: list[Diagnostic] = []
    for workload in desired.workloads:
        rendered, problem = render_files(store, desired, workload, commit)
        files[workload.name] = rendered
        if problem is not None:
            problems.append(problem)
    return files, problems


def _workloads(
    planned: EnvironmentPlan,
    base_desired: DesiredState | None,
    against: Store,
    environment: str,
    failed: Mapping[str, str],
    base_files: Mapping[str, RenderedFiles],
    head_files: Mapping[str, RenderedFiles],
) -> tuple[WorkloadPreview, ...]:
    """Group the plan by workload (its own action and its resources'), with manifests diffs."""
    previous = against.recorded(environment)
    owner_of = {uid: r.source_workload or "" for uid, r in previous.resources.items()}
    file_of = {n: r.file for n, r in previous.workloads.items()}
    if base_desired is not None:
        owner_of.update({r.uid: r.source_workload for r in base_desired.resources})
        file_of.update({w.name: w.file for w in base_desired.workloads})
    if planned.desired is not None:
        file_of.update({w.name: w.file for w in planned.desired.workloads})
    groups: dict[str, list[Action]] = {}
    for action in planned.plan.actions if planned.plan is not None else ():
        owner = _owner(action, owner_of)
        groups.setdefault(owner, []).append(action)
        if action.kind is Subject.WORKLOAD and action.file:
            file_of.setdefault(action.id, action.file)
    for path, name in failed.items():
        file_of.setdefault(name, path)
        groups.setdefault(name, [])
    names = sorted(set(groups) | set(base_files) | set(head_files))
    out = []
    for name in names:
        file = file_of.get(name)
        broken = file is not None and file in failed
        text = "" if broken else manifests_diff(name, base_files.get(name), head_files.get(name))
        actions = tuple(groups.get(name, ()))
        out.append(WorkloadPreview(name, file, actions, text, broken))
    return tuple(out)


def _owner(action: Action, owner_of: Mapping[str, str]) -> str:
    if action.kind is Subject.WORKLOAD:
        return action.id
    owner = action.detail.get("workload")
    if isinstance(owner, str) and owner:
        return owner
    return owner_of.get(action.id) or "(removed resources)"


def _failed_files(diagnostics: Iterable[Diagnostic], config: Config, env: Environment) -> set[str]:
    """Score files of this environment with an error: their workloads are left out of the plan."""
    out = set()
    for d in diagnostics:
        if d.severity is not Severity.ERROR or d.file is None or d.file == CONFIG_FILE:
            continue
        wanted = matches(d.file, list(config.workloads), list(config.exclude))
        if wanted and (not env.workloads or matches(d.file, list(env.workloads))):
            out.add(d.file)
    return out


def _errors(diagnostics: Iterable[Diagnostic]) -> Iterable[Diagnostic]:
    return (d for d in diagnostics if d.severity is Severity.ERROR)


def _unique(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    return sorted_diagnostics(diagnostics)
