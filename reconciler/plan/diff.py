"""``diff(desired, recorded) -> Plan``: what must be created, changed and destroyed.

Pure: it compares values and returns values. Secrets never reach it in plain text (the desired
state carries references and markers), and every value it puts in a change goes through
``redact`` so that a plan can be printed, posted to a pull request or stored as it is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from reconciler.desired.model import DesiredResource, DesiredState, DesiredWorkload
from reconciler.desired.secrets import redact
from reconciler.diagnostics import Diagnostic
from reconciler.plan.model import Action, ActionKind, Change, Plan, Subject
from reconciler.schemacheck import format_path


class RecordedResource(Protocol):
    """What the store remembers of a provisioned resource (the fields planning needs)."""

    @property
    def uid(self) -> str: ...
    @property
    def provisioner(self) -> str: ...
    @property
    def params(self) -> Mapping[str, Any]: ...
    @property
    def params_hash(self) -> str: ...


class RecordedWorkload(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def file(self) -> str: ...
    @property
    def spec(self) -> Mapping[str, Any]: ...
    @property
    def spec_hash(self) -> str: ...


def flatten(value: Any, prefix: tuple[str | int, ...] = ()) -> dict[str, Any]:
    """Leaves of nested maps and lists by path (``a.b["x.y"][0]``); empty containers are leaves."""
    if not prefix and isinstance(value, Mapping | list) and not value:
        return {}
    if isinstance(value, Mapping) and value:
        out: dict[str, Any] = {}
        for key in sorted(value, key=str):
            out.update(flatten(value[key], (*prefix, str(key))))
        return out
    if isinstance(value, list) and value:
        out = {}
        for i, item in enumerate(value):
            out.update(flatten(item, (*prefix, i)))
        return out
    return {format_path(prefix): value}


def field_changes(old: Any, new: Any) -> tuple[Change, ...]:
    """Attribute-level differences, redacted, sorted by path."""
    before, after = flatten(redact(old)), flatten(redact(new))
    changes = []
    for path in sorted(set(before) | set(after)):
        if before.get(path, _ABSENT) != after.get(path, _ABSENT):
            changes.append(Change(path, before.get(path), after.get(path)))
    return tuple(changes)


_ABSENT = object()


def _resource_action(
    want: DesiredResource, have: RecordedResource | None, step_of: Mapping[str, str]
) -> Action:
    depends = tuple(sorted(step_of[u] for u in want.depends_on if u in step_of))
    detail = {"type": want.type, "provisioner": want.provisioner, "workload": want.source_workload}
    if have is None:
        changes = field_changes({}, {"params": want.params})
        return Action(ActionKind.CREATE, Subject.RESOURCE, want.uid, depends, changes, None, detail)
    if have.provisioner != want.provisioner:
        replaced = Change("provisioner", have.provisioner, want.provisioner, True)
        changes = (replaced, *field_changes({"params": have.params}, {"params": want.params}))
        return Action(
            ActionKind.REPLACE, Subject.RESOURCE, want.uid, depends, changes, None, detail
        )
    if have.params_hash != want.params_hash:
        changes = field_changes({"params": have.params}, {"params": want.params})
        hidden = len(flatten({"params": want.params})) - len(changes)
        return Action(
            ActionKind.UPDATE, Subject.RESOURCE, want.uid, depends, changes, None, detail, hidden
        )
    return Action(ActionKind.NOOP, Subject.RESOURCE, want.uid, depends, (), None, detail)


def _workload_action(
    want: DesiredWorkload, have: RecordedWorkload | None, step_of: Mapping[str, str]
) -> Action:
    depends = tuple(sorted({step_of[u] for u in want.depends_on if u in step_of}))
    if have is None:
        changes = field_changes({}, want.spec)
        return Action(ActionKind.CREATE, Subject.WORKLOAD, want.name, depends, changes, want.file)
    if have.spec_hash != want.spec_hash:
        changes = field_changes(have.spec, want.spec)
        hidden = max(len(flatten(want.spec)) - len(changes), 0)
        return Action(
            ActionKind.UPDATE, Subject.WORKLOAD, want.name, depends, changes, want.file, {}, hidden
        )
    return Action(ActionKind.NOOP, Subject.WORKLOAD, want.name, depends, (), want.file)


class ActionMemo:
    """The actions of the last ``diff``, with the desired and recorded objects they came from.

    An action is a function of its desired value, its recorded value and the steps it depends
    on; given the same two objects (by identity: frozen values, kept alive here) and the same
    dependencies, the next diff reuses it instead of comparing the values again.
    """

    __slots__ = ("placed", "resources", "workloads")

    def __init__(self) -> None:
        self.resources: dict[str, tuple[object, object, Action]] = {}
        self.workloads: dict[str, tuple[object, object, Action]] = {}
        self.placed: frozenset[str] = frozenset()
        """The resources the last diff placed: every workload depends on some of them."""


def _depends(wanted: tuple[str, ...], step_of: Mapping[str, str]) -> tuple[str, ...]:
    if not wanted:
        return ()
    return tuple(sorted({step_of[u] for u in wanted if u in step_of}))


def diff(
    desired: DesiredState,
    resources: Mapping[str, RecordedResource],
    workloads: Mapping[str, RecordedWorkload],
    *,
    commit: str,
    base_commit: str | None = None,
    diagnostics: Iterable[Diagnostic] = (),
    memo: ActionMemo | None = None,
) -> Plan:
    """The plan that takes the recorded state to the desired one.

    Order: resources in dependency order, then workloads (each after its resources), then what
    goes away: workloads first, then the resources they used, so nothing is destroyed while a
    workload still points at it.
    """
    actions: list[Action] = []
    step_of: dict[str, str] = {}
    last = memo or ActionMemo()
    seen_resources: dict[str, tuple[object, object, Action]] = {}
    for want in desired.resources:
        have = resources.get(want.uid)
        hit = last.resources.get(want.uid)
        if (
            hit is not None
            and hit[0] is want
            and hit[1] is have
            and hit[2].depends_on == _depends(want.depends_on, step_of)
        ):
            action = hit[2]
        else:
            action = _resource_action(want, have, step_of)
        seen_resources[want.uid] = (want, have, action)
        step_of[want.uid] = f"resource:{want.uid}"
        actions.append(action)
    seen_workloads: dict[str, tuple[object, object, Action]] = {}
    placed = frozenset(step_of)
    same_placed = placed == last.placed
    for wl in desired.workloads:
        had = workloads.get(wl.name)
        hit = last.workloads.get(wl.name)
        if (
            hit is not None
            and hit[0] is wl
            and hit[1] is had
            and (same_placed or hit[2].depends_on == _depends(wl.depends_on, step_of))
        ):
            action = hit[2]
        else:
            action = _workload_action(wl, had, step_of)
        seen_workloads[wl.name] = (wl, had, action)
        actions.append(action)
    if memo is not None:
        memo.resources, memo.workloads, memo.placed = seen_resources, seen_workloads, placed

    wanted_workloads = {w.name for w in desired.workloads}
    removed_workloads = [
        Action(
            ActionKind.DELETE,
            Subject.WORKLOAD,
            name,
            (),
            field_changes(workloads[name].spec, {}),
            workloads[name].file,
        )
        for name in sorted(set(workloads) - wanted_workloads)
    ]
    # A resource goes after every workload that changed or went away: any of them may have used it.
    workload_steps = tuple(
        a.step_id
        for a in [*actions, *removed_workloads]
        if a.kind is Subject.WORKLOAD and a.action in (ActionKind.DELETE, ActionKind.UPDATE)
    )
    wanted_resources = {r.uid for r in desired.resources}
    removed_resources = [
        Action(
            ActionKind.DELETE,
            Subject.RESOURCE,
            uid,
            workload_steps,
            field_changes({"params": resources[uid].params}, {}),
            None,
            {"provisioner": resources[uid].provisioner},
        )
        for uid in sorted(set(resources) - wanted_resources, reverse=True)
    ]
    return Plan(
        environment=desired.environment,
        commit=commit,
        base_commit=base_commit,
        actions=(*actions, *removed_workloads, *removed_resources),
        diagnostics=tuple(diagnostics),
    )
