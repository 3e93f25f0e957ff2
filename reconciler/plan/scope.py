"""Which workloads a plan's changes belong to, and the part of a plan some workloads need.

The daemon queues work per (environment, workload), so a commit's plan is cut along workloads:

- a workload's own action belongs to it;
- a resource to create or change belongs to every workload that consumes it, and to whatever
  those workloads' resources depend on (a run for one consumer provisions a shared resource;
  provisioning is idempotent, so another consumer's run finds it done);
- a resource to delete belongs to the workload that brought it (its recorded
  ``source_workload``); one without a known owner belongs to every run, since deleting what is
  already gone does nothing.

The changes of a commit are "keyed" by the workloads that own them: a workload's key, a
changed resource's ``source_workload``, a deleted resource's recorded owner. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import replace

from reconciler.desired.model import DesiredState
from reconciler.diagnostics import Diagnostic
from reconciler.plan.model import Action, ActionKind, Plan, Subject


def changed_workloads(
    plan: Plan, desired: DesiredState | None, deleted_owners: Mapping[str, str]
) -> frozenset[str]:
    """The workloads whose keys cover every change in ``plan``.

    ``deleted_owners`` maps each resource the plan deletes to the workload that brought it, as
    recorded. An ownerless deletion is keyed by no workload: every scoped run carries it.
    """
    sources = {r.uid: r.source_workload for r in desired.resources} if desired else {}
    keys: set[str] = set()
    for action in plan.changes():
        if action.kind is Subject.WORKLOAD:
            keys.add(action.id)
        elif action.action is ActionKind.DELETE:
            owner = deleted_owners.get(action.id, "")
            if owner:
                keys.add(owner)
        elif sources.get(action.id):
            keys.add(sources[action.id])
    return frozenset(keys)


def needed_resources(desired: DesiredState, scope: Collection[str]) -> frozenset[str]:
    """The resources ``scope``'s workloads use, with everything those resources depend on."""
    by_uid = {r.uid: r for r in desired.resources}
    wanted: set[str] = set()
    stack = [
        r.uid
        for r in desired.resources
        if r.source_workload in scope or any(c in scope for c in r.consumers)
    ]
    while stack:
        uid = stack.pop()
        if uid in wanted:
            continue
        wanted.add(uid)
        resource = by_uid.get(uid)
        if resource is not None:
            stack.extend(resource.depends_on)
    return frozenset(wanted)


def restrict(
    plan: Plan,
    desired: DesiredState | None,
    scope: Collection[str],
    deleted_owners: Mapping[str, str],
) -> Plan:
    """The actions of ``plan`` that a run for the workloads in ``scope`` must carry out."""
    resources = needed_resources(desired, scope) if desired is not None else frozenset()

    def belongs(action: Action) -> bool:
        if action.kind is Subject.WORKLOAD:
            return action.id in scope
        if action.action is ActionKind.DELETE:
            owner = deleted_owners.get(action.id, "")
            return not owner or owner in scope
        return action.id in resources

    return replace(plan, actions=tuple(a for a in plan.actions if belongs(a)))


def scoped_diagnostics(
    diagnostics: Iterable[Diagnostic], files: Collection[str]
) -> tuple[Diagnostic, ...]:
    """The diagnostics a scoped run answers for: those in its workloads' files, or in none."""
    return tuple(d for d in diagnostics if d.file is None or d.file in files)
