"""``Incremental``: ``build`` that redoes only what a change touches, with the same result.

A plan after a one-workload commit must cost the same whatever the size of the repository. The
builder keeps what it computed for the previous plan of an environment (per workload: its typed
model, resource identities, resolved spec and problems; per resource: its priming, provisioner,
output view and resolved params; the ordering) and, given the next plan's inputs, redoes:

- the workloads whose input object changed (a re-parsed file, a record written since), and the
  resources they declare, with every other declaration of those (shared) resources;
- the resources whose recorded outputs changed, and every workload that uses them (placeholders
  see outputs), with the resources those workloads are the source of whose params hold a
  placeholder (params see outputs too; params without one resolve alike whatever the outputs);
- the ordering, only when a resource came, went or changed what it refers to.

Inputs are compared by identity: the store hands back the same record objects while nothing was
written (``Store.recorded``), and an object is kept alive by the builder while it is remembered,
so an equal id always means the same object. Keys the caller calls ``transient`` (parsed files:
a typed model and a document each, thousands of them in a first plan) are remembered by weak
reference instead: one that is gone cannot come back, so the next build sees a new key there and
types it, and the builder does not keep every parsed file of the last plan alive. A change of
environment, variables or provisioners starts afresh. Duplicate workload names (an error
already) fall back to ``build``. The result equals ``build``'s for the same inputs (a test
proves it); problems come in another order, which ``sorted_diagnostics`` makes irrelevant.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import compress
from operator import is_not
from typing import Any, Generic, TypeVar

from reconciler.chunked import Chunked
from reconciler.desired import graph
from reconciler.desired.build import (
    _cycle_problems,
    _Definition,
    _Loaded,
    _match,
    _merge,
    _metadata,
    _output_view,
    _Primed,
    _resource,
    build,
)
from reconciler.desired.identity import ResourceUid, uid_text
from reconciler.desired.model import DesiredResource, DesiredState, DesiredWorkload
from reconciler.desired.provisioners import Provisioner, ProvisionerSet
from reconciler.desired.workloads import resolve_workload, workload_services
from reconciler.diagnostics import Diagnostic
from reconciler.score.loader import LoadedWorkload
from reconciler.score.placeholders import workload_resolver

K = TypeVar("K")
"""A workload's input: the same object, the same content."""
R = TypeVar("R")
"""A recorded resource, as the caller keeps it; ``view_of`` turns it into known outputs."""

View = Mapping[str, object] | None


@dataclass(slots=True)
class Work:
    """What the last build did: workloads typed and resolved, resources resolved (by name)."""

    typed: list[str] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)
    resources: list[str] = field(default_factory=list)
    full: bool = True


@dataclass(slots=True)
class _Workload:
    held: object
    """Its key, or a weak reference to it for a transient key (``Incremental.transient``)."""
    loaded: _Loaded | None
    """Its typed model and document while a build uses them; dropped after (``load(key)``
    types it again when a later build resolves it): a typed model is the largest thing a
    workload would otherwise keep, and a record key holds the document already."""
    uids: dict[str, str]
    declared: dict[str, _Definition]
    """Its resource declarations by name (what priming a shared resource reads)."""
    metadata: dict[str, Any]
    desired: DesiredWorkload | None = None
    problems: tuple[Diagnostic, ...] = ()
    service: dict[str, Any] = field(default_factory=dict)
    contents: tuple[tuple[str, str], ...] = ()
    """The ``files.*.source`` texts its resolution read."""

    def key(self) -> object | None:
        """The key, or None once a transient key is gone (no caller can pass it again)."""
        held = self.held
        return held() if isinstance(held, weakref.ref) else held


@dataclass(slots=True)
class _Resource:
    primed: _Primed
    provisioner: Provisioner | None
    record: object
    view: View
    primed_problems: tuple[Diagnostic, ...] = ()
    desired: DesiredResource | None = None
    problems: tuple[Diagnostic, ...] = ()
    fixed: bool = False
    """Its params hold no placeholder: outputs cannot change what it resolves to."""


@dataclass(frozen=True, slots=True)
class _Inputs:
    """The workloads a build is given: names and keys side by side, in the caller's order,
    those of this plan first, then those reused from an earlier one (the same ``reused``
    lists again mean the same workloads, without a look at each)."""

    names: Sequence[str] = ()
    keys: Sequence[Any] = ()
    reused_names: Sequence[str] = ()
    reused_keys: Sequence[Any] = ()

    def all_names(self) -> list[str]:
        return [*self.names, *self.reused_names]

    def all_keys(self) -> list[Any]:
        return [*self.keys, *self.reused_keys]

    def same_names(self, other: _Inputs) -> bool:
        """The same names in the same parts (unique then too)."""
        return self.names == other.names and (
            self.reused_names is other.reused_names or self.reused_names == other.reused_names
        )


@dataclass(slots=True)
class _Snapshot:
    environment: str
    variables: dict[str, str]
    provisioners: ProvisionerSet
    workloads: dict[str, _Workload] = field(default_factory=dict)
    resources: dict[str, _Resource] = field(default_factory=dict)
    declarers: dict[str, set[str]] = field(default_factory=dict)
    ordering: graph.Ordering | None = None
    cycle_problems: list[Diagnostic] = field(default_factory=list)
    services: dict[str, Any] = field(default_factory=dict)
    state_resources: Chunked[DesiredResource] = field(default_factory=Chunked)
    state_workloads: Chunked[DesiredWorkload] = field(default_factory=Chunked)
    """The state's resources and workloads, in chunks: the next build replaces the items it
    resolved again and shares the rest (and the diff, comparing chunks, finds them)."""
    resource_at: dict[str, int] = field(default_factory=dict)
    """Each resource's position in ``state_resources`` (the same while the order holds)."""
    workload_at: dict[str, int] = field(default_factory=dict)
    """Each workload's position in ``state_workloads`` (the same while no name comes or
    goes)."""
    problems: dict[tuple[str, str], tuple[Diagnostic, ...]] = field(default_factory=dict)
    """The problems of each workload (``("w", name)``) and resource (``("r", uid)``) that has
    some: refreshed for what a build touched, so that collecting them does not visit the rest."""
    outputs: Mapping[str, Any] | None = None
    """The recorded resources the last build saw: the same mapping again (the caller hands
    back the same object for the same records) means no output changed, without looking at
    each resource."""
    inputs: _Inputs = field(default_factory=_Inputs)
    """The workloads the last build was given, in order (transient keys as their weak
    references, which no key is: such a position is looked at again, by its ``_Workload``)."""


class Incremental(Generic[K, R]):
    """One environment's builder; call ``build`` once per plan, in any order of commits."""

    def __init__(
        self,
        view_of: Callable[[R], View],
        same: Callable[[K, K], bool] | None = None,
        transient: Callable[[K], bool] | None = None,
        retype: Callable[[K], bool] | None = None,
    ) -> None:
        """``same(old, new)``: whether two distinct keys type to the same workload (a record
        read again after the store changed, say); then its resolution is kept too, while the
        source files it read are unchanged. ``transient(key)``: whether to remember ``key``
        by weak reference only (it must accept one). ``retype(key)``: whether ``load(key)``
        types the workload anew each time (a stand-in for a parsed file): its typed model is
        then let go as soon as its declarations are read, and typed again to resolve it, so
        that a build of thousands of them does not hold every model at once."""
        self._view_of = view_of
        self._same = same
        self._transient = transient
        self._retype = retype
        self._lock = threading.Lock()
        self._last: _Snapshot | None = None
        self.work = Work()

    def build(
        self,
        *,
        environment: str,
        variables: Mapping[str, str],
        names: Sequence[str],
        keys: Sequence[K],
        reused_names: Sequence[str] = (),
        reused_keys: Sequence[K] = (),
        load: Callable[[K], LoadedWorkload],
        provisioners: ProvisionerSet,
        file_contents: Mapping[str, str],
        outputs: Mapping[str, R],
    ) -> tuple[DesiredState, list[Diagnostic]]:
        """As ``build``; ``names`` and ``keys`` are those of the usable workloads, side by
        side (two lists, not pairs: no tuple per workload), where the same ``key`` object
        means the same content, and ``load(key)`` types one when needed (a model and a
        document). ``reused_names`` and ``reused_keys`` follow them: the workloads taken
        unchanged from an earlier plan, where the same list objects as in the last build are
        taken as the same workloads without comparing each."""
        with self._lock:  # one plan at a time: the snapshot is updated in place
            return self._build(
                environment,
                variables,
                _Inputs(names, keys, reused_names, reused_keys),
                load,
                provisioners,
                file_contents,
                outputs,
            )

    def _build(
        self,
        environment: str,
        variables: Mapping[str, str],
        workloads: _Inputs,
        load: Callable[[K], LoadedWorkload],
        provisioners: ProvisionerSet,
        file_contents: Mapping[str, str],
        outputs: Mapping[str, R],
    ) -> tuple[DesiredState, list[Diagnostic]]:
        last = self._last
        known = last is not None and workloads.same_names(last.inputs)
        if not known and len(set(all_names := workloads.all_names())) != len(all_names):
            return self._fallback(
                environment,
                variables,
                [load(k) for k in workloads.all_keys()],
                provisioners,
                file_contents,
                outputs,
            )
        if (
            last is None
            or last.environment != environment
            or last.variables != dict(variables)
            or last.provisioners != provisioners
        ):
            last = _Snapshot(environment, dict(sorted(variables.items())), provisioners)
        self._last = None  # a failure half way must not leave a half-updated snapshot behind
        work = Work(full=not last.workloads)
        self._update(last, workloads, load, provisioners, file_contents, outputs, work)
        problems = [p for found in last.problems.values() for p in found]
        problems.extend(last.cycle_problems)
        state = DesiredState(
            environment=environment,
            resources=last.state_resources,
            workloads=last.state_workloads,
            workload_services=last.services,
            variables=last.variables,
        )
        self._last = last
        self.work = work
        return state, problems

    # -- the steps ------------------------------------------------------------------------------

    def _update(
        self,
        last: _Snapshot,
        workloads: _Inputs,
        load: Callable[[K], LoadedWorkload],
        provisioners: ProvisionerSet,
        file_contents: Mapping[str, str],
        outputs: Mapping[str, R],
        work: Work,
    ) -> None:
        # 1. workloads whose input changed, came or went; their declarations
        changed, affected, came_or_went = self._workloads(
            last, workloads, load, file_contents, work
        )
        # 2. resources: prime and match the affected ones; find changed output views
        viewed, reorder = self._resources(last, affected, provisioners, outputs)
        # 3. what to resolve again: changed workloads, the users of changed views, and the
        # resources whose source workload is one of those
        to_resolve = {name for name in changed if name in last.workloads}
        for uid in viewed:
            to_resolve.update(last.declarers.get(uid, ()))
        # (a resource whose params hold no placeholder resolves alike whatever the outputs:
        # it is done again only when its source workload itself changed)
        resources_to_resolve = {uid for uid in affected if uid in last.resources}
        for name in to_resolve:
            again = name in changed
            for uid in last.workloads[name].uids.values():
                entry = last.resources[uid]
                if entry.primed.source.workload == name and (
                    again or entry.desired is None or not entry.fixed
                ):
                    resources_to_resolve.add(uid)

        def outputs_of(name: str) -> dict[str, View]:
            return {n: last.resources[u].view for n, u in last.workloads[name].uids.items()}

        for uid in sorted(resources_to_resolve):
            entry = last.resources[uid]
            owner = entry.primed.source.workload
            source = last.workloads[owner]
            resolve = workload_resolver(source.metadata, outputs_of(owner))
            found: list[Diagnostic] = []
            resource = _resource(entry.primed, entry.provisioner, resolve, source.uids, found)
            if entry.desired is None or entry.desired.depends_on != resource.depends_on:
                reorder = True
            entry.desired, entry.problems = resource, tuple(found)
            work.resources.append(uid)

        # 4. ordering, when a resource came, went or refers to others differently
        if reorder:
            ordering = graph.order({u: d.depends_on for u, d in _resolved(last)})
            last.ordering = ordering
            last.cycle_problems = _cycle_problems(
                ordering, {u: e.primed for u, e in last.resources.items()}
            )
        elif last.ordering is not None and last.ordering.cycles and affected:
            last.cycle_problems = _cycle_problems(
                last.ordering, {u: e.primed for u, e in last.resources.items()}
            )
        if reorder or not last.resource_at:
            assert last.ordering is not None
            placed = (*last.ordering.order, *last.ordering.blocked)
            last.state_resources = Chunked.of(_desired(last.resources[uid]) for uid in placed)
            last.resource_at = {uid: i for i, uid in enumerate(placed)}
        elif resources_to_resolve:
            last.state_resources = last.state_resources.replaced(
                {last.resource_at[u]: _desired(last.resources[u]) for u in resources_to_resolve}
            )

        # 5. workloads
        for name in sorted(to_resolve):
            wl = last.workloads[name]
            found = []
            typed = wl.loaded
            if typed is None:  # typed again: dropped after the build that typed it
                key = wl.key()  # alive: this build was given it (a gone key is a changed one)
                assert key is not None
                typed = _typed(name, load(key))  # type: ignore[arg-type]
            wl.desired = resolve_workload(
                typed.loaded, wl.uids, outputs_of(name), file_contents, found, metadata=wl.metadata
            )
            wl.problems = tuple(found)
            wl.contents = tuple((p, file_contents[p]) for p in wl.desired.sources[1:])
            work.resolved.append(name)
        self._place_workloads(last, changed, to_resolve, not came_or_went)
        _note_problems(last, changed | to_resolve, affected | resources_to_resolve)
        for name in changed:
            typed_now = last.workloads.get(name)
            if typed_now is not None:
                typed_now.loaded = None

    @staticmethod
    def _place_workloads(
        last: _Snapshot, changed: set[str], to_resolve: set[str], same_names: bool
    ) -> None:
        """The state's workloads (by name) and services: patched where the names are the
        same as in the last build, made again when one came or went. The services are copied
        (the last state keeps its own) only when a changed workload's service is another
        value: most changes (a variable, an image) leave it alone."""
        if not same_names:
            ordered = sorted(last.workloads)
            last.state_workloads = Chunked.of(_desired_workload(last.workloads[n]) for n in ordered)
            last.workload_at = {n: i for i, n in enumerate(ordered)}
            last.services = {n: last.workloads[n].service for n in ordered}
            return
        if to_resolve:
            last.state_workloads = last.state_workloads.replaced(
                {last.workload_at[n]: _desired_workload(last.workloads[n]) for n in to_resolve}
            )
        services = {
            name: service
            for name in changed
            if (service := last.workloads[name].service) != last.services.get(name)
        }
        if services:
            last.services = {**last.services, **services}

    def _workloads(
        self,
        last: _Snapshot,
        workloads: _Inputs,
        load: Callable[[K], LoadedWorkload],
        file_contents: Mapping[str, str],
        work: Work,
    ) -> tuple[set[str], set[str], bool]:
        """The workloads whose input changed, came or went, the resources they declared or
        declare, and whether any workload came or went."""
        inputs, gone = _changed_inputs(workloads, last)
        changed = set(gone)
        affected: set[str] = set()
        for name in gone:
            entry = last.workloads.pop(name)
            affected.update(self._undeclare(last, name, entry.uids.values()))
        came = False
        own = len(workloads.names)  # positions below: this plan's own keys, which ``held`` keeps
        held = list(workloads.keys)
        for i, name, key in inputs:
            known = last.workloads.get(name)
            old = None if known is None else known.key()
            if known is not None and old is key:
                if i < own:
                    held[i] = known.held
                continue
            if (
                known is not None
                and old is not None
                and self._same is not None
                and self._same(old, key)  # type: ignore[arg-type]
                and all(file_contents.get(p) == text for p, text in known.contents)
            ):
                known.held = self._hold(key)
                if i < own:
                    held[i] = known.held
                continue
            came = came or known is None
            work.typed.append(name)
            typed = _typed(name, load(key))
            uids = _uids(typed)
            if known is not None:
                affected.update(self._undeclare(last, name, known.uids.values()))
            for uid in uids.values():
                last.declarers.setdefault(uid, set()).add(name)
            affected.update(uids.values())
            kept = self._hold(key)
            if i < own:
                held[i] = kept
            retyped = self._retype is not None and self._retype(key)
            last.workloads[name] = _Workload(
                kept,
                None if retyped else typed,
                uids,
                _declared(typed),
                _metadata(typed.workload),
                service=_service(typed),
            )
            changed.add(name)
        last.inputs = _Inputs(workloads.names, held, workloads.reused_names, workloads.reused_keys)
        return changed, affected, came or bool(gone)

    def _hold(self, key: K) -> object:
        """What a ``_Workload`` keeps of ``key``: itself, or a weak reference if transient."""
        if self._transient is not None and self._transient(key):
            return weakref.ref(key)
        return key

    def _resources(
        self,
        last: _Snapshot,
        affected: set[str],
        provisioners: ProvisionerSet,
        outputs: Mapping[str, R],
    ) -> tuple[set[str], bool]:
        viewed: set[str] = set()
        reorder = last.ordering is None
        for uid in affected:
            declared = last.declarers.get(uid)
            old = last.resources.get(uid)
            if not declared:
                last.resources.pop(uid, None)
                last.declarers.pop(uid, None)
                reorder = reorder or old is not None
                continue
            reorder = reorder or old is None
            primed, primed_problems = _prime_one(uid, sorted(declared), last.workloads)
            match_problems: list[Diagnostic] = []
            provisioner = _match(primed, provisioners, match_problems)
            record = outputs.get(uid)
            view = _output_view(self._view(record), provisioner)
            if old is None or old.view != view:
                viewed.add(uid)
            last.resources[uid] = _Resource(
                primed,
                provisioner,
                record,
                view,
                (*primed_problems, *match_problems),
                None if old is None else old.desired,
                fixed=_without_placeholders(primed.params),
            )
        if outputs is last.outputs:  # the same records as last time: no view changed
            return viewed, reorder
        last.outputs = outputs
        for uid, entry in last.resources.items():
            if uid in affected:
                continue
            record = outputs.get(uid)
            if record is entry.record:
                continue
            entry.record = record
            view = _output_view(self._view(record), entry.provisioner)
            if view != entry.view:
                entry.view = view
                viewed.add(uid)

        return viewed, reorder

    def _undeclare(self, last: _Snapshot, name: str, uids: Iterable[str]) -> set[str]:
        found = set(uids)
        for uid in found:
            declared = last.declarers.get(uid)
            if declared is not None:
                declared.discard(name)
        return found

    def _view(self, record: R | None) -> View:
        return None if record is None else self._view_of(record)

    def _fallback(
        self,
        environment: str,
        variables: Mapping[str, str],
        loaded: Sequence[LoadedWorkload],
        provisioners: ProvisionerSet,
        file_contents: Mapping[str, str],
        outputs: Mapping[str, R],
    ) -> tuple[DesiredState, list[Diagnostic]]:
        self._last = None
        views = {uid: self._view(record) for uid, record in outputs.items()}
        names = [w.name or "" for w in loaded]
        self.work = Work(typed=names, resolved=names)
        return build(
            environment=environment,
            variables=variables,
            workloads=loaded,
            provisioners=provisioners,
            file_contents=file_contents,
            outputs=views,
        )


def _changed_inputs(
    workloads: _Inputs, last: _Snapshot
) -> tuple[list[tuple[int, str, Any]], set[str]]:
    """The positions (in ``names`` then ``reused_names``), names and keys whose key is not the
    object the last build had for that name, in the caller's order, and the names that went.
    Found with C loops (``map``, ``compress``, dictionary views), without a Python step per
    unchanged workload: position by position when the names come in the same parts and order
    as last time (the reused part skipped when it is the same list), by (name, key id) pairs
    otherwise. Ids are safe: the snapshot keeps the last keys alive, or a weak reference to
    them (no key is one: never the same)."""
    before = last.inputs
    if workloads.same_names(before):
        found = _moved(workloads.names, workloads.keys, before.keys, 0)
        if workloads.reused_keys is not before.reused_keys:
            offset = len(workloads.names)
            found += _moved(
                workloads.reused_names, workloads.reused_keys, before.reused_keys, offset
            )
        return found, set()
    names, keys = workloads.all_names(), workloads.all_keys()
    now = dict(zip(names, map(id, keys), strict=True))
    old = dict(zip(before.all_names(), map(id, before.all_keys()), strict=True))
    at = dict(zip(names, range(len(names)), strict=True))
    changed = sorted(at[name] for name, _ in now.items() - old.items())
    return [(i, names[i], keys[i]) for i in changed], set(last.workloads.keys() - now.keys())


def _moved(
    names: Sequence[str], keys: Sequence[Any], before: Sequence[Any], offset: int
) -> list[tuple[int, str, Any]]:
    """The positions (plus ``offset``), names and keys whose key is not ``before``'s (same
    lengths)."""
    changed = compress(range(len(keys)), map(is_not, keys, before))
    return [(offset + i, names[i], keys[i]) for i in changed]


def _note_problems(last: _Snapshot, names: set[str], uids: set[str]) -> None:
    """Refresh ``last.problems`` for the workloads and resources a build touched."""
    for name in names:
        workload = last.workloads.get(name)
        _note(last.problems, ("w", name), () if workload is None else workload.problems)
    for uid in uids:
        entry = last.resources.get(uid)
        found = () if entry is None else (*entry.primed_problems, *entry.problems)
        _note(last.problems, ("r", uid), found)


def _note(
    problems: dict[tuple[str, str], tuple[Diagnostic, ...]],
    key: tuple[str, str],
    found: tuple[Diagnostic, ...],
) -> None:
    if found:
        problems[key] = found
    else:
        problems.pop(key, None)


def _uids(workload: _Loaded) -> dict[str, str]:
    return {
        name: uid_text(ResourceUid.of(workload.name, name, r.type, r.class_, r.id))
        for name, r in sorted((workload.workload.resources or {}).items())
    }


def _prime_one(
    uid: str, declarers: Sequence[str], workloads: Mapping[str, _Workload]
) -> tuple[_Primed, list[Diagnostic]]:
    """``build._prime`` for one resource: its declarations in workload, then name, order."""
    problems: list[Diagnostic] = []
    primed: _Primed | None = None
    for name in declarers:
        wl = workloads[name]
        for res_name, res_uid in wl.uids.items():
            if res_uid != uid:
                continue
            definition = wl.declared[res_name]
            if primed is None:
                uid_of = ResourceUid.of(
                    name, res_name, definition.type, definition.class_, definition.id
                )
                primed = _Primed.seeded(uid_of, definition)
            else:
                primed.definitions.append(definition)
                problems.extend(_merge(primed, definition))
    assert primed is not None
    return primed, problems


def _without_placeholders(value: object) -> bool:
    """No text in ``value`` holds a ``$`` (keys are never substituted): it resolves to itself."""
    if isinstance(value, str):
        return "$" not in value
    if isinstance(value, Mapping):
        return all(map(_without_placeholders, value.values()))
    if isinstance(value, list | tuple):
        return all(map(_without_placeholders, value))
    return True


def _typed(name: str, loaded: LoadedWorkload) -> _Loaded:
    assert loaded.workload is not None
    assert loaded.document is not None
    return _Loaded(name, loaded.workload, loaded.document, loaded)


def _declared(workload: _Loaded) -> dict[str, _Definition]:
    """A workload's declarations, all placed by one document: a record's document has data,
    and a placer made per declaration would be one more document and mapping for each of the
    thousands the builder keeps."""
    resources = workload.workload.resources or {}
    placer = workload.document.placer()
    return {
        res_name: _Definition.of(workload.name, res_name, resource, placer)
        for res_name, resource in resources.items()
    }


def _service(workload: _Loaded) -> Any:
    return workload_services([workload.workload])[workload.name]


def _resolved(last: _Snapshot) -> Iterable[tuple[str, DesiredResource]]:
    return ((uid, e.desired) for uid, e in last.resources.items() if e.desired is not None)


def _desired(entry: _Resource) -> DesiredResource:
    assert entry.desired is not None
    return entry.desired


def _desired_workload(entry: _Workload) -> DesiredWorkload:
    assert entry.desired is not None
    return entry.desired
