"""The manifests target end to end: apply and delete stage, flush commits one revision."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from reconciler.catalogue import Code
from reconciler.desired.secrets import embed, secret_ref
from reconciler.desired.templating import k8s_name
from reconciler.providers.base import DriverError, WorkloadRequest, WorkloadTarget
from reconciler.providers.manifests import ManifestsTarget
from tests.conftest import MakeRepo
from tests.support.gitrepos import GitRepo

ENV = "prod"
BRANCH = "reconciler/deploy/prod"
REDIS = "redis.default#main-cache"


def _request(name: str, image: str = "nginx", **extra: Any) -> WorkloadRequest:
    spec = {"metadata": {"name": name}, "containers": {"main": {"image": image}}}
    return WorkloadRequest(environment=ENV, name=name, spec=spec, **extra)


def _with_redis(name: str) -> WorkloadRequest:
    password = secret_ref(ENV, REDIS, "password")
    spec = {
        "metadata": {"name": name},
        "containers": {"main": {"image": "app", "variables": {"REDIS_PASSWORD": embed(password)}}},
    }
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": k8s_name("redis", "default", "main-cache")},
        "stringData": {"password": "plain-text-from-the-template"},
    }
    return WorkloadRequest(
        environment=ENV,
        name=name,
        spec=spec,
        resources={"cache": REDIS},
        resource_outputs={"cache": {"password": password}},
        resource_manifests=[secret],
    )


def _tree(repo: GitRepo, rev: str = BRANCH) -> list[str]:
    return repo.git("ls-tree", "-r", "--name-only", rev).splitlines()


@pytest.fixture
def repo(make_repo: MakeRepo) -> GitRepo:
    git = make_repo()
    git.commit({"apps/web/score.yaml": "x: 1\n"})
    return git


def test_it_is_a_workload_target(repo: GitRepo) -> None:
    target: WorkloadTarget = ManifestsTarget(repo.root)
    assert target.flush(ENV, "nothing") is None


def test_it_is_local_unless_it_pushes(repo: GitRepo) -> None:
    """Local: the runner's workload and publish steps run inline (``Step.inline``); a flush
    that pushes talks to a server, and they go to workers."""
    assert ManifestsTarget(repo.root).local is True
    assert ManifestsTarget(repo.root, remote="https://git.example.com/deploy.git").local is False


def test_two_workloads_land_in_one_commit(repo: GitRepo) -> None:
    target = ManifestsTarget(repo.root)
    target.apply(_request("web"))
    target.apply(_with_redis("api"))
    sha = target.flush(ENV, "deploy abc1234")
    assert sha is not None
    assert repo.git("rev-parse", BRANCH) == sha
    assert repo.git("rev-list", "--count", BRANCH) == "1"
    assert _tree(repo) == ["api/manifests.yaml", "api/resources.yaml", "web/manifests.yaml"]
    assert repo.git("log", "-1", "--format=%s", BRANCH) == "deploy abc1234"
    resources = repo.git("show", f"{BRANCH}:api/resources.yaml")
    assert "kind: ExternalSecret" in resources
    assert "plain-text-from-the-template" not in resources
    assert repo.git("status", "--porcelain") == ""


def test_a_flush_with_nothing_staged_makes_no_commit(repo: GitRepo) -> None:
    target = ManifestsTarget(repo.root)
    target.apply(_request("web"))
    first = target.flush(ENV, "one")
    assert target.flush(ENV, "two") is None
    target.apply(_request("web"))  # the same objects again
    assert target.flush(ENV, "three") is None
    assert repo.git("rev-parse", BRANCH) == first


def test_a_deleted_workload_leaves_the_branch_at_the_next_flush(repo: GitRepo) -> None:
    target = ManifestsTarget(repo.root)
    target.apply(_request("web"))
    target.apply(_with_redis("api"))
    first = target.flush(ENV, "one")
    target.delete(ENV, "api")
    assert target.observe(ENV, "api").exists  # still committed until the flush
    second = target.flush(ENV, "two")
    assert second is not None
    assert repo.git("rev-parse", f"{BRANCH}^") == first
    assert _tree(repo) == ["web/manifests.yaml"]
    assert not target.observe(ENV, "api").exists
    assert target.observe(ENV, "web").exists


def test_a_workload_losing_its_resources_loses_its_resources_file(repo: GitRepo) -> None:
    target = ManifestsTarget(repo.root)
    target.apply(_with_redis("api"))
    target.flush(ENV, "one")
    target.apply(_request("api"))
    target.flush(ENV, "two")
    assert _tree(repo) == ["api/manifests.yaml"]


def test_environments_have_branches_of_their_own(repo: GitRepo) -> None:
    target = ManifestsTarget(repo.root, branch_template="deploy/{environment}")
    target.apply(_request("web"))
    target.apply(WorkloadRequest(environment="dev", name="dev-only", spec={"containers": {}}))
    assert target.flush("dev", "dev") is not None
    assert target.flush(ENV, "prod") is not None
    assert _tree(repo, "deploy/dev") == ["dev-only/manifests.yaml"]
    assert _tree(repo, "deploy/prod") == ["web/manifests.yaml"]


def test_output_bytes_are_identical_across_runs(make_repo: MakeRepo) -> None:
    trees = []
    for name in ("one", "two"):
        git = make_repo(name)
        target = ManifestsTarget(git.root)
        for request in (_with_redis("api"), _request("web")):
            target.apply(request)
        sha = target.flush(ENV, "deploy")
        trees.append(git.git("rev-parse", f"{sha}^{{tree}}"))
    assert trees[0] == trees[1]


def test_concurrent_applies_all_reach_the_commit(repo: GitRepo) -> None:
    target = ManifestsTarget(repo.root)
    names = [f"w{i}" for i in range(8)]
    threads = [threading.Thread(target=target.apply, args=(_request(n),)) for n in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert target.staged(ENV) == names
    target.flush(ENV, "all")
    assert _tree(repo) == [f"{n}/manifests.yaml" for n in names]


def test_a_failed_flush_keeps_the_staged_changes(repo: GitRepo) -> None:
    target = ManifestsTarget(repo.root, branch_template="main")  # the checked-out branch
    target.apply(_request("web"))
    with pytest.raises(DriverError) as caught:
        target.flush(ENV, "refused")
    assert caught.value.code is Code.DEPLOY_BRANCH_WRITE_FAILED
    assert target.staged(ENV) == ["web"]


def test_a_render_error_stages_nothing(repo: GitRepo) -> None:
    target = ManifestsTarget(repo.root)
    bad = WorkloadRequest(
        environment=ENV,
        name="web",
        spec={"containers": {"c": {"image": "i", "variables": {"X": "🔐💬x💬🔐"}}}},
    )
    with pytest.raises(DriverError) as caught:
        target.apply(bad)
    assert caught.value.code is Code.MANIFEST_RENDER_FAILED
    assert target.staged(ENV) == []


@pytest.mark.parametrize("name", ["../web", "a/b", ".git", "Web"])
def test_names_that_are_not_folders_are_refused(repo: GitRepo, name: str) -> None:
    with pytest.raises(DriverError):
        ManifestsTarget(repo.root).delete(ENV, name)


def test_observe_before_any_commit_says_missing(repo: GitRepo) -> None:
    observed = ManifestsTarget(repo.root).observe(ENV, "web")
    assert not observed.exists
    assert BRANCH in observed.message
