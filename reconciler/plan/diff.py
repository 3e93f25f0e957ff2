"""``diff(desired, recorded) -> Plan``: what must be created, changed and destroyed.

Pure: it compares values and returns values. Secrets never reach it in plain text (the desired
state carries references and markers), and every value it puts in a change goes through
``redact`` so that a plan can be printed, posted to a pull request or stored as it is.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import compress, repeat
from operator import attrgetter, is_not
from typing import Any, Protocol, overload

from reconciler.chunked import Chunked
from reconciler.desired.model import DesiredResource, DesiredState, DesiredWorkload
from reconciler.desired.secrets import SCHEME, redact
from reconciler.diagnostics import Diagnostic
from reconciler.plan.model import Action, ActionKind, Change, Plan, Subject
from reconciler.schemacheck import PLAIN_KEY, format_path


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
    @property
    def status(self) -> str: ...


UNPUBLISHED = "Unpublished"
"""A recorded workload's status while the workload target does not hold its last change: set
when a run applies or removes it, replaced when that run publishes (``Synced``, or the record
goes). A run killed in between leaves it, and the next plan carries the change out again."""

NOT_PUBLISHED: dict[str, Any] = {"reason": "recorded, not yet published to the target"}
"""The detail of a workload's update made only to publish it: Terraform's "tainted" line."""


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


def redacted_leaves(value: Any) -> dict[str, Any]:
    """``flatten(redact(value))`` in one walk: no redacted copy of the tree, no dictionary per
    level, each path written once from its parent's. A plan that creates a thousand workloads
    calls it once per workload and resource, on every leaf of their specs."""
    out: dict[str, Any] = {}
    if isinstance(value, _CONTAINERS):
        if value:
            _leaves_into(value, "", out)
        return out
    out[format_path(())] = redact(value)
    return out


def _leaves_into(
    value: Mapping[Any, Any] | list[Any] | tuple[Any, ...], path: str, out: dict[str, Any]
) -> None:
    """The leaves of a non-empty map or list under ``path`` (as ``format_path`` writes it).

    JSON's own types are told apart by their exact type first: ``isinstance`` against
    ``Mapping`` is an abstract class's check, slow for every number and flag of a spec, and
    ``redact`` gives those back as they are."""
    if type(value) is dict or isinstance(value, Mapping):
        named: Iterable[tuple[str, Any]] = [
            (_key_path(path, str(key)), value[key]) for key in sorted(value, key=str)
        ]
    else:
        named = [(f"{path}[{index}]", item) for index, item in enumerate(value)]
    for where, item in named:
        kind = type(item)
        if kind is str:  # most leaves; a secret's text is never in a plan
            out[where] = item if SCHEME not in item else redact(item)
        elif kind in _PLAIN:  # as ``redact`` gives them back
            out[where] = item
        elif kind is dict or kind is list or isinstance(item, _CONTAINERS):
            if item:
                _leaves_into(item, where, out)
            else:  # an empty container is a leaf, as redact copies it
                out[where] = {} if isinstance(item, Mapping) else []
        else:
            out[where] = redact(item)


_PLAIN = frozenset({int, float, bool, type(None)})
"""JSON's scalars other than text, by exact type: ``redact`` returns them unchanged."""

_CONTAINERS = (Mapping, list, tuple)

_KEY_SUFFIXES: dict[str, str] = {}
"""A key as ``format_path`` writes it after a parent, ``.name`` or ``["x.y"]``, by key: the
same few keys (``containers``, ``variables``, ``image``) recur in every spec of a plan."""


def _key_path(path: str, name: str) -> str:
    """``path`` and then the key ``name``, as ``format_path`` writes them."""
    suffix = _KEY_SUFFIXES.get(name)
    if suffix is None:
        suffix = f".{name}" if PLAIN_KEY.match(name) else f"[{json.dumps(name)}]"
        if len(_KEY_SUFFIXES) < _KEY_SUFFIXES_KEPT:
            _KEY_SUFFIXES[name] = suffix
    if path:
        return path + suffix
    return name if suffix[0] == "." else suffix


_KEY_SUFFIXES_KEPT = 4096


class LeafChanges(Sequence[Change]):
    """Every leaf of one value as a change, all new (a creation) or all gone (a deletion),
    worked out each time they are read.

    A first plan creates every workload and resource, and nothing that carries it out reads
    their attributes one by one: only renderings (``reconciler plan``, previews) and a run's
    stored copy of its plan (``to_dict``) do, once each. So a creation or a deletion keeps
    what its changes come from (the desired or recorded object, frozen, which the diff's memo
    and the store keep anyway), not some twenty-five ``Change`` objects and their path strings
    per workload: a first plan of a thousand workloads makes none of its 24,500 changes, and
    keeps 56 bytes per action instead of about 3.6 KB per workload. Equal to the tuple of its
    changes.
    """

    __slots__ = ("_created", "_field", "_holder")

    def __init__(self, holder: object, field: str, *, created: bool) -> None:
        self._holder = holder
        self._field = field
        """``spec`` (a workload's value as it is) or ``params`` (a resource's, under "params")."""
        self._created = created

    def _changes(self) -> tuple[Change, ...]:
        value = getattr(self._holder, self._field)
        if self._field == "params":
            value = {"params": value}
        return field_changes({}, value) if self._created else field_changes(value, {})

    def __iter__(self) -> Iterator[Change]:
        return iter(self._changes())

    def to_dicts(self) -> list[dict[str, Any]]:
        """``[c.to_dict() for c in self]`` without a ``Change`` per leaf: a run's stored plan
        is the one reader of every leaf of a first plan."""
        value = getattr(self._holder, self._field)
        leaves = redacted_leaves({"params": value} if self._field == "params" else value)
        if self._created:
            return [{"path": path, "old": None, "new": leaves[path]} for path in sorted(leaves)]
        return [{"path": path, "old": leaves[path], "new": None} for path in sorted(leaves)]

    def __len__(self) -> int:
        return len(self._changes())

    @overload
    def __getitem__(self, index: int) -> Change: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[Change, ...]: ...
    def __getitem__(self, index: int | slice) -> Change | tuple[Change, ...]:
        return self._changes()[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, LeafChanges | tuple):
            return self._changes() == tuple(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # equal to a tuple, yet not hashable as one

    def __repr__(self) -> str:
        return repr(self._changes())


def field_changes(old: Any, new: Any) -> tuple[Change, ...]:
    """Attribute-level differences, redacted, sorted by path."""
    before, after = redacted_leaves(old), redacted_leaves(new)
    if not before:  # a creation: every leaf is new (most of a first plan)
        return tuple([Change(path, None, after[path]) for path in sorted(after)])
    if not after:  # a deletion: every leaf goes
        return tuple([Change(path, before[path], None) for path in sorted(before)])
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
        created = LeafChanges(want, "params", created=True)
        return Action(ActionKind.CREATE, Subject.RESOURCE, want.uid, depends, created, None, detail)
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
        created = LeafChanges(want, "spec", created=True)
        return Action(ActionKind.CREATE, Subject.WORKLOAD, want.name, depends, created, want.file)
    if have.spec_hash != want.spec_hash:
        changes = field_changes(have.spec, want.spec)
        hidden = max(len(flatten(want.spec)) - len(changes), 0)
        return Action(
            ActionKind.UPDATE, Subject.WORKLOAD, want.name, depends, changes, want.file, {}, hidden
        )
    if have.status == UNPUBLISHED:
        # The same spec, not published by the run that recorded it: yet (it is still running)
        # or ever (its process was killed). Nothing else would put it on the target.
        unchanged = len(flatten(want.spec))
        return Action(
            ActionKind.UPDATE,
            Subject.WORKLOAD,
            want.name,
            depends,
            (),
            want.file,
            NOT_PUBLISHED,
            unchanged,
        )
    return Action(ActionKind.NOOP, Subject.WORKLOAD, want.name, depends, (), want.file)


_UID = attrgetter("uid")
_NAME = attrgetter("name")
_LEAVING = frozenset((ActionKind.DELETE, ActionKind.UPDATE))
"""Workload actions that resources to be deleted wait for: any of them may have used one."""


class ActionMemo:
    """The actions of the last ``diff``, with the desired and recorded objects they came from.

    An action is a function of its desired value, its recorded value and the steps it depends
    on. When the next diff places the same resources in the same order (and so gives every
    unchanged one the same dependencies), it takes the last actions in bulk and recomputes only
    those whose desired or recorded object is another one (by identity: frozen values, kept
    alive here): a scan of identities, not a comparison of values, per unchanged object. When
    the desired sequences are the incremental builder's ``Chunked`` versions of the last ones,
    the scan skips every chunk the builder left alone, and the actions are kept in chunks too:
    a one-workload commit's diff does not visit every resource and workload.
    """

    __slots__ = ("lock", "resources", "workloads")

    def __init__(self) -> None:
        self.resources = _Block()
        self.workloads = _Block()
        self.lock = threading.Lock()
        """Held by a diff for its whole length: it patches the memo's lists in place."""


class _Block:
    """One kind of action of the last diff, in plan order, aligned with what it came from."""

    __slots__ = (
        "_position",
        "actions",
        "haves",
        "ids",
        "leaving",
        "placed",
        "present",
        "recorded",
        "steps",
        "wants",
    )

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.wants: Sequence[object] = ()
        self.haves: list[object] = []
        self.present = 0
        """How many of ``haves`` are recorded (not None), counted as they change."""
        self.actions: Chunked[Action] = Chunked()
        self.placed: frozenset[str] = frozenset()
        """For workloads: the resources placed before them (every workload depends on some)."""
        self.steps: dict[str, str] = {}
        """For resources: the step of each, by uid."""
        self.leaving: dict[int, str] = {}
        """For workloads: the steps of the updates, by position (resources wait for them)."""
        self._position: dict[str, int] | None = None
        self.recorded: Mapping[str, object] | None = None
        """The recorded mapping the last diff was given: the same object, the same records."""

    def position(self) -> dict[str, int]:
        """Each id's position, made when first needed after the ids changed."""
        if self._position is None:
            self._position = {u: i for i, u in enumerate(self.ids)}
        return self._position

    def gone(self, recorded: Mapping[str, object]) -> list[str]:
        """The recorded ids no longer wanted, sorted: none, without building a set of every
        id, when as many wanted ids were found recorded as there are recorded."""
        if self.present == len(recorded):
            return []
        return sorted(set(recorded).difference(self.ids))

    def scan(
        self, wanted: Sequence[Any], recorded: Mapping[str, object], id_of: Callable[[Any], str]
    ) -> tuple[list[str], list[object], list[int] | None]:
        """Ids and recorded objects of ``wanted``, and the positions whose desired or recorded
        object is not the last diff's (None: the ids changed, look at everything). With the
        same recorded mapping as last time, only the desired objects are scanned (in C), and
        the recorded objects of those positions are looked up again in place (the lists are
        the memo's own: a plan gets its actions as a tuple)."""
        if recorded is self.recorded and len(wanted) == len(self.wants):
            positions = _moved(wanted, self.wants)
            if all(id_of(wanted[i]) == self.ids[i] for i in positions):
                haves = self.haves
                for i in positions:
                    now = recorded.get(self.ids[i])
                    self.present += (now is not None) - (haves[i] is not None)
                    haves[i] = now
                return self.ids, haves, positions
        ids = list(map(id_of, wanted))
        haves = list(map(recorded.get, ids))
        return ids, haves, self.changed(wanted, haves) if ids == self.ids else None

    def changed(self, wants: Sequence[object], haves: list[object]) -> list[int]:
        """Positions whose desired or recorded object is not the last diff's (a scan in C)."""
        found = set(_moved(wants, self.wants))
        found.update(compress(range(len(haves)), map(is_not, haves, self.haves)))
        return sorted(found)

    def keep(
        self,
        ids: list[str],
        wants: Sequence[object],
        haves: list[object],
        actions: Chunked[Action],
        recorded: Mapping[str, object],
        placed: frozenset[str] = frozenset(),
    ) -> None:
        self.recorded = recorded
        if ids is not self.ids and ids != self.ids:
            self._position = None
        if haves is not self.haves:
            self.present = sum(map(is_not, haves, repeat(None)))
        self.ids, self.wants, self.haves, self.actions, self.placed = (
            ids,
            wants,
            haves,
            actions,
            placed,
        )


def _moved(wanted: Sequence[object], before: Sequence[object]) -> list[int]:
    """The positions whose object is not ``before``'s (the same lengths): chunk by chunk for
    two versions of one ``Chunked``, else item by item (in C)."""
    if isinstance(wanted, Chunked) and isinstance(before, Chunked):
        found = wanted.changed_from(before)
        if found is not None:
            return found
    return list(compress(range(len(wanted)), map(is_not, wanted, before)))


def _depends(wanted: tuple[str, ...], step_of: Mapping[str, str]) -> tuple[str, ...]:
    if not wanted:
        return ()
    return tuple(sorted({step_of[u] for u in wanted if u in step_of}))


def _resource_actions(
    wanted: Sequence[DesiredResource],
    resources: Mapping[str, RecordedResource],
    last: _Block,
) -> tuple[Chunked[Action], dict[str, str], bool]:
    """Actions for the desired resources, in order, the step of each placed resource, and
    whether the same resources were placed in the same order as in the last diff."""
    uids, haves, positions = last.scan(wanted, resources, _UID)
    same = positions is not None
    if positions is not None:
        step_of = last.steps
        position = last.position()
        redone: dict[int, Action] = {}
        for i in positions:
            want = wanted[i]
            before = {u: step_of[u] for u in want.depends_on if position.get(u, i) < i}
            redone[i] = _resource_action(want, resources.get(want.uid), before)
        actions = last.actions.replaced(redone)
    else:
        step_of = {}
        made = []
        for want in wanted:
            made.append(_resource_action(want, resources.get(want.uid), step_of))
            step_of[want.uid] = f"resource:{want.uid}"
        actions = Chunked.of(made)
        last.steps = step_of
    last.keep(uids, wanted, haves, actions, resources)
    return actions, step_of, same


def _workload_actions(
    wanted: Sequence[DesiredWorkload],
    workloads: Mapping[str, RecordedWorkload],
    step_of: Mapping[str, str],
    same_placed: bool,
    last: _Block,
) -> Chunked[Action]:
    """Actions for the desired workloads, in order, each after the resources it uses
    (``same_placed``: the same as in the last diff)."""
    names, haves, positions = last.scan(wanted, workloads, _NAME)
    placed = last.placed if same_placed else frozenset(step_of)
    if positions is not None and (placed is last.placed or placed == last.placed):
        leaving = last.leaving
        redone: dict[int, Action] = {}
        for i in positions:
            action = redone[i] = _workload_action(wanted[i], workloads.get(names[i]), step_of)
            if action.action in _LEAVING:
                leaving[i] = action.step_id
            else:
                leaving.pop(i, None)
        actions = last.actions.replaced(redone)
    else:
        made = [_workload_action(w, workloads.get(w.name), step_of) for w in wanted]
        leaving = {i: a.step_id for i, a in enumerate(made) if a.action in _LEAVING}
        actions = Chunked.of(made)
    last.leaving = leaving
    last.keep(names, wanted, haves, actions, workloads, placed)
    return actions


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
    last = memo or ActionMemo()
    with last.lock:
        return _diff(desired, resources, workloads, commit, base_commit, diagnostics, last)


def _diff(
    desired: DesiredState,
    resources: Mapping[str, RecordedResource],
    workloads: Mapping[str, RecordedWorkload],
    commit: str,
    base_commit: str | None,
    diagnostics: Iterable[Diagnostic],
    last: ActionMemo,
) -> Plan:
    resource_actions, step_of, same = _resource_actions(
        desired.resources, resources, last.resources
    )
    workload_actions = _workload_actions(
        desired.workloads, workloads, step_of, same, last.workloads
    )
    removed_workloads = [
        Action(
            ActionKind.DELETE,
            Subject.WORKLOAD,
            name,
            (),
            LeafChanges(workloads[name], "spec", created=False),
            workloads[name].file,
        )
        for name in last.workloads.gone(workloads)
    ]
    # A resource goes after every workload that changed or went away: any of them may have used it.
    leaving = last.workloads.leaving
    workload_steps = (
        *(leaving[i] for i in sorted(leaving)),
        *(a.step_id for a in removed_workloads),
    )
    removed_resources = [
        Action(
            ActionKind.DELETE,
            Subject.RESOURCE,
            uid,
            workload_steps,
            LeafChanges(resources[uid], "params", created=False),
            None,
            {"provisioner": resources[uid].provisioner},
        )
        for uid in reversed(last.resources.gone(resources))
    ]
    return Plan(
        environment=desired.environment,
        commit=commit,
        base_commit=base_commit,
        actions=Chunked.joined(
            resource_actions, workload_actions, removed_workloads, removed_resources
        ),
        diagnostics=tuple(diagnostics),
    )
