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

import functools
import pickle
import weakref
import zlib
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from wcmatch import glob

from reconciler.catalogue import Code
from reconciler.config.loader import CONFIG_FILE, LoadedConfig, load_config
from reconciler.config.models import Config, Environment
from reconciler.deflate import deflated
from reconciler.desired.incremental import Incremental
from reconciler.desired.model import DesiredResource, DesiredState, DesiredWorkload
from reconciler.desired.provisioners import (
    ProvisionerSet,
    builtin_provisioner_files,
    load_provisioners,
)
from reconciler.desired.workloads import file_sources
from reconciler.diagnostics import Diagnostic, has_errors, sorted_diagnostics
from reconciler.gitops.changes import ChangeSet
from reconciler.gitops.errors import GitError
from reconciler.gitops.repository import Repository
from reconciler.gitops.tree import GitTree
from reconciler.plan.collector import full_collections_held
from reconciler.plan.diff import ActionMemo, diff
from reconciler.plan.model import Plan
from reconciler.score.loader import LoadedWorkload, load_workloads
from reconciler.score.models import Workload
from reconciler.store.records import (
    PinRecord,
    PlanInputs,
    RecordedState,
    ResourceRecord,
    WorkloadRecord,
)
from reconciler.store.store import Store
from reconciler.tree import GLOB_FLAGS, matches
from reconciler.validate import check_unique_names
from reconciler.yamldoc import DeferredPositions, Positions, YamlDocument, load_yaml


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
    sources: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    """Each workload's normalised Score document, as the store records it with the workload
    (serialised from its model when asked for: a run records only the workloads it applies)."""
    resolved: tuple[str, ...] = ()
    """The workloads whose placeholders were resolved for this plan (the rest were reused from
    the plan before, their inputs unchanged)."""
    pinned: tuple[str, ...] = ()
    """Workloads planned at the commit ``reconciler rollback`` pinned them to."""
    expired_pins: tuple[str, ...] = ()
    """Pinned workloads whose Score file a newer commit changed: the pin ends when applied."""

    @property
    def failed(self) -> bool:
        return has_errors(self.diagnostics)


@dataclass(slots=True, weakref_slot=True, eq=False)
class ParsedFile:
    """A Score file that loaded and typed, as ``ParsedFiles`` keeps it between the plans of
    its commit: what a plan reads of every file (its name and problems), the document that
    places diagnostics, which holds the file's bytes, and its typed model pickled and deflated
    (``model``, about 1 KB); ``loaded`` gives the model back (about 35 µs; typing it again
    from the bytes took 450) for the workloads a plan resolves or a run records. A typed
    model takes about 9 KB, six times the bytes, and a first commit's plans would otherwise
    hold one per workload from the first plan to the last run; the daemon's first plan of a
    commit types each workload again right after parsing it all, and its run again. Compared
    by identity, as parsed files are."""

    file: str
    name: str
    diagnostics: list[Diagnostic]
    document: YamlDocument
    model: bytes | None = None
    """The typed model, pickled and deflated; None when it could not be pickled (then it is
    typed again from the bytes)."""
    kept: LoadedWorkload | None = None
    """Typed again and kept while a run applies the workload (``ParsedFiles.keep``)."""

    def loaded(self) -> LoadedWorkload:
        if self.kept is not None:
            return self.kept
        if self.model is not None:
            workload: Workload = pickle.loads(zlib.decompress(self.model))
        else:
            positions = self.document.positions
            assert isinstance(positions, DeferredPositions)
            doc, _ = load_yaml(positions.raw, self.file)
            assert doc is not None  # it loaded from these bytes before
            workload = Workload.from_data(doc.data)
        return LoadedWorkload(self.file, self.document, workload, self.diagnostics)


class ParsedFiles(dict[str, "LoadedWorkload | ParsedFile"]):
    """The files parsed at one commit, shared by the plans of that commit (``parsed`` of
    ``plan_environment``), each kept as a ``ParsedFile``: for a holder that keeps them across
    many plans and runs (the daemon), where a plain dict keeps each parsed file whole."""

    def keep(self, workloads: Collection[str]) -> None:
        """Keep the models of ``workloads`` typed while a run applies them: its plans resolve
        them after each wave and it records their documents, which would type them again each
        time. They go with their files, once the run recorded them."""
        wanted = frozenset(workloads)
        for parsed in list(self.values()):
            if isinstance(parsed, ParsedFile) and parsed.kept is None and parsed.name in wanted:
                parsed.kept = parsed.loaded()


Parsed = LoadedWorkload | ParsedFile


@dataclass(slots=True)
class _Loaded:
    workloads: list[Parsed] = field(default_factory=list)
    """The workloads parsed for this plan (some may have failed to load)."""
    reused: list[WorkloadRecord] = field(default_factory=list)
    """Recorded workloads none of whose files changed: reused unparsed (and untyped, unless
    the builder needs them)."""
    reused_names: list[str] = field(default_factory=list)
    reused_files: dict[str, WorkloadRecord] = field(default_factory=dict)
    parsed: list[str] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    pinned: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    pinned_sources: dict[str, GitTree] = field(default_factory=dict)
    """The ``files[].source`` paths of pinned workloads, with the pinned commit's tree: a
    pinned workload is planned as it was at that commit, the files it reads included."""


def open_source(repo: Repository, ref: str) -> Source:
    """Resolve ``ref`` and read the configuration of that commit."""
    commit = repo.resolve(ref)
    tree = repo.tree(commit)
    config, diagnostics = _configuration(tree)
    return Source(commit, tree, config, diagnostics)


_CONFIGS: dict[str, tuple[Config, tuple[Diagnostic, ...]]] = {}
_CONFIGS_LIMIT = 64


def _configuration(tree: GitTree) -> tuple[Config, tuple[Diagnostic, ...]]:
    """The configuration of ``tree`` and its problems, kept by the root tree's id: they depend
    on the commit's files alone (``reconciler.yaml`` and the files it names), and every plan
    opens its commit's configuration again (a resync, the daemon's three plans of a commit,
    each commit that leaves every file alone), which read the file's blob each time. Both
    values are frozen."""
    key = tree.tree_id
    found = _CONFIGS.get(key)
    if found is None:
        loaded: LoadedConfig = load_config(tree)
        found = (loaded.config or Config.default(), tuple(loaded.diagnostics))
        if len(_CONFIGS) >= _CONFIGS_LIMIT:
            _CONFIGS.clear()
        _CONFIGS[key] = found
    return found


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
    repo: Repository,
    store: Store,
    source: Source,
    name: str,
    env: Environment,
    *,
    parsed: dict[str, LoadedWorkload] | ParsedFiles | None = None,
) -> EnvironmentPlan:
    """Plan one environment for the commit in ``source``; never raises for bad input.

    ``parsed`` keeps the files parsed for this commit across plans of it (a run re-plans
    after each wave of resources; the daemon plans a commit before, during and after its runs):
    a file is parsed once, not once per plan, and the builder, given the same parsed file
    again, keeps what it built from it. After the plan it holds only the files this plan took
    from it or parsed: those a run recorded meanwhile come from their records from then on.
    """
    if has_errors(source.diagnostics):
        return EnvironmentPlan(name, None, None, source.diagnostics)
    with full_collections_held():  # the plan's values live until it ends (plan/collector.py)
        return _plan_environment(repo, store, source, name, env, parsed)


def _plan_environment(
    repo: Repository,
    store: Store,
    source: Source,
    name: str,
    env: Environment,
    parsed: dict[str, LoadedWorkload] | ParsedFiles | None,
) -> EnvironmentPlan:
    builder = _builder(store, name)
    stored = store.plan_inputs(name)
    recorded = builder.same_as_before(stored.recorded)
    last = builder.last_plan
    if last is not None and last.matches(source.commit, env, recorded, stored):
        if parsed is not None:
            _keep_only(parsed, set())  # as planning again would: it takes no file from it
        return replace(last.plan, parsed=(), resolved=())
    builder.last_plan = None  # not kept alive while the next one is built
    base = stored.last_commit
    changes = repo.changed_paths(base, source.commit) if base else None
    provisioner_files = _provisioner_files(source, base, changes)
    full = changes is None or _config_changed(changes, source.config, provisioner_files)
    # load: parse what changed, take the rest from what was recorded with the last commit
    pins = _Pins(repo, source.commit, stored.pins)
    index = builder.index_of(recorded)
    unsettled = stored.unsettled - {base, source.commit}
    ahead = _changed_since_recorded(repo, index, unsettled, source.commit) if not full else None
    loaded = _load_workloads(source, env, index, None if full else changes, parsed, pins, ahead)
    # provisioners: the repository's files in reconciler.yaml order, then the built-in ones
    provisioners, problems = load_provisioners(
        [(p, source.tree.read(p)) for p in provisioner_files] + builtin_provisioner_files()
    )
    loaded.diagnostics.extend(problems)
    ok = [w for w in loaded.workloads if _usable(w)]
    # desired: identities, provisioners, ordering and placeholders, as pure values; only what
    # this commit or the recorded outputs changed is built again (desired/incremental.py)
    names = [_name(w) for w in ok]
    keys: list[Parsed | WorkloadRecord] = list(ok)
    desired, problems = builder.build(
        environment=name,
        variables=dict(env.variables),
        names=names,
        keys=keys,
        reused_names=loaded.reused_names,
        reused_keys=loaded.reused,
        load=_typed,
        provisioners=provisioners,
        file_contents=_TreeContents(source.tree, loaded.pinned_sources),
        outputs=recorded.resources,
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
        memo=builder.actions,
    )
    sources = _Sources({_name(w): _model(w) for w in ok})
    sources.add_recorded(loaded.reused_names, loaded.reused)
    planned = EnvironmentPlan(
        name,
        plan,
        desired,
        diagnostics,
        tuple(loaded.parsed),
        provisioners,
        sources,
        tuple(builder.work.resolved),
        tuple(loaded.pinned),
        tuple(loaded.expired),
    )
    if not loaded.workloads:  # all from records: the plan keeps no parsed file alive
        builder.last_plan = _LastPlan(
            source.commit, env, recorded, base, stored.pins, stored.unsettled, planned
        )
    return planned


@dataclass(slots=True, eq=False)
class _LastPlan:
    """An environment's last plan and everything it was planned from, for a plan of the same
    inputs to return again: a resync that finds nothing changed (every few minutes, for every
    environment) costs the store's one-statement read and these comparisons instead of a plan.

    A plan is a function of the commit (its files, ``reconciler.yaml`` and the provisioner
    files in it), the environment's configuration and what the store recorded (the records,
    the last commit, the pins); the built-in provisioners are fixed for the process, and a
    pin's expiry depends on commits, not on time. The records are compared by identity: the
    store hands back the same state while its revision token is unchanged, and the builder the
    state it saw last for equal records (``same_as_before``).

    Only a plan made from records alone is kept: that is a settled commit's, the one resyncs
    plan again; a plan that parsed files holds them (``_Sources``), and a first commit's are
    most of its memory."""

    commit: str
    env: Environment
    recorded: RecordedState
    last_commit: str | None
    pins: Mapping[str, PinRecord]
    unsettled: frozenset[str]
    plan: EnvironmentPlan

    def matches(
        self, commit: str, env: Environment, recorded: RecordedState, stored: PlanInputs
    ) -> bool:
        return (
            recorded is self.recorded
            and commit == self.commit
            and stored.last_commit == self.last_commit
            and stored.pins == self.pins
            and stored.unsettled == self.unsettled
            and (env is self.env or env == self.env)
        )


class _Builder(Incremental[Parsed | WorkloadRecord, ResourceRecord]):
    """An environment's incremental builder, with the diff's memo of actions beside it."""

    def __init__(self) -> None:
        super().__init__(_output_source, _same_record, _parsed, _retyped)
        self.actions = ActionMemo()
        self.last_plan: _LastPlan | None = None
        self._recorded: RecordedState | None = None
        self._index = _RecordIndex([])
        self._indexed: RecordedState | None = None

    def same_as_before(self, recorded: RecordedState) -> RecordedState:
        """The state the last plan saw when ``recorded`` holds the same records (the store
        hands back the same state while nothing was written, and the same record objects in
        new mappings after a write that changed nothing here): then the builder and the diff
        recognise it by identity and skip their passes over it."""
        last = self._recorded
        if last is recorded:
            return recorded
        if (
            last is not None
            and last.environment == recorded.environment
            and last.workloads == recorded.workloads  # a C loop; records compare by identity
            and last.resources == recorded.resources
        ):
            return last
        self._recorded = recorded
        return recorded

    def index_of(self, recorded: RecordedState) -> _RecordIndex:
        """``recorded``'s workloads arranged for loading, made again for another state."""
        if recorded is not self._indexed:
            self._index = _RecordIndex(list(recorded.workloads.values()))
            self._indexed = recorded
        return self._index


class _RecordIndex:
    """Recorded workloads by file, and by the files they source: what a change set touches is
    found by looking up its paths, not by visiting every workload."""

    def __init__(self, records: list[WorkloadRecord]) -> None:
        self.records = records
        self.by_file: dict[str, WorkloadRecord] = {r.file: r for r in records}
        self.by_name: dict[str, WorkloadRecord] = {r.name: r for r in records}
        self.documented = {f: r for f, r in self.by_file.items() if r.source}
        self.documented_names = {f: r.name for f, r in self.documented.items()}
        """The records that keep their normalised document: the others must be parsed."""
        self.undocumented = sorted(set(self.by_file) - set(self.documented))
        self.users: dict[str, set[str]] = {}
        self._by_commit: dict[str, set[str]] | None = None
        self._without: (
            tuple[frozenset[str], tuple[dict[str, WorkloadRecord], list[WorkloadRecord], list[str]]]
            | None
        ) = None
        for record in records:
            for path in record.sources:
                self.users.setdefault(path, set()).add(record.file)

    def without(
        self, paths: frozenset[str]
    ) -> tuple[dict[str, WorkloadRecord], list[WorkloadRecord], list[str]]:
        """The documented records but those of ``paths``: by file, and as records and names in
        file order. The last answer is kept: a commit is planned more than once (before its
        run, by the run, to settle it), and the same lists again are recognised by identity."""
        last = self._without
        if last is not None and last[0] == paths:
            return last[1]
        reuse = dict(self.documented)
        names = dict(self.documented_names)
        for path in paths:
            reuse.pop(path, None)
            names.pop(path, None)
        found = (reuse, list(reuse.values()), list(names.values()))
        self._without = (paths, found)
        return found

    def touched(self, paths: frozenset[str] | set[str]) -> set[str]:
        """Recorded files among ``paths``, or reading one of them as a file source."""
        found = {p for p in paths if p in self.by_file}
        for path in paths:
            found.update(self.users.get(path, ()))
        return found

    def files_at(self, commit: str) -> set[str]:
        """The files of the workloads recorded at ``commit`` (grouped on first use)."""
        if self._by_commit is None:
            self._by_commit = {}
            for record in self.records:
                self._by_commit.setdefault(record.commit, set()).add(record.file)
        return self._by_commit.get(commit, set())


# One builder per (store, environment): what the last plan built, reused by the next one. The
# builder compares its inputs by identity (the store's cached records, re-parsed workloads), so
# sharing it between plans of any commits is safe; it goes with the store.
_BUILDERS: weakref.WeakKeyDictionary[Store, dict[str, _Builder]] = weakref.WeakKeyDictionary()


def _builder(store: Store, environment: str) -> _Builder:
    per_store = _BUILDERS.setdefault(store, {})
    found = per_store.get(environment)
    if found is None:
        found = per_store[environment] = _Builder()
    return found


def _same_record(old: Parsed | WorkloadRecord, new: Parsed | WorkloadRecord) -> bool:
    """Two records of one document type alike (``_from_record`` reads nothing else)."""
    if not isinstance(old, WorkloadRecord) or not isinstance(new, WorkloadRecord):
        return False
    return old.file == new.file and old.source == new.source


def _parsed(key: Parsed | WorkloadRecord) -> bool:
    """A parsed file is kept alive by the plan or the run that parsed it, not by the builder:
    a record is kept by the store's cache anyway, a first plan's parsed files are most of its
    memory."""
    return not isinstance(key, WorkloadRecord)


def _retyped(key: Parsed | WorkloadRecord) -> bool:
    return isinstance(key, ParsedFile)


def _usable(loaded: Parsed) -> bool:
    """Loaded and typed: a workload of the desired state."""
    return isinstance(loaded, ParsedFile) or (
        loaded.workload is not None and loaded.document is not None
    )


def _name(loaded: Parsed) -> str:
    name = loaded.name
    assert name is not None  # usable: typed, so named
    return name


def _model(loaded: Parsed) -> Workload | ParsedFile:
    """A usable workload's model, or its stand-in (typed again when its document is asked for)."""
    if isinstance(loaded, ParsedFile):
        return loaded
    assert loaded.workload is not None
    return loaded.workload


def _whole(loaded: Parsed) -> LoadedWorkload:
    return loaded.loaded() if isinstance(loaded, ParsedFile) else loaded


def _kept(loaded: LoadedWorkload) -> Parsed:
    """What ``ParsedFiles`` keeps of a file: its stand-in once it typed, else the file whole
    (one that failed keeps its document's data, which its name and problems come from)."""
    document = loaded.document
    if loaded.workload is None or document is None:
        return loaded
    if not isinstance(document.positions, DeferredPositions):
        return loaded
    name = loaded.workload.metadata.name
    return ParsedFile(loaded.file, name, loaded.diagnostics, document, _pickled(loaded.workload))


def _pickled(workload: Workload) -> bytes | None:
    """The model as ``ParsedFile.model`` keeps it: the process's own object, read back only
    by this process (never bytes from elsewhere)."""
    try:
        return deflated(pickle.dumps(workload, protocol=pickle.HIGHEST_PROTOCOL))
    except (pickle.PicklingError, TypeError, AttributeError):
        return None


def _typed(key: Parsed | WorkloadRecord) -> LoadedWorkload:
    if isinstance(key, WorkloadRecord):
        return _from_record(key)
    return _whole(key)


def _output_source(record: ResourceRecord) -> Mapping[str, object] | None:
    """Known outputs of a recorded resource, or None when it has none yet."""
    return known_outputs(record) if record.outputs or record.secret_refs else None


class _Sources(Mapping[str, dict[str, Any]]):
    """Workloads' normalised documents by name, each made on first use: serialised from its
    model, or copied from its record (a plan has thousands; a run records a few)."""

    def __init__(self, models: dict[str, Workload | ParsedFile]) -> None:
        self._models = models
        self._recorded: tuple[Sequence[str], Sequence[WorkloadRecord]] = ((), ())
        self._merged: dict[str, Workload | ParsedFile | WorkloadRecord] | None = None
        self._data: dict[str, dict[str, Any]] = {}

    def add_recorded(self, names: Sequence[str], records: Sequence[WorkloadRecord]) -> None:
        """The reused records, by name: looked up only when a document is asked for."""
        self._recorded, self._merged = (names, records), None

    def _origin(self) -> dict[str, Workload | ParsedFile | WorkloadRecord]:
        if self._merged is None:
            merged: dict[str, Workload | ParsedFile | WorkloadRecord] = dict(self._models)
            merged.update(zip(*self._recorded, strict=True))
            self._merged = merged
        return self._merged

    def __getitem__(self, name: str) -> dict[str, Any]:
        found = self._data.get(name)
        if found is None:
            origin = self._origin()[name]
            if isinstance(origin, WorkloadRecord):
                made = dict(origin.source)
            else:
                model = origin if isinstance(origin, Workload) else origin.loaded().workload
                assert model is not None
                made = model.to_data()
            found = self._data[name] = made
        return found

    def __iter__(self) -> Iterator[str]:
        return iter(self._origin())

    def __len__(self) -> int:
        return len(self._origin())


class _TreeContents(Mapping[str, str]):
    """The text of ``files.*.source`` files, read from the commit when the builder asks for
    one (only workloads resolved again do); unreadable or non-UTF-8 files are missing. The
    files of pinned workloads (``pinned``) are read from their pinned commit's tree."""

    def __init__(self, tree: GitTree, pinned: Mapping[str, GitTree] | None = None) -> None:
        self._tree = tree
        self._pinned = pinned or {}
        self._read: dict[str, str | None] = {}

    def _get(self, path: str) -> str | None:
        if path not in self._read:
            try:
                tree = self._pinned.get(path, self._tree)
                self._read[path] = tree.read(path).decode("utf-8")
            except (OSError, UnicodeDecodeError):
                self._read[path] = None
        return self._read[path]

    def __getitem__(self, path: str) -> str:
        found = self._get(path)
        if found is None:
            raise KeyError(path)
        return found

    def __contains__(self, path: object) -> bool:
        return isinstance(path, str) and self._get(path) is not None

    def __iter__(self) -> Iterator[str]:
        return (p for p, text in self._read.items() if text is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)


_PROVISIONER_FILES: dict[tuple[str, tuple[str, ...]], list[str]] = {}
_PROVISIONER_FILES_LIMIT = 64


def _provisioner_files(source: Source, base: str | None, changes: ChangeSet | None) -> list[str]:
    """Provisioner files in the order reconciler.yaml lists their patterns, sorted within one.

    Listing them walks every file of the commit; when the change set since ``base`` touches no
    path the patterns match (nor the configuration), the list is ``base``'s, remembered.
    """
    patterns = tuple(source.config.provisioners)
    known = _PROVISIONER_FILES.get((source.commit, patterns))
    if known is not None:
        return list(known)
    if base is not None and changes is not None:
        touched = changes.all
        earlier = _PROVISIONER_FILES.get((base, patterns))
        if earlier is not None and CONFIG_FILE not in touched:
            matcher = _matcher(patterns)
            if not any(matcher.match(p) for p in touched):
                _remember_provisioner_files(source.commit, patterns, earlier)
                return list(earlier)
    files = list(source.tree.files())
    ordered: list[str] = []
    seen: set[str] = set()
    for pattern in patterns:
        matcher = _matcher((pattern,))
        for p in files:
            if p not in seen and matcher.match(p):
                ordered.append(p)
                seen.add(p)
    _remember_provisioner_files(source.commit, patterns, ordered)
    return list(ordered)


def _remember_provisioner_files(commit: str, patterns: tuple[str, ...], files: list[str]) -> None:
    if len(_PROVISIONER_FILES) >= _PROVISIONER_FILES_LIMIT:
        _PROVISIONER_FILES.clear()
    _PROVISIONER_FILES[(commit, patterns)] = list(files)


@functools.lru_cache(maxsize=64)
def _matcher(patterns: tuple[str, ...]) -> glob.WcMatcher[str]:
    """``tree.matches(path, patterns)``, compiled once."""
    return glob.compile(list(patterns), flags=GLOB_FLAGS)


def _config_changed(changes: ChangeSet, config: Config, provisioner_files: Sequence[str]) -> bool:
    """Configuration or provisioners changed: every workload may plan differently."""
    touched = changes.all
    if CONFIG_FILE in touched or touched & set(provisioner_files):
        return True
    matcher = _matcher(tuple(config.provisioners))
    return any(matcher.match(p) for p in touched)


def _in_environment(path: str, config: Config, env: Environment) -> bool:
    if not matches(path, list(config.workloads), list(config.exclude)):
        return False
    return not env.workloads or matches(path, list(env.workloads))


def _load_workloads(
    source: Source,
    env: Environment,
    index: _RecordIndex,
    changes: ChangeSet | None,
    cache: dict[str, LoadedWorkload] | ParsedFiles | None = None,
    pins: _Pins | None = None,
    ahead: frozenset[str] | None = None,
) -> _Loaded:
    out = _Loaded()
    if changes is None:
        paths = [p for p in source.tree.files() if _in_environment(p, source.config, env)]
        paths = _reuse_applied_here(source, index, paths, pins, out)
    else:
        paths = _reuse_unchanged(source, env, index, changes, pins, out, ahead or frozenset())
    used: set[str] = set()
    found: list[tuple[str, GitTree, str, Parsed | None]] = []
    for path in paths:
        tree, key = source.tree, path
        pin = pins.for_file(path) if pins is not None else None
        if pin is not None and pins is not None:
            if pins.holds(pin):
                tree, key = pins.tree(pin), f"{pin.commit}:{path}"
                out.pinned.append(pin.workload)
            else:
                out.expired.append(pin.workload)
        used.add(key)
        found.append((path, tree, key, cache.get(key) if cache is not None else None))
    # the files not parsed for this commit yet, parsed a few at a time before they are typed
    fresh = load_workloads([(tree, path) for path, tree, _, known in found if known is None])
    for path, tree, key, known in found:
        loaded: Parsed
        if known is None:
            whole = next(fresh)
            out.parsed.append(path)
            if tree is not source.tree:
                out.pinned_sources.update(dict.fromkeys(file_sources(whole), tree))
            loaded = whole
            if isinstance(cache, ParsedFiles) and tree is source.tree:
                cache[key] = loaded = _kept(whole)
            elif cache is not None:
                cache[key] = whole
            del whole
        else:
            loaded = known
            if tree is not source.tree:
                out.pinned_sources.update(dict.fromkeys(file_sources(_whole(loaded)), tree))
        out.workloads.append(loaded)
        out.diagnostics.extend(loaded.diagnostics)
    out.diagnostics.extend(_unique_names(out, index))
    if cache is not None:
        _keep_only(cache, used)
    return out


def _keep_only(cache: dict[str, LoadedWorkload] | ParsedFiles, used: set[str]) -> None:
    """Drop from ``cache`` the files this plan did not use (another plan sharing the cache may
    insert meanwhile: ``list`` copies the keys at once, and a file dropped is parsed again)."""
    for key in list(cache):
        if key not in used:
            cache.pop(key, None)


def _reuse_unchanged(
    source: Source,
    env: Environment,
    index: _RecordIndex,
    changes: ChangeSet,
    pins: _Pins | None,
    out: _Loaded,
    ahead: frozenset[str],
) -> list[str]:
    """Put in ``out.reused`` the recorded workloads none of whose files changed (nor are
    pinned, nor ``ahead``: recorded at an unsettled commit and changed since); return the
    files to parse: the others, and the new ones. The work follows the change set's size: the
    untouched records are taken in bulk."""
    pinned = pins.files() if pins is not None else frozenset()
    redo = index.touched(changes.all) | {f for f in pinned if f in index.by_file} | ahead
    reuse, out.reused, out.reused_names = index.without(frozenset(redo | changes.deleted))
    out.reused_files = reuse
    parse = redo.union(index.undocumented) - changes.deleted
    # A file added and removed again since the last commit is in no change set: it is gone.
    parse.difference_update([p for p in ahead if not source.tree.exists(p)])
    parse.update(
        p for p in changes.added | changes.modified if _in_environment(p, source.config, env)
    )
    return sorted(p for p in parse if p not in reuse)


def _changed_since_recorded(
    repo: Repository, index: _RecordIndex, commits: frozenset[str], head: str
) -> frozenset[str]:
    """The files of workloads recorded at one of ``commits`` (runs that never settled: killed,
    or superseded by a newer push) that changed, or whose sources changed, between that commit
    and ``head``. Their records are as the files were at their commit, so the change since the
    last commit does not say whether they are current: a file added after it and removed again
    is in no change set, and its record would be taken for a workload still there."""
    stale: set[str] = set()
    for commit in sorted(commits):
        files = index.files_at(commit)
        if not files:
            continue
        try:
            changed = repo.changed_paths(commit, head).all
        except GitError:  # the commit is gone (a force-push, then gc): read them all again
            stale.update(files)
            continue
        stale.update(index.touched(changed) & files)
    return frozenset(stale)


def _reuse_applied_here(
    source: Source, index: _RecordIndex, paths: list[str], pins: _Pins | None, out: _Loaded
) -> list[str]:
    """Put in ``out.reused`` the recorded workloads that a run of this very commit applied
    (their record is their file at this commit, as loaded then, without errors); return the
    files still to parse. A commit is planned in full until it is settled: a first reconcile
    plans again after each run of some of its workloads, and each plan parses only what no run
    has applied yet rather than the whole repository again. Pinned workloads are parsed at
    their pinned commit, as ever."""
    pinned = pins.files() if pins is not None else frozenset()
    reuse: dict[str, WorkloadRecord] = {}
    for path in paths:
        record = index.documented.get(path)
        if record is not None and record.commit == source.commit and path not in pinned:
            reuse[path] = record
    if not reuse:
        return paths
    out.reused_files = reuse
    out.reused = list(reuse.values())
    out.reused_names = [r.name for r in out.reused]
    return [p for p in paths if p not in reuse]


class _Pins:
    """The environment's pins, and whether each still holds at the commit being planned.

    A pin holds until a commit after the one it was made at changes the workload's Score file:
    ``reconciler rollback`` lasts until someone changes the workload again.
    """

    def __init__(self, repo: Repository, commit: str, pins: Mapping[str, PinRecord]) -> None:
        self._repo = repo
        self._commit = commit
        self._by_file = {p.file: p for p in pins.values()}

    def files(self) -> frozenset[str]:
        return frozenset(self._by_file)

    def for_file(self, path: str) -> PinRecord | None:
        return self._by_file.get(path)

    def holds(self, pin: PinRecord) -> bool:
        return pin.file not in self._repo.changed_paths(pin.head, self._commit).all

    def tree(self, pin: PinRecord) -> GitTree:
        return self._repo.tree(pin.commit)


def _unique_names(loaded: _Loaded, index: _RecordIndex) -> list[Diagnostic]:
    """``check_unique_names`` over every workload, parsed or reused, in path order; reused ones
    are typed only when some name occurs twice (an error, rare). Recorded names are unique, so
    only the parsed ones can clash, with each other or with a reused one."""
    names = [w.name for w in loaded.workloads if w.name is not None and w.document is not None]
    if len(set(names)) == len(names) and not _reused_name(names, loaded, index):
        return []
    everything = [*map(_whole, loaded.workloads), *map(_from_record, loaded.reused)]
    return check_unique_names(sorted(everything, key=lambda w: w.file))


def _reused_name(names: list[str], loaded: _Loaded, index: _RecordIndex) -> bool:
    """Whether a parsed workload takes the name of a reused one."""
    for name in names:
        record = index.by_name.get(name)
        if record is not None and loaded.reused_files.get(record.file) is record:
            return True
    return False


_NO_POSITIONS = Positions()
"""The positions of every recorded document: one value, not two empty mappings per workload
(the builder keeps a placer of each record's document; nothing adds to a ``Positions``)."""


def _from_record(record: WorkloadRecord) -> LoadedWorkload:
    """A workload as recorded, unparsed: its document has no positions (it was valid then)."""
    data = dict(record.source)
    document = YamlDocument(record.file, data, _NO_POSITIONS)
    return LoadedWorkload(record.file, document, Workload.from_data(data), [])


def known_outputs(record: ResourceRecord) -> dict[str, object]:
    """Outputs and secret references; keys starting with '_' are the drivers' own (a seed).

    The record's own outputs when that is all of them (no secret and no driver's key): the
    planner keeps this for every recorded resource, and the store keeps the record."""
    outputs = record.outputs
    if not record.secret_refs and type(outputs) is dict and not any(map(_drivers, outputs)):
        return outputs
    merged = {**outputs, **record.secret_refs}
    return {k: v for k, v in merged.items() if not k.startswith("_")}


def _drivers(key: str) -> bool:
    return key.startswith("_")


def _protect_failed(
    recorded: RecordedState, workloads: Sequence[Parsed]
) -> tuple[Mapping[str, ResourceRecord], Mapping[str, WorkloadRecord]]:
    """Hide from the diff what belongs to a file that failed to load.

    A Score file with an error says nothing about what its workload should be: planning its
    deletion (and its resources') would destroy a running application because of a typo.
    """
    failed_files = {
        w.file for w in workloads if not isinstance(w, ParsedFile) and w.workload is None
    }
    if not failed_files:
        return recorded.resources, recorded.workloads
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
                desired.environment, workload_record(wl, commit, loaded.workload.to_data())
            )
        recorded = store.recorded(desired.environment)
        for name in set(recorded.workloads) - {w.name for w in desired.workloads}:
            store.delete_workload(desired.environment, name)
        for uid in set(recorded.resources) - {r.uid for r in desired.resources}:
            store.delete_resource(desired.environment, uid)
        store.set_last_commit(desired.environment, commit)


def workload_record(
    wl: DesiredWorkload,
    commit: str,
    source: Mapping[str, Any],
    status: str = "Synced",
    *,
    spec: Mapping[str, Any] | None = None,
) -> WorkloadRecord:
    """What the store keeps of a workload applied at ``commit``: its resolved spec, the files
    it sources (by path) and its normalised Score document ``source``. ``spec`` is ``wl.spec``
    when the caller decoded it already (a workload step, for its request): decoding it is
    most of the record's cost, and the record only reads it."""
    return WorkloadRecord(
        name=wl.name,
        commit=commit,
        file=wl.file,
        spec_hash=wl.spec_hash,
        spec=wl.spec if spec is None else spec,
        sources=dict.fromkeys(wl.sources, ""),
        source=source,
        status=status,
    )


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
