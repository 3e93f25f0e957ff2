"""The status branch: files per environment and workload, a commit per change, none otherwise."""

from __future__ import annotations

import threading
from pathlib import Path

from ruamel.yaml import YAML

from reconciler.gitops.status import (
    Health,
    Phase,
    StatusBranch,
    Sync,
    WorkloadStatus,
    write_status,
)
from reconciler.gitops.status.status_branch import to_yaml
from tests.conftest import MakeRepo
from tests.support.gitrepos import GitRepo
from tests.unit.status.support import FAILURE, status

BRANCH = "reconciler/status"


def _show(repo: GitRepo, path: str, rev: str = BRANCH) -> object:
    return YAML(typ="safe").load(repo.git("show", f"{rev}:{path}"))


def _files(repo: GitRepo, rev: str = BRANCH) -> list[str]:
    return repo.git("ls-tree", "-r", "--name-only", rev).splitlines()


def test_one_commit_holds_a_file_per_workload_and_environment(make_repo: MakeRepo) -> None:
    repo = make_repo()
    sha = repo.commit({"README.md": "hello\n"})
    prod = status(commit=sha, failures=(FAILURE,))
    staging = status(commit=sha, environment="staging", phase=Phase.FAILED)

    commit = write_status(repo.root, [prod, staging])

    assert commit == repo.git("rev-parse", BRANCH)
    assert _files(repo) == [
        "prod/_environment.yaml",
        "prod/api.yaml",
        "prod/web.yaml",
        "staging/_environment.yaml",
        "staging/api.yaml",
        "staging/web.yaml",
    ]
    assert _show(repo, "prod/api.yaml") == {
        "environment": "prod",
        "workload": "api",
        "commit": sha,
        "phase": "Succeeded",
        "sync": "Synced",
        "health": "Healthy",
        "message": "rolled out",
    }
    env = _show(repo, "prod/_environment.yaml")
    assert isinstance(env, dict)
    assert env["failures"] == [
        {
            "code": "RCN-1202",
            "file": "apps/web/score.yaml",
            "line": 12,
            "message": FAILURE.message,
            "severity": "error",
        }
    ]
    assert env["summary"] == {"add": 1, "change": 2, "destroy": 0}
    assert "run_id" not in env
    assert "at" not in env
    message = repo.git("log", "-1", "--format=%B", BRANCH)
    assert "Reconciler-Run: run-1" in message
    assert f"Reconciler-Commit: {sha}" in message
    assert repo.git("status", "--porcelain") == ""  # the work tree and HEAD were not touched
    assert repo.git("rev-parse", "--abbrev-ref", "HEAD") == "main"


def test_the_same_state_again_makes_no_commit(make_repo: MakeRepo) -> None:
    repo = make_repo()
    sha = repo.commit({"README.md": "hello\n"})
    first = write_status(repo.root, [status(commit=sha)])
    again = status(commit=sha, run_id="run-2")  # a resync that found nothing new
    assert write_status(repo.root, [again]) is None
    assert repo.git("rev-parse", BRANCH) == first


def test_a_new_status_is_a_child_commit_and_drops_removed_workloads(make_repo: MakeRepo) -> None:
    repo = make_repo()
    sha = repo.commit({"README.md": "hello\n"})
    first = write_status(repo.root, [status(commit=sha)])
    degraded = {"web": WorkloadStatus(Sync.SYNCED, Health.DEGRADED, "crash loop")}
    second = write_status(repo.root, [status(commit=sha, workloads=degraded)])
    assert second is not None
    assert second != first
    assert repo.git("rev-parse", f"{BRANCH}~1") == first
    assert _files(repo) == ["prod/_environment.yaml", "prod/web.yaml"]
    web = _show(repo, "prod/web.yaml")
    assert isinstance(web, dict)
    assert web["health"] == "Degraded"


def test_works_in_a_bare_repository_through_the_reporter(
    make_repo: MakeRepo, tmp_path: Path
) -> None:
    repo = make_repo()
    sha = repo.commit({"README.md": "hello\n"})
    bare = repo.clone_bare(tmp_path / "bare.git")
    StatusBranch(bare, branch="status").report(status(commit=sha))
    names = repo.git(f"--git-dir={bare}", "ls-tree", "-r", "--name-only", "status")
    assert names.splitlines() == ["prod/_environment.yaml", "prod/api.yaml", "prod/web.yaml"]


def test_concurrent_writers_keep_every_environment(make_repo: MakeRepo) -> None:
    repo = make_repo()
    sha = repo.commit({"README.md": "hello\n"})
    envs = [f"env-{i}" for i in range(8)]
    threads = [
        threading.Thread(target=write_status, args=(repo.root, [status(commit=sha, environment=e)]))
        for e in envs
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert {path.split("/")[0] for path in _files(repo)} == set(envs)
    assert repo.git("rev-list", "--count", BRANCH) == "8"


def test_yaml_reads_back_with_the_same_types() -> None:
    doc = {
        "yes": "no",
        "n": None,
        "count": 3,
        "text": 'a "quoted"\nline: x',
        "empty": [],
        "nested": {"web app": {"on": "true"}},
        "items": [{"a": 1, "b": "2"}],
    }
    assert YAML(typ="safe").load(to_yaml(doc)) == doc


def test_a_status_of_some_workloads_writes_theirs_and_keeps_the_others(
    make_repo: MakeRepo,
) -> None:
    repo = make_repo()
    sha = repo.commit({"README.md": "hello\n"})
    write_status(repo.root, [status(commit=sha)])  # prod: web and api
    degraded = {"web": WorkloadStatus(Sync.OUT_OF_SYNC, Health.DEGRADED, "the run failed")}
    write_status(repo.root, [status(commit=sha, workloads=degraded, scope=("web", "old"))])
    assert _files(repo) == ["prod/_environment.yaml", "prod/api.yaml", "prod/web.yaml"]
    web = _show(repo, "prod/web.yaml")
    assert isinstance(web, dict)
    assert web["health"] == "Degraded"
    verdict = status(commit=sha, phase=Phase.FAILED, workloads={}, scope=())
    write_status(repo.root, [verdict])  # the environment's verdict: its own file only
    assert _files(repo) == ["prod/_environment.yaml", "prod/api.yaml", "prod/web.yaml"]
    environment = _show(repo, "prod/_environment.yaml")
    assert isinstance(environment, dict)
    assert environment["phase"] == "Failed"
