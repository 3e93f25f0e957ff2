"""write_branch: commits on a branch without a checkout, in bare repositories and work trees,
with compare-and-swap against concurrent writers."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from reconciler.catalogue import Code
from reconciler.gitops import commit as commit_module
from reconciler.gitops.commit import write_branch
from reconciler.gitops.errors import GitError
from reconciler.gitops.reflock import STALE_AFTER
from tests.conftest import MakeRepo
from tests.support.gitrepos import GitRepo

AUTHOR = ("score-reconciler", "reconciler@example.com")
BRANCH = "reconciler/deploy/prod"


def _write(repo: Path, files: dict[str, bytes | None], prefix: str = "") -> str | None:
    return write_branch(repo, BRANCH, files, prefix=prefix, message="deploy", author=AUTHOR)


def _files(git: GitRepo, rev: str = BRANCH) -> dict[str, str]:
    listed = git.git("ls-tree", "-r", "--name-only", rev).splitlines()
    return {path: git.git("show", f"{rev}:{path}") for path in listed}


@pytest.fixture
def bare(make_repo: MakeRepo, tmp_path: Path) -> GitRepo:
    source = make_repo("source")
    source.commit({"README.md": "hello\n"})
    path = source.clone_bare(tmp_path / "bare.git")
    return GitRepo(path, source.env)


def test_a_first_write_creates_the_branch_in_a_bare_repository(bare: GitRepo) -> None:
    sha = _write(bare.root, {"web/manifests.yaml": b"a: 1\n"})
    assert sha is not None
    assert bare.git("rev-parse", BRANCH) == sha
    assert _files(bare) == {"web/manifests.yaml": "a: 1"}
    assert bare.git("log", "--format=%an <%ae>|%s", BRANCH) == (
        "score-reconciler <reconciler@example.com>|deploy"
    )
    assert bare.git("rev-list", "--count", BRANCH) == "1"  # no parent: an orphan branch


def test_the_next_write_builds_on_the_previous_head(bare: GitRepo) -> None:
    first = _write(bare.root, {"web/manifests.yaml": b"a: 1\n"})
    second = _write(bare.root, {"api/manifests.yaml": b"b: 2\n"})
    assert second is not None
    assert bare.git("rev-parse", f"{BRANCH}^") == first
    assert _files(bare) == {"web/manifests.yaml": "a: 1", "api/manifests.yaml": "b: 2"}


def test_an_unchanged_tree_makes_no_commit(bare: GitRepo) -> None:
    sha = _write(bare.root, {"web/manifests.yaml": b"a: 1\n"})
    assert _write(bare.root, {"web/manifests.yaml": b"a: 1\n"}) is None
    assert _write(bare.root, {"gone/x.yaml": None}) is None
    assert bare.git("rev-parse", BRANCH) == sha


def test_nothing_to_write_creates_no_branch(bare: GitRepo) -> None:
    assert _write(bare.root, {"web": None}) is None
    assert BRANCH not in bare.git("branch", "--list")


def test_none_deletes_a_whole_folder(bare: GitRepo) -> None:
    _write(bare.root, {"web/manifests.yaml": b"a\n", "web/resources.yaml": b"b\n", "api/m": b"c\n"})
    assert _write(bare.root, {"web": None}) is not None
    assert _files(bare) == {"api/m": "c"}


def test_deleting_the_last_folder_leaves_an_empty_tree(bare: GitRepo) -> None:
    _write(bare.root, {"web/manifests.yaml": b"a\n"})
    assert _write(bare.root, {"web": None}) is not None
    assert _files(bare) == {}


def test_a_folder_deleted_and_written_together_is_replaced(bare: GitRepo) -> None:
    _write(bare.root, {"web/manifests.yaml": b"a\n", "web/resources.yaml": b"b\n"})
    _write(bare.root, {"web": None, "web/manifests.yaml": b"new\n"})
    assert _files(bare) == {"web/manifests.yaml": "new"}


def test_paths_are_relative_to_the_prefix(bare: GitRepo) -> None:
    _write(bare.root, {"web/m.yaml": b"a\n"}, prefix="clusters/prod")
    _write(bare.root, {"keep.txt": b"k\n"})
    _write(bare.root, {"web": None, "api/m.yaml": b"b\n"}, prefix="clusters/prod")
    assert _files(bare) == {"clusters/prod/api/m.yaml": "b", "keep.txt": "k"}


def test_bytes_are_stored_exactly(bare: GitRepo) -> None:
    data = "ünïcode\r\nno final newline".encode()
    sha = _write(bare.root, {"f": data})
    assert bare.git("cat-file", "-s", f"{sha}:f") == str(len(data))


def test_identical_input_gives_identical_trees(bare: GitRepo, make_repo: MakeRepo) -> None:
    other = make_repo("other")
    files: dict[str, bytes | None] = {"b/x": b"1\n", "a/y": b"2\n"}
    one = _write(bare.root, files)
    two = _write(other.root, dict(reversed(files.items())))
    assert bare.git("rev-parse", f"{one}^{{tree}}") == other.git("rev-parse", f"{two}^{{tree}}")


def test_a_work_tree_its_head_and_files_stay_untouched(git_repo: GitRepo) -> None:
    head = git_repo.commit({"apps/web/score.yaml": "x: 1\n"})
    (git_repo.root / "scratch.txt").write_text("uncommitted\n")
    sha = _write(git_repo.root, {"web/manifests.yaml": b"a\n"})
    assert sha is not None
    assert git_repo.git("rev-parse", "HEAD") == head
    assert git_repo.git("symbolic-ref", "HEAD") == "refs/heads/main"
    assert git_repo.git("status", "--porcelain") == "?? scratch.txt"
    assert not (git_repo.root / "web").exists()
    assert _files(git_repo) == {"web/manifests.yaml": "a"}


def test_the_checked_out_branch_is_refused(git_repo: GitRepo) -> None:
    git_repo.commit({"a": "1\n"})
    with pytest.raises(GitError) as caught:
        write_branch(git_repo.root, "main", {"x": b"1"}, prefix="", message="m", author=AUTHOR)
    assert caught.value.code is Code.DEPLOY_BRANCH_WRITE_FAILED


@pytest.mark.parametrize("path", ["../x", "a/../../x", ".git/config", ""])
def test_unsafe_paths_are_refused(bare: GitRepo, path: str) -> None:
    with pytest.raises(GitError) as caught:
        _write(bare.root, {path: b"x"})
    assert caught.value.code is Code.DEPLOY_BRANCH_WRITE_FAILED


def test_a_missing_repository_is_a_write_error(tmp_path: Path) -> None:
    with pytest.raises(GitError) as caught:
        _write(tmp_path / "nowhere", {"a": b"1"})
    assert caught.value.code is Code.DEPLOY_BRANCH_WRITE_FAILED


def test_a_writer_that_lands_between_read_and_swap_is_not_lost(
    bare: GitRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(bare.root, {"base/m": b"0\n"})
    original = commit_module._new_commit
    raced: list[str | None] = []

    def racing_commit(*args: object, **kwargs: object) -> object:
        if not raced:  # the first attempt: someone else moves the branch right now
            raced.append(None)
            raced[0] = _write(bare.root, {"other/m": b"theirs\n"})
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(commit_module, "_new_commit", racing_commit)
    ours = _write(bare.root, {"web/m": b"ours\n"})
    assert raced[0] is not None
    assert ours is not None
    assert bare.git("rev-parse", f"{BRANCH}^") == raced[0]
    assert _files(bare) == {"base/m": "0", "other/m": "theirs", "web/m": "ours"}


def test_concurrent_threads_keep_every_change(bare: GitRepo) -> None:
    errors: list[BaseException] = []

    def writer(name: str) -> None:
        try:
            for i in range(5):
                _write(bare.root, {f"{name}/{i}": f"{name}{i}\n".encode()})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(f"w{n}",)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(_files(bare)) == 15
    assert bare.git("rev-list", "--count", BRANCH) == "15"


def _lock(git_dir: Path, ref: str, age: float) -> Path:
    """A ref lock file as a writer killed ``age`` seconds ago would have left it."""
    lock = git_dir / f"{ref}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text("0" * 40 + "\n")
    then = time.time() - age
    os.utime(lock, (then, then))
    return lock


def test_a_lock_left_by_a_killed_writer_is_removed_and_the_write_lands(bare: GitRepo) -> None:
    first = _write(bare.root, {"web/manifests.yaml": b"a: 1\n"})
    lock = _lock(bare.root, f"refs/heads/{BRANCH}", age=STALE_AFTER + 1)
    second = _write(bare.root, {"web/manifests.yaml": b"a: 2\n"})
    assert second is not None
    assert bare.git("rev-parse", f"{BRANCH}^") == first
    assert not lock.exists()


def test_a_fresh_lock_is_left_alone_and_named_in_the_error(bare: GitRepo) -> None:
    first = _write(bare.root, {"web/manifests.yaml": b"a: 1\n"})
    lock = _lock(bare.root, f"refs/heads/{BRANCH}", age=0)
    with pytest.raises(GitError) as caught:
        _write(bare.root, {"web/manifests.yaml": b"a: 2\n"})
    assert caught.value.code is Code.DEPLOY_BRANCH_WRITE_FAILED
    assert str(lock) in caught.value.message
    assert lock.exists()
    assert bare.git("rev-parse", BRANCH) == first
