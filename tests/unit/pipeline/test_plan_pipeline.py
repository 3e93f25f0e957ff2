"""Planning a commit end to end: real Git repositories, a real SQLite store, the whole flow."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler import pipeline
from reconciler.catalogue import Code
from reconciler.config.loader import LoadedConfig, load_config
from reconciler.desired.secrets import split_outputs
from reconciler.gitops.repository import Repository
from reconciler.gitops.tree import GitTree
from reconciler.pipeline import (
    EnvironmentPlan,
    open_source,
    plan_environment,
    record_desired,
    resource_record,
    select_environments,
)
from reconciler.plan.model import ActionKind, Subject
from reconciler.plan.render import to_json, to_markdown, to_text
from reconciler.score.loader import load_workload
from reconciler.store.records import PinRecord
from reconciler.store.store import Store
from tests.conftest import PROJECT, MakeRepo
from tests.support.gitrepos import GitRepo

SHOP = PROJECT / "examples" / "shop"


def shop_files() -> dict[str, str]:
    return {
        p.relative_to(SHOP).as_posix(): p.read_text()
        for p in sorted(SHOP.rglob("*"))
        if p.is_file()
    }


def workload(name: str, variable: str = "1", resources: str = "") -> str:
    return (
        "apiVersion: score.dev/v1b1\n"
        f"metadata:\n  name: {name}\n"
        "containers:\n  main:\n    image: nginx\n"
        f"    variables:\n      VALUE: '{variable}'\n" + resources
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store.open(f"sqlite:///{tmp_path / 'state.db'}")
    yield opened
    opened.close()


def plan(repo: GitRepo, store: Store, env: str = "default") -> EnvironmentPlan:
    repository = Repository.open(repo.root)
    source = open_source(repository, "HEAD")
    ((name, environment),) = select_environments(source.config, env)
    return plan_environment(repository, store, source, name, environment)


def reconcile(repo: GitRepo, store: Store, env: str = "default") -> EnvironmentPlan:
    """Plan, then record the result as apply would once every step succeeded."""
    result = plan(repo, store, env)
    assert result.desired is not None
    assert not result.failed, result.diagnostics
    repository = Repository.open(repo.root)
    source = open_source(repository, "HEAD")
    loaded = [load_workload(source.tree, w.file) for w in result.desired.workloads]
    record_desired(store, result.desired, source.commit, loaded)
    return result


def actions(result: EnvironmentPlan) -> set[tuple[str, str, str]]:
    assert result.plan is not None
    return {(str(a.action), str(a.kind), a.id) for a in result.plan.changes()}


def test_the_example_shop_plans_every_resource_once(make_repo: MakeRepo, store: Store) -> None:
    repo = make_repo()
    repo.commit(shop_files())
    result = plan(repo, store, "staging")
    assert not result.failed, result.diagnostics
    assert result.plan is not None
    created = {a.id for a in result.plan.actions if a.action is ActionKind.CREATE}
    assert "postgres.default#shop-db" in created  # shared by two workloads, planned once
    assert {"storefront", "orders", "catalog", "payments"} <= created
    steps = [a.step_id for a in result.plan.actions]
    route = steps.index("resource:route.default#storefront.route")
    assert steps.index("resource:dns.default#storefront.dns") < route


def test_create_update_delete_then_nothing(make_repo: MakeRepo, store: Store) -> None:
    repo = make_repo()
    repo.commit({"apps/a/score.yaml": workload("aa"), "apps/b/score.yaml": workload("bb")})
    first = reconcile(repo, store)
    assert actions(first) == {("create", "workload", "aa"), ("create", "workload", "bb")}

    repo.commit(
        {
            "apps/a/score.yaml": workload("aa", "2"),
            "apps/b/score.yaml": None,
            "apps/c/score.yaml": workload("cc"),
        }
    )
    second = plan(repo, store)
    assert actions(second) == {
        ("update", "workload", "aa"),
        ("delete", "workload", "bb"),
        ("create", "workload", "cc"),
    }
    assert second.plan is not None
    update = next(a for a in second.plan.actions if a.id == "aa")
    assert [(c.path, c.old, c.new) for c in update.changes] == [
        ("containers.main.variables.VALUE", "1", "2")
    ]
    reconcile(repo, store)
    repo.commit({"README.md": "docs only"})
    third = plan(repo, store)
    assert third.plan is not None
    assert not third.plan.summary.has_changes
    assert third.parsed == ()


def test_a_one_workload_commit_parses_one_workload(make_repo: MakeRepo, store: Store) -> None:
    repo = make_repo()
    db = "resources:\n  db:\n    type: postgres\n    id: shared-db\n"
    files = {f"apps/w{i:04d}/score.yaml": workload(f"w{i:04d}", resources=db) for i in range(1000)}
    repo.commit(files)
    first = reconcile(repo, store)
    assert len(first.parsed) == 1000
    repo.commit({"apps/w0500/score.yaml": workload("w0500", "changed", db)})
    second = plan(repo, store)
    assert second.parsed == ("apps/w0500/score.yaml",)
    assert actions(second) == {("update", "workload", "w0500")}


def test_a_changed_file_source_reloads_its_workload(make_repo: MakeRepo, store: Store) -> None:
    repo = make_repo()
    text = workload("aa") + "    files:\n      /etc/a.conf:\n        source: a.conf\n"
    repo.commit({"apps/a/score.yaml": text, "apps/a/a.conf": "v1 ${metadata.name}"})
    reconcile(repo, store)
    repo.commit({"apps/a/a.conf": "v2 ${metadata.name}"})
    result = plan(repo, store)
    assert result.parsed == ("apps/a/score.yaml",)
    assert result.plan is not None
    (change,) = next(result.plan.changes()).changes
    assert (change.old, change.new) == ("v1 aa", "v2 aa")


def test_a_broken_file_is_reported_and_never_planned_away(
    make_repo: MakeRepo, store: Store
) -> None:
    repo = make_repo()
    db = "resources:\n  db:\n    type: redis\n"
    repo.commit(
        {"apps/a/score.yaml": workload("aa", resources=db), "apps/b/score.yaml": workload("bb")}
    )
    reconcile(repo, store)
    repo.commit({"apps/a/score.yaml": "apiVersion: score.dev/v1b1\nmetadata: [oops\n"})
    result = plan(repo, store)
    assert result.failed
    (diag,) = [d for d in result.diagnostics if d.code is Code.YAML_SYNTAX]
    assert diag.file == "apps/a/score.yaml"
    assert result.plan is not None
    assert not [a for a in result.plan.actions if a.action is ActionKind.DELETE]


def test_configuration_changes_reload_everything(make_repo: MakeRepo, store: Store) -> None:
    repo = make_repo()
    repo.commit({"apps/a/score.yaml": workload("aa"), "apps/b/score.yaml": workload("bb")})
    reconcile(repo, store)
    repo.commit({"reconciler.yaml": "workloads: ['apps/**/score.yaml']\n"})
    assert sorted(plan(repo, store).parsed) == ["apps/a/score.yaml", "apps/b/score.yaml"]


def test_a_bare_repository_plans_like_a_work_tree(
    make_repo: MakeRepo, store: Store, tmp_path: Path
) -> None:
    repo = make_repo()
    repo.commit({"apps/a/score.yaml": workload("aa")})
    bare = repo.clone_bare(tmp_path / "bare.git")
    repository = Repository.open(bare)
    source = open_source(repository, "main")
    ((name, env),) = select_environments(source.config, None)
    result = plan_environment(repository, store, source, name, env)
    assert actions(result) == {("create", "workload", "aa")}


def test_no_secret_value_reaches_a_plan_or_the_store(
    make_repo: MakeRepo, store: Store, tmp_path: Path
) -> None:
    canary = "canary-7f3e9b2a-secret"
    repo = make_repo()
    uses = "resources:\n  db:\n    type: postgres\n"
    text = workload("aa", resources=uses).replace(
        "VALUE: '1'", "DB: postgres://${resources.db.username}:${resources.db.password}@x"
    )
    repo.commit({"apps/a/score.yaml": text})
    first = reconcile(repo, store)
    assert first.desired is not None
    (db,) = first.desired.resources
    public, hidden = split_outputs(
        {"username": "app", "password": canary, "host": "db"}, ["password"], "default", db.uid
    )
    assert hidden == {"password": canary}  # what apply hands to the secret store, never recorded
    secret_refs = {k: str(v) for k, v in public.items() if k == "password"}
    outputs = {k: v for k, v in public.items() if k != "password"}
    store.save_resource("default", resource_record(db, outputs=outputs, secret_refs=secret_refs))
    repo.commit({"apps/a/score.yaml": text.replace("@x", "@y")})
    result = plan(repo, store)
    assert result.plan is not None
    rendered = [to_text(result.plan).plain, to_json(result.plan), to_markdown(result.plan)]
    for text_out in rendered:
        assert canary not in text_out
        assert "(sensitive value)" in text_out
    store.close()
    for file in tmp_path.glob("state.db*"):
        assert canary.encode() not in file.read_bytes()


@pytest.mark.parametrize(
    "example",
    [
        "01-hello",
        "02-environment",
        "03-files",
        "04-multiple-workloads",
        "05-volume-mounts",
        "06-resource-provisioning",
        "07-overrides",
        "08-service-port-resource",
    ],
)
def test_every_reference_example_plans_cleanly(
    example: str, shared_score: Path, make_repo: MakeRepo, store: Store
) -> None:
    folder = shared_score / "examples" / example
    repo = make_repo()
    files = {p.name: p.read_text() for p in folder.iterdir() if p.is_file()}
    files["reconciler.yaml"] = "workloads: ['*.yaml']\nexclude: ['reconciler.yaml']\n"
    repo.commit(files)
    result = plan(repo, store)
    assert not result.failed, result.diagnostics
    assert result.plan is not None
    resources = [a for a in result.plan.actions if a.kind is Subject.RESOURCE]
    uids = [a.id for a in resources]
    assert len(uids) == len(set(uids))
    for action in result.plan.actions:
        for dep in action.depends_on:
            assert [a.step_id for a in result.plan.actions].index(dep) < list(
                result.plan.actions
            ).index(action)
    if example == "06-resource-provisioning":
        assert sorted(uids) == [
            "redis.default#main-cache",
            "redis.default#workload-two.cache-c",
        ]
    if example == "08-service-port-resource":
        assert uids == ["service-port.default#workload-b.dependency"]


# -- pins ------------------------------------------------------------------------------------

SOURCING = (
    "apiVersion: score.dev/v1b1\n"
    "metadata:\n  name: web\n"
    "containers:\n  main:\n    image: nginx\n"
    "    files:\n      /etc/app.conf:\n        source: app.conf\n"
)


def _content(result: EnvironmentPlan) -> str:
    assert result.desired is not None
    web = result.desired.workload("web")
    assert web is not None
    return str(web.spec["containers"]["main"]["files"]["/etc/app.conf"]["content"])


def test_a_pinned_workload_reads_its_sourced_files_at_the_pinned_commit(
    git_repo: GitRepo, store: Store
) -> None:
    pinned_at = git_repo.commit({"apps/web/score.yaml": SOURCING, "apps/web/app.conf": "one\n"})
    reconcile(git_repo, store)
    head = git_repo.commit({"apps/web/app.conf": "two\n"})  # the Score file stays the same
    assert _content(reconcile(git_repo, store)) == "two\n"
    store.set_pin("default", PinRecord("web", "apps/web/score.yaml", pinned_at, head))

    result = plan(git_repo, store)

    assert result.pinned == ("web",)
    assert _content(result) == "one\n"
    assert actions(result) == {("update", "workload", "web")}


def test_a_trees_configuration_is_read_once_and_follows_its_files(
    make_repo: MakeRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``open_source`` keeps a tree's configuration: opening the same commit again (a resync,
    a fresh repository handle) reads no ``reconciler.yaml``; a tree where the file it names is
    gone, with the same ``reconciler.yaml``, is read again and says so."""
    reads: list[str] = []

    def counted(tree: GitTree) -> LoadedConfig:
        reads.append(tree.commit)
        return load_config(tree)

    monkeypatch.setattr(pipeline, "load_config", counted)
    repo = make_repo()
    config = (
        "apiVersion: reconciler.score.dev/v1alpha1\n"
        "provisioners:\n  - provisioners/extra.yaml\n"
        "environments:\n  staging:\n    branch: main\n"
    )
    first = repo.commit({"reconciler.yaml": config, "provisioners/extra.yaml": "[]\n"})
    opened = [open_source(Repository.open(repo.root), first) for _ in range(3)]
    assert reads == [first]
    assert all(o.config == opened[0].config for o in opened)
    assert opened[0].diagnostics == ()
    second = repo.commit({"provisioners/extra.yaml": None})
    missing = open_source(Repository.open(repo.root), second)
    assert reads == [first, second]
    assert [d.code for d in missing.diagnostics] == [Code.CONFIG_MISSING_FILE]
