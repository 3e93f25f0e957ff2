"""Opening repositories and naming commits, on real repositories made with the git binary."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from reconciler.catalogue import Code
from reconciler.gitops import GitError, Repository
from tests.conftest import MakeRepo
from tests.support.gitrepos import GitRepo


@pytest.fixture
def history(git_repo: GitRepo) -> tuple[GitRepo, str, str]:
    first = git_repo.commit({"apps/web/score.yaml": "a: 1\n"}, "first\n\nwith a body")
    second = git_repo.commit({"apps/web/score.yaml": "a: 2\n"}, "second")
    return git_repo, first, second


def test_open_from_a_subfolder_finds_the_work_tree(history: tuple[GitRepo, str, str]) -> None:
    git_repo, _, second = history
    repo = Repository.open(git_repo.root / "apps" / "web")
    assert repo.path.resolve() == git_repo.root.resolve()
    assert repo.git_dir.resolve() == (git_repo.root / ".git").resolve()
    assert not repo.is_bare
    assert repo.resolve() == second


def test_a_bare_clone_reads_like_the_work_tree(
    history: tuple[GitRepo, str, str], tmp_path: Path
) -> None:
    git_repo, first, second = history
    bare = Repository.open(git_repo.clone_bare(tmp_path / "bare.git"))
    assert bare.is_bare
    assert bare.path.resolve() == bare.git_dir.resolve() == (tmp_path / "bare.git").resolve()
    assert bare.resolve("main") == second
    assert bare.tree("main~1").read("apps/web/score.yaml") == b"a: 1\n"
    assert bare.changed_paths(first, second).modified == {"apps/web/score.yaml"}


def test_resolve_names_commits_every_way_git_does(history: tuple[GitRepo, str, str]) -> None:
    git_repo, first, second = history
    git_repo.tag("light", message=None)
    git_repo.tag("v1", message="release one")
    repo = Repository.open(git_repo.root)
    assert repo.resolve("main") == second
    assert repo.resolve("refs/heads/main") == second
    assert repo.resolve("HEAD~1") == first
    assert repo.resolve(first[:7]) == first
    assert repo.resolve("light") == second
    assert repo.resolve("v1") == second  # the annotated tag is peeled to its commit
    assert repo.resolve("refs/tags/v1") == second


@pytest.mark.parametrize("rev", ["nope", "HEAD~9", "a..b..c", "HEAD:apps", "0" * 40, ""])
def test_unknown_revisions_are_revision_not_found(
    history: tuple[GitRepo, str, str], rev: str
) -> None:
    repo = Repository.open(history[0].root)
    with pytest.raises(GitError) as caught:
        repo.resolve(rev)
    assert caught.value.code is Code.REVISION_NOT_FOUND
    assert f"'{rev}'" in str(caught.value)


def test_an_empty_repository_has_no_head(git_repo: GitRepo) -> None:
    repo = Repository.open(git_repo.root)
    with pytest.raises(GitError) as caught:
        repo.resolve()
    assert caught.value.code is Code.REVISION_NOT_FOUND
    assert repo.branch_head("main") is None


@pytest.mark.parametrize("missing", [False, True])
def test_a_folder_outside_any_repository_is_repository_not_found(
    tmp_path: Path, missing: bool
) -> None:
    folder = tmp_path / "plain"
    if not missing:
        folder.mkdir()
    with pytest.raises(GitError) as caught:
        Repository.open(folder)
    assert caught.value.code is Code.REPOSITORY_NOT_FOUND
    assert str(folder) in caught.value.message


def test_commit_info(history: tuple[GitRepo, str, str]) -> None:
    git_repo, first, second = history
    info = Repository.open(git_repo.root).commit_info("HEAD~1")
    assert info.sha == first
    assert info.short == first[:7]
    assert info.summary == "first"
    assert (info.author, info.author_email) == ("Ada Lovelace", "ada@example.com")
    assert info.committed_at == datetime(2024, 1, 1, 0, 1, tzinfo=UTC)
    assert info.parents == ()
    assert Repository.open(git_repo.root).commit_info(second).parents == (first,)


def test_branch_head(history: tuple[GitRepo, str, str]) -> None:
    git_repo, first, second = history
    git_repo.git("branch", "staging", first)
    repo = Repository.open(git_repo.root)
    assert repo.branch_head("main") == second
    assert repo.branch_head("staging") == first
    assert repo.branch_head("nope") is None
    assert repo.branch_head("bad..name") is None


def test_trees_are_kept_per_commit(make_repo: MakeRepo) -> None:
    git_repo = make_repo()
    sha = git_repo.commit({"a.txt": "a"})
    repo = Repository.open(git_repo.root)
    assert repo.tree("HEAD") is repo.tree(sha)
    assert repo.tree("HEAD").commit == sha
