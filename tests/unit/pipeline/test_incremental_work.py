"""Planning work grows with the change, not with the repository: counted, not timed.

``EnvironmentPlan.resolved`` names the workloads whose placeholders were resolved for a plan
(``parsed`` the Score files read); the builder's ``work`` also says which were typed and which
resources were resolved. The plans themselves must equal a plan built from nothing.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

import reconciler.pipeline as pipeline_module
from reconciler.chunked import Chunked
from reconciler.gitops.repository import Repository
from reconciler.pipeline import (
    EnvironmentPlan,
    ParsedFile,
    ParsedFiles,
    _builder,
    open_source,
    plan_environment,
    record_desired,
    resource_record,
    select_environments,
    workload_record,
)
from reconciler.plan.render import to_json
from reconciler.score.loader import LoadedWorkload, load_workload
from reconciler.score.models import Workload
from reconciler.store.store import Store
from tests.conftest import MakeRepo
from tests.support.gitrepos import GitRepo

SIZE = 1000


def workload(index: int, value: str = "1") -> str:
    group = index // 20
    return (
        "apiVersion: score.dev/v1b1\n"
        f"metadata:\n  name: svc-{index:04d}\n"
        "containers:\n  main:\n    image: nginx\n    variables:\n"
        f"      VALUE: '{value}'\n"
        "      DB: ${resources.db.host}\n"
        "      CACHE: ${resources.cache.host}\n"
        "resources:\n"
        f"  db:\n    type: postgres\n    id: group-{group}-db\n"
        "  cache:\n    type: redis\n"
    )


def files(values: dict[int, str] | None = None) -> dict[str, str]:
    values = values or {}
    return {f"apps/svc-{i:04d}/score.yaml": workload(i, values.get(i, "1")) for i in range(SIZE)}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store.open(f"sqlite:///{tmp_path / 'state.db'}")
    yield opened
    opened.close()


def plan(
    repo: GitRepo, store: Store, parsed: dict[str, LoadedWorkload] | None = None
) -> EnvironmentPlan:
    repository = Repository.open(repo.root)
    source = open_source(repository, "HEAD")
    ((name, environment),) = select_environments(source.config, None)
    return plan_environment(repository, store, source, name, environment, parsed=parsed)


def record(repo: GitRepo, store: Store, result: EnvironmentPlan) -> None:
    assert result.desired is not None
    assert not result.failed, result.diagnostics
    source = open_source(Repository.open(repo.root), "HEAD")
    loaded = [load_workload(source.tree, w.file) for w in result.desired.workloads]
    record_desired(store, result.desired, source.commit, loaded)


def record_half(store: Store, first: EnvironmentPlan, commit: str) -> None:
    """Record the first half of ``first``'s workloads at ``commit``, as a run of them does."""
    assert first.desired is not None
    for wl in first.desired.workloads[: SIZE // 2]:
        store.save_workload("default", workload_record(wl, commit, first.sources[wl.name]))


def from_nothing(repo: GitRepo, tmp_path: Path, store: Store, label: str) -> str:
    """The same plan made by a fresh builder, from the store's rows read anew."""
    copy = Store.open(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        return to_json(plan(repo, copy).plan)  # type: ignore[arg-type]
    finally:
        copy.close()


def test_a_one_workload_commit_resolves_one_workload(
    make_repo: MakeRepo, store: Store, tmp_path: Path
) -> None:
    repo = make_repo()
    repo.commit(files())
    first = plan(repo, store)
    assert len(first.resolved) == SIZE
    record(repo, store, first)
    # the first plan parsed every file; records type alike only to records (no positions), so
    # the first plan from the store types them once
    second = plan(repo, store)
    assert len(second.resolved) == SIZE

    # a resync that finds nothing changed is the last plan again, not built anew
    resync = plan(repo, store)
    assert resync.plan is second.plan
    assert (resync.parsed, resync.resolved) == ((), ())
    # a commit that changes no workload's file is planned, and types and resolves nothing
    repo.commit({"docs/README.md": "notes\n"})
    unrelated = plan(repo, store)
    assert unrelated.plan is not second.plan
    assert (unrelated.parsed, unrelated.resolved) == ((), ())
    assert unrelated.plan is not None
    assert not unrelated.plan.summary.has_changes
    assert _builder(store, "default").work.typed == []

    repo.commit({"apps/svc-0500/score.yaml": workload(500, "2")})
    changed = plan(repo, store)
    assert changed.parsed == ("apps/svc-0500/score.yaml",)
    assert changed.resolved == ("svc-0500",)
    work = _builder(store, "default").work
    assert work.typed == ["svc-0500"]
    assert sorted(work.resources) == [
        "postgres.default#group-25-db",
        "redis.default#svc-0500.cache",
    ]
    assert changed.plan is not None
    assert [(str(a.action), a.id) for a in changed.plan.changes()] == [("update", "svc-0500")]
    assert to_json(changed.plan) == from_nothing(repo, tmp_path, store, "changed")

    # recording rewrites every row (new record objects, same documents): only the workload
    # that came from a parsed file is typed and resolved again
    record(repo, store, changed)
    after = plan(repo, store)
    assert after.resolved == ("svc-0500",)
    assert after.plan is not None
    assert not after.plan.summary.has_changes
    assert plan(repo, store).resolved == ()


def test_a_one_workload_commit_shares_what_it_did_not_change(
    make_repo: MakeRepo, store: Store, tmp_path: Path
) -> None:
    """The desired state's sequences and the plan's actions are the last ones with the items
    the commit changed replaced (``Chunked``): the diff finds those by comparing chunks, and the
    plan equals one made from nothing. A service that changed is a new services mapping."""
    repo = make_repo()
    repo.commit(files())
    record(repo, store, plan(repo, store))
    settled = plan(repo, store)
    assert settled.desired is not None
    assert settled.plan is not None

    repo.commit({"apps/svc-0500/score.yaml": workload(500, "2")})
    changed = plan(repo, store)
    assert changed.desired is not None
    assert changed.plan is not None
    assert to_json(changed.plan) == from_nothing(repo, tmp_path, store, "variable")
    workloads, resources = changed.desired.workloads, changed.desired.resources
    assert isinstance(workloads, Chunked)
    assert isinstance(resources, Chunked)
    assert isinstance(settled.desired.workloads, Chunked)
    assert isinstance(settled.desired.resources, Chunked)
    assert workloads.changed_from(settled.desired.workloads) == [500]
    moved = resources.changed_from(settled.desired.resources)
    assert moved is not None
    assert {resources[i].uid for i in moved} == set(_builder(store, "default").work.resources)
    actions = changed.plan.actions
    assert isinstance(actions, Chunked)
    assert isinstance(settled.plan.actions, Chunked)
    redone = actions.changed_from(settled.plan.actions)
    assert redone is not None
    assert {actions[i].id for i in redone} == {"svc-0500", *(resources[i].uid for i in moved)}
    # a variable leaves the services alone: the same mapping
    assert changed.desired.workload_services is settled.desired.workload_services

    # a port is a service's: a new mapping, as a build from nothing makes it
    with_port = workload(500, "2") + "service:\n  ports:\n    web:\n      port: 8080\n"
    repo.commit({"apps/svc-0500/score.yaml": with_port})
    ported = plan(repo, store)
    assert ported.desired is not None
    assert ported.desired.workload_services is not changed.desired.workload_services
    assert ported.desired.workload_services["svc-0500"]["ports"]["web"]["port"] == 8080
    assert changed.desired.workload_services["svc-0500"]["ports"] == {}
    fresh = Store.open(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        again = plan(repo, fresh)
    finally:
        fresh.close()
    assert again.desired is not None
    assert ported.desired.to_json() == again.desired.to_json()
    assert to_json(ported.plan) == to_json(again.plan)  # type: ignore[arg-type]


def test_a_changed_output_resolves_the_workloads_that_use_it(
    make_repo: MakeRepo, store: Store, tmp_path: Path
) -> None:
    repo = make_repo()
    repo.commit(files())
    first = plan(repo, store)
    record(repo, store, first)
    plan(repo, store)
    assert plan(repo, store).resolved == ()
    assert first.desired is not None
    shared = first.desired.resource("postgres.default#group-3-db")
    assert shared is not None
    store.save_resource(
        "default",
        resource_record(
            shared,
            outputs={"host": "db.internal"},
            secret_refs={"password": "secret://default/x#password"},
        ),
    )
    after = plan(repo, store)
    assert after.resolved == tuple(f"svc-{i:04d}" for i in range(60, 80))
    assert after.plan is not None
    assert {a.id for a in after.plan.changes()} == set(after.resolved)
    assert to_json(after.plan) == from_nothing(repo, tmp_path, store, "outputs")


def test_a_plan_leaves_no_parsed_file_alive(
    make_repo: MakeRepo, store: Store, tmp_path: Path
) -> None:
    """The builder remembers parsed files by weak reference: a first plan's thousands of them
    go with the plan (or the run) that parsed them, and the next plan types their files anew."""
    repo = make_repo()
    repo.commit(files())
    parsed: dict[str, LoadedWorkload] = {}
    first = plan(repo, store, parsed)
    assert len(parsed) == SIZE
    # the same parsed files again (a run's next plan): nothing is typed or resolved again
    again = plan(repo, store, parsed)
    assert again.resolved == ()
    assert to_json(again.plan) == to_json(first.plan)  # type: ignore[arg-type]
    gone = [weakref.ref(w) for w in parsed.values()]
    del parsed, first, again
    gc.collect()
    assert [r for r in gone if r() is not None] == []
    after = plan(repo, store)
    assert len(after.resolved) == SIZE
    assert to_json(after.plan) == from_nothing(repo, tmp_path, store, "after")  # type: ignore[arg-type]


def test_workloads_applied_at_the_commit_are_not_parsed_again(
    make_repo: MakeRepo, store: Store, tmp_path: Path
) -> None:
    """Until a commit is settled it is planned in full; the workloads a run of that commit
    recorded stand for their files (as the record of a settled commit does), the others are
    parsed. A record of another commit does not."""
    repo = make_repo()
    repo.commit(files())
    first = plan(repo, store)
    assert first.desired is not None
    head = open_source(Repository.open(repo.root), "HEAD").commit
    other = Store.open(f"sqlite:///{tmp_path / 'other.db'}")
    try:
        for target, commit in ((store, head), (other, "0" * 40)):
            record_half(target, first, commit)
        assert store.last_commit("default") is None
        reused = plan(repo, store)
        assert reused.parsed == tuple(f"apps/svc-{i:04d}/score.yaml" for i in range(500, SIZE))
        parsed = plan(repo, other)
        assert len(parsed.parsed) == SIZE
    finally:
        other.close()
    assert reused.plan is not None
    assert parsed.plan is not None
    assert [(str(a.action), a.id) for a in reused.plan.changes()][-3:] == [
        ("create", "svc-0997"),
        ("create", "svc-0998"),
        ("create", "svc-0999"),
    ]
    assert to_json(reused.plan) == to_json(parsed.plan)


def test_shared_parsed_files_go_once_their_workloads_are_recorded(
    make_repo: MakeRepo, store: Store, tmp_path: Path
) -> None:
    """The daemon's plans of one commit share its parsed files: a plan after a run recorded
    some workloads at that commit parses nothing, takes those workloads from their records,
    and keeps only the files it still used, so that the files go as the runs progress."""
    repo = make_repo()
    commit = repo.commit(files())
    parsed: dict[str, LoadedWorkload] = {}
    first = plan(repo, store, parsed)
    assert first.desired is not None
    assert len(parsed) == SIZE
    record_half(store, first, commit)
    later = plan(repo, store, parsed)
    assert later.parsed == ()
    assert sorted(parsed) == [f"apps/svc-{i:04d}/score.yaml" for i in range(SIZE // 2, SIZE)]
    assert to_json(later.plan) == from_nothing(repo, tmp_path, store, "half")  # type: ignore[arg-type]


def test_parsed_files_kept_as_stand_ins_plan_alike(
    make_repo: MakeRepo, store: Store, tmp_path: Path
) -> None:
    """``ParsedFiles`` (the daemon's) keeps each typed file as a ``ParsedFile``, without its
    model: a plan through it equals one that kept the files whole, its documents are the same,
    a later plan of the commit parses nothing, and no typed model outlives the plans."""
    repo = make_repo()
    repo.commit(
        {
            **files(),
            "apps/broken/score.yaml": "apiVersion: score.dev/v1b1\nmetadata: {name: 7}\n",
        }
    )
    repository = Repository.open(repo.root)
    source = open_source(repository, "HEAD")
    ((name, environment),) = select_environments(source.config, None)
    kept = ParsedFiles()
    first = plan_environment(repository, store, source, name, environment, parsed=kept)
    assert len(kept) == SIZE + 1
    assert isinstance(kept["apps/broken/score.yaml"], LoadedWorkload)  # failed: kept whole
    assert sum(isinstance(p, ParsedFile) for p in kept.values()) == SIZE
    assert first.failed
    again = plan_environment(repository, store, source, name, environment, parsed=kept)
    assert again.parsed == ()
    assert again.resolved == ()
    whole = from_nothing(repo, tmp_path, store, "whole")
    assert to_json(first.plan) == whole  # type: ignore[arg-type]
    assert to_json(again.plan) == whole  # type: ignore[arg-type]
    assert first.diagnostics == again.diagnostics
    tree = open_source(repository, "HEAD").tree
    for workload_name in ("svc-0000", "svc-0999"):
        path = f"apps/{workload_name}/score.yaml"
        model = load_workload(tree, path).workload
        assert model is not None
        assert again.sources[workload_name] == model.to_data()
    del first, again, model
    gc.collect()
    assert [o for o in gc.get_objects() if isinstance(o, Workload)] == []
    # a run keeps the models of the workloads it applies, typed once
    kept.keep({"svc-0001"})
    stand_in = kept["apps/svc-0001/score.yaml"]
    assert isinstance(stand_in, ParsedFile)
    assert stand_in.kept is not None
    assert stand_in.loaded() is stand_in.kept
    assert [o.metadata.name for o in gc.get_objects() if isinstance(o, Workload)] == ["svc-0001"]


def test_a_stand_in_gives_its_model_back_without_parsing_the_file_again(
    make_repo: MakeRepo, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon's first plan of a commit types every workload right after parsing them all,
    and each run types its own again: from the model the stand-in keeps pickled, not from
    the file's bytes; a stand-in without it (a model that would not pickle) parses them."""
    repo = make_repo()
    repo.commit(files())
    repository = Repository.open(repo.root)
    source = open_source(repository, "HEAD")
    ((name, environment),) = select_environments(source.config, None)
    kept = ParsedFiles()
    plan_environment(repository, store, source, name, environment, parsed=kept)
    path = "apps/svc-0007/score.yaml"
    stand_in = kept[path]
    assert isinstance(stand_in, ParsedFile)
    assert stand_in.model is not None
    expected = load_workload(source.tree, path).workload
    parses: list[str] = []
    real = pipeline_module.load_yaml
    monkeypatch.setattr(
        pipeline_module, "load_yaml", lambda raw, file: parses.append(file) or real(raw, file)
    )
    first, second = stand_in.loaded(), stand_in.loaded()
    assert first.workload == expected
    assert second.workload == expected
    assert first.workload is not second.workload  # a fresh model each time, as typing gave
    assert parses == []
    without = replace(stand_in, model=None)
    assert without.loaded().workload == expected
    assert parses == [path]


def test_outputs_resolve_again_only_the_resources_whose_params_read_them(
    make_repo: MakeRepo, store: Store, tmp_path: Path
) -> None:
    """Provisioning gives every resource outputs: each workload is resolved again, and of its
    resources only those whose params hold a placeholder (the others resolve alike whatever
    the outputs). The plan equals one made from nothing. Files are parsed once for both
    plans, as a run's plans share them."""
    repo = make_repo()
    score = (
        "apiVersion: score.dev/v1b1\nmetadata:\n  name: svc-{i}\n"
        "containers:\n  main:\n    image: nginx\n    variables:\n"
        "      DB: ${{resources.db.host}}\n"
        "resources:\n  db:\n    type: postgres\n"
        "  cache:\n    type: redis\n    params:\n      note: 'for ${{resources.db.host}}'\n"
        "  plain:\n    type: redis\n    params:\n      size: small\n"
    )
    repo.commit({f"apps/svc-{i}/score.yaml": score.format(i=i) for i in range(3)})
    parsed: dict[str, LoadedWorkload] = {}
    first = plan(repo, store, parsed)
    assert first.desired is not None
    for resource in first.desired.resources:
        outputs = {"host": f"h-{resource.id}", "port": 5432}
        store.save_resource("default", resource_record(resource, outputs=outputs))
    again = plan(repo, store, parsed)
    assert again.desired is not None
    assert again.parsed == ()
    assert sorted(again.resolved) == ["svc-0", "svc-1", "svc-2"]
    assert sorted(_builder(store, "default").work.resources) == [
        f"redis.default#svc-{i}.cache" for i in range(3)
    ]
    assert again.plan is not None
    assert to_json(again.plan) == from_nothing(repo, tmp_path, store, "provisioned")
