"""Pushing the branches the reconciler writes: two replicas' mirrors writing one branch diverge,
and the second push merges instead of failing or overwriting. Real repositories, real git."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from reconciler.gitops.commit import write_branch
from reconciler.gitops.errors import GitError
from reconciler.gitops.push import push_branch

AUTHOR = ("test", "test@localhost")


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    return done.stdout


def bare(path: Path) -> Path:
    git(path.parent, "init", "-q", "--bare", path.name)
    return path


def files_on(remote: Path, branch: str) -> dict[str, str]:
    names = git(remote, "ls-tree", "-r", "--name-only", branch).split()
    return {name: git(remote, "show", f"{branch}:{name}") for name in names}


def write(repo: Path, files: dict[str, bytes | None]) -> None:
    write_branch(repo, "reconciler/status", files, prefix="", message="status", author=AUTHOR)


def test_diverged_writers_both_land_on_the_remote(tmp_path: Path) -> None:
    remote = bare(tmp_path / "remote.git")
    one, two = bare(tmp_path / "one.git"), bare(tmp_path / "two.git")
    write(one, {"staging/aa.yaml": b"one\n", "staging/shared.yaml": b"one\n"})
    push_branch(one, str(remote), "reconciler/status")
    write(two, {"staging/bb.yaml": b"two\n", "staging/shared.yaml": b"two\n"})
    push_branch(two, str(remote), "reconciler/status")  # rejected first: fetch, merge, push
    assert files_on(remote, "reconciler/status") == {
        "staging/aa.yaml": "one\n",
        "staging/bb.yaml": "two\n",
        "staging/shared.yaml": "two\n",  # the later writer's word wins
    }
    write(one, {"staging/aa.yaml": b"one again\n"})
    push_branch(one, str(remote), "reconciler/status")
    assert files_on(remote, "reconciler/status")["staging/aa.yaml"] == "one again\n"
    assert files_on(remote, "reconciler/status")["staging/bb.yaml"] == "two\n"


def test_nothing_written_pushes_nothing_and_an_unreachable_remote_is_a_coded_error(
    tmp_path: Path,
) -> None:
    repo = bare(tmp_path / "one.git")
    push_branch(repo, str(tmp_path / "nowhere.git"), "reconciler/status")  # no branch yet
    write(repo, {"a.yaml": b"a\n"})
    with pytest.raises(GitError) as caught:
        push_branch(repo, str(tmp_path / "nowhere.git"), "reconciler/status")
    assert caught.value.code.id == "RCN-4017"
