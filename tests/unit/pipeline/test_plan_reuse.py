"""A plan of the same inputs is the last plan again (``pipeline._LastPlan``), and only then.

Real Git repository, real SQLite store: a settled commit is planned twice with every input the
same, then with each input changed in turn (the store's records, its last commit, a pin, the
environment's configuration, the commit), each of which must be planned anew."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from reconciler.engine import Executor, StoreCheckpointer
from reconciler.gitops.repository import Repository
from reconciler.pipeline import EnvironmentPlan, ParsedFiles, open_source, plan_environment
from reconciler.plan.render import to_json
from reconciler.runner import apply_environment
from reconciler.services import services_for
from reconciler.store.records import PinRecord
from reconciler.store.store import Store
from tests.conftest import MakeRepo
from tests.reliability.conftest import plain_workload
from tests.support.gitrepos import GitRepo

CONFIG = "environments:\n  staging:\n    branch: main\n"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open("sqlite:///" + str(tmp_path / "state.db")) as opened:
        yield opened


@pytest.fixture
def settled(make_repo: MakeRepo, store: Store) -> GitRepo:
    """Two workloads applied and recorded at the repository's only commit."""
    repo = make_repo()
    repo.commit(
        {"reconciler.yaml": CONFIG}
        | {f"apps/{n}/score.yaml": plain_workload(n) for n in ("aa", "bb")}
    )
    repository = Repository.open(repo.root)
    source = open_source(repository, "HEAD")
    env = source.config.environments["staging"]
    services = services_for(store, repository, "staging", env)
    outcome = apply_environment(
        repository, services, source, "staging", env, executor=Executor(StoreCheckpointer(store))
    )
    assert outcome.status == "Succeeded"
    return repo


def plan(repo: GitRepo, store: Store, **env_changes: object) -> EnvironmentPlan:
    repository = Repository.open(repo.root)
    source = open_source(repository, "HEAD")
    env = source.config.environments["staging"]
    if env_changes:
        env = env.model_copy(update=env_changes)
    return plan_environment(repository, store, source, "staging", env)


def test_a_resync_of_a_settled_commit_is_the_last_plan(settled: GitRepo, store: Store) -> None:
    first = plan(settled, store)
    again = plan(settled, store)
    assert first.plan is not None
    assert not first.plan.summary.has_changes
    assert again.plan is first.plan
    assert (again.parsed, again.resolved) == ((), ())


def test_a_resync_empties_the_parse_cache_as_a_plan_would(settled: GitRepo, store: Store) -> None:
    plan(settled, store)
    repository = Repository.open(settled.root)
    source = open_source(repository, "HEAD")
    parsed = ParsedFiles({"apps/gone/score.yaml": object()})  # type: ignore[dict-item]
    env = source.config.environments["staging"]
    plan_environment(repository, store, source, "staging", env, parsed=parsed)
    assert dict(parsed) == {}


def test_a_record_written_meanwhile_is_planned_anew(settled: GitRepo, store: Store) -> None:
    first = plan(settled, store)
    cache = store.recorded("staging").resources["redis.default#aa.cache"]
    store.save_resource("staging", replace(cache, outputs={**cache.outputs, "host": "elsewhere"}))
    after = plan(settled, store)
    assert after.plan is not first.plan
    assert after.plan is not None
    assert [a.id for a in after.plan.changes()] == ["aa"]


def test_another_last_commit_is_planned_anew(settled: GitRepo, store: Store) -> None:
    first = plan(settled, store)
    store.set_last_commit("staging", None)
    after = plan(settled, store)
    assert after.plan is not first.plan
    assert after.plan is not None
    assert after.plan.base_commit is None


def test_a_pin_is_planned_anew(settled: GitRepo, store: Store) -> None:
    first = plan(settled, store)
    head = open_source(Repository.open(settled.root), "HEAD").commit
    store.set_pin("staging", PinRecord("aa", "apps/aa/score.yaml", head, head))
    after = plan(settled, store)
    assert after.plan is not first.plan
    assert after.pinned == ("aa",)


def test_another_configuration_is_planned_anew(settled: GitRepo, store: Store) -> None:
    first = plan(settled, store)
    after = plan(settled, store, variables={"REGION": "eu"})
    assert after.plan is not first.plan
    assert to_json(after.plan) == to_json(first.plan)  # type: ignore[arg-type]
    assert plan(settled, store).plan is not after.plan  # and back


def test_another_commit_is_planned_anew(settled: GitRepo, store: Store) -> None:
    first = plan(settled, store)
    settled.commit({"apps/bb/score.yaml": plain_workload("bb", image="nginx:1.28")})
    after = plan(settled, store)
    assert after.plan is not None
    assert after.plan is not first.plan
    assert [a.id for a in after.plan.changes()] == ["bb"]
