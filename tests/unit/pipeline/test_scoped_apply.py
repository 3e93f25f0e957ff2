"""A run scoped to some workloads (the daemon's per-workload queue): it applies their part of
the commit and nothing else, resumes a killed replica's run it covers, and leaves recording the
commit as reconciled to the environment. Real Git repository, real SQLite store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.engine import Executor, StoreCheckpointer
from reconciler.gitops.repository import Repository
from reconciler.pipeline import open_source
from reconciler.runner import RunOutcome, apply_environment, find_open_run
from reconciler.services import services_for
from reconciler.store.store import Store
from tests.conftest import MakeRepo
from tests.reliability.conftest import plain_workload
from tests.support.gitrepos import GitRepo

CONFIG = "environments:\n  staging:\n    branch: main\n"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open("sqlite:///" + str(tmp_path / "state.db")) as opened:
        yield opened


def apply(repo: GitRepo, store: Store, scope: list[str] | None) -> RunOutcome:
    repository = Repository.open(repo.root)
    source = open_source(repository, "HEAD")
    env = source.config.environments["staging"]
    services = services_for(store, repository, "staging", env)
    return apply_environment(
        repository,
        services,
        source,
        "staging",
        env,
        executor=Executor(StoreCheckpointer(store)),
        partial=True,
        scope=scope,
    )


def test_a_scoped_run_applies_only_its_workloads_and_records_no_commit(
    make_repo: MakeRepo, store: Store
) -> None:
    repo = make_repo()
    head = repo.commit(
        {"reconciler.yaml": CONFIG}
        | {f"apps/{n}/score.yaml": plain_workload(n) for n in ("aa", "bb")}
    )
    outcome = apply(repo, store, ["aa"])
    assert outcome.status == "Succeeded"
    assert outcome.run is not None
    assert outcome.run.scope == ("aa",)
    recorded = store.recorded("staging")
    assert set(recorded.workloads) == {"aa"}
    assert {r.source_workload for r in recorded.resources.values()} == {"aa"}
    assert store.last_commit("staging") != head  # bb is still to do

    outcome = apply(repo, store, ["aa"])  # nothing left for aa
    assert (outcome.run, outcome.message) == (None, "no changes")

    outcome = apply(repo, store, ["bb"])
    assert set(store.recorded("staging").workloads) == {"aa", "bb"}
    assert apply(repo, store, None).message == "no changes"
    assert store.last_commit("staging") == head  # the environment's run records it


def test_a_scoped_run_resumes_an_open_run_it_covers_and_leaves_others_alone(
    make_repo: MakeRepo, store: Store
) -> None:
    repo = make_repo()
    head = repo.commit(
        {"reconciler.yaml": CONFIG}
        | {f"apps/{n}/score.yaml": plain_workload(n) for n in ("aa", "bb")}
    )
    # A replica died while running aa: its run is left Running.
    dead = store.create_run("staging", head, trigger="daemon", scope=["aa"], status="Running")
    other = store.create_run("staging", head, trigger="daemon", scope=["cc"], status="Running")
    assert find_open_run(store, "staging", head, frozenset({"bb"})) is None
    assert find_open_run(store, "staging", head, frozenset({"aa", "bb"})) == dead

    outcome = apply(repo, store, ["aa", "bb"])
    assert outcome.run is not None
    assert outcome.run.id == dead.id
    assert outcome.run.scope == ("aa", "bb")
    assert outcome.status == "Succeeded"
    still = store.get_run(other.id)
    assert still is not None
    assert still.status == "Running"
