"""One commit's files through ``reconciler.tree.Tree``: listing, reading and following links."""

from __future__ import annotations

import errno
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from reconciler.catalogue import Code
from reconciler.gitops import GitError, GitTree, Repository
from reconciler.tree import DirectoryTree, Tree
from reconciler.validate import validate_tree
from tests.conftest import PROJECT
from tests.support.gitrepos import GitRepo, Symlink


def committed(git_repo: GitRepo, files: dict[str, str | bytes | Symlink | None]) -> GitTree:
    sha = git_repo.commit(files)
    return Repository.open(git_repo.root).tree(sha)


@pytest.fixture
def tree(git_repo: GitRepo) -> GitTree:
    return committed(
        git_repo,
        {
            "reconciler.yaml": "workloads: ['apps/**/score.yaml']\n",
            "apps/web/score.yaml": "web\n",
            "apps/web/conf/nginx.conf": "server {}\n",
            "apps/api/score.yaml": "api\n",
            "apps-b.txt": "sorts between apps/ entries by string\n",
            "bin/run.sh": "#!/bin/sh\n",
            "node_modules/pkg/score.yaml": "vendored\n",
        },
    )


def test_files_lists_nested_files_sorted_like_a_work_tree(tree: GitTree, git_repo: GitRepo) -> None:
    listed = list(tree.files())
    assert listed == [
        "apps-b.txt",
        "apps/api/score.yaml",
        "apps/web/conf/nginx.conf",
        "apps/web/score.yaml",
        "bin/run.sh",
        "reconciler.yaml",
    ]
    assert listed == list(DirectoryTree(git_repo.root).files())
    assert list(tree.files()) == listed  # the cached listing is served again


def test_read_nested_missing_and_folders(tree: GitTree) -> None:
    assert tree.read("apps/web/conf/nginx.conf") == b"server {}\n"
    assert tree.read("./apps//web/../api/score.yaml") == b"api\n"
    assert tree.read("node_modules/pkg/score.yaml") == b"vendored\n"  # unlisted, still readable
    with pytest.raises(FileNotFoundError):
        tree.read("apps/web/missing.yaml")
    with pytest.raises(FileNotFoundError):
        tree.read("apps/web")
    with pytest.raises(FileNotFoundError):
        tree.read("apps/web/score.yaml/inside")
    assert tree.resolve("apps/web") == "apps/web"
    assert tree.exists("apps/web/score.yaml")
    assert not tree.exists("apps/web")
    assert not tree.exists("nope")


def answers(tree: GitTree, path: str) -> tuple[object, bool]:
    try:
        resolved: object = tree.resolve(path)
    except FileNotFoundError:
        resolved = FileNotFoundError
    return resolved, tree.exists(path)


def test_lookups_give_the_same_answers_before_and_after_a_walk(tree: GitTree) -> None:
    paths = ["apps/web/score.yaml", "apps/web", "nope/x", "node_modules/pkg/score.yaml"]
    before = [answers(tree, p) for p in paths]
    list(tree.files())
    assert [answers(tree, p) for p in paths] == before
    assert before[2] == (FileNotFoundError, False)


def test_blob_id_is_the_content_id(tree: GitTree, git_repo: GitRepo) -> None:
    assert tree.blob_id("apps/web/score.yaml") == git_repo.git(
        "rev-parse", "HEAD:apps/web/score.yaml"
    )
    assert tree.blob_id("apps/web") is None
    assert tree.blob_id("nope") is None


LINKED: dict[str, str | Symlink] = {
    "apps/web/score.yaml": "web\n",
    "apps/web/shared.conf": Symlink("../../shared/base.conf"),
    "apps/web/same": Symlink("./score.yaml"),
    "apps/web/hop1": Symlink("same"),
    "apps/web/out": Symlink("../../../outside.conf"),
    "apps/web/abs": Symlink("/etc/passwd"),
    "apps/web/dangling": Symlink("nowhere.conf"),
    "apps/web/loop-a": Symlink("loop-b"),
    "apps/web/loop-b": Symlink("loop-a"),
    "shared/base.conf": "base\n",
    "web": Symlink("apps/web"),
    "up": Symlink(".."),
}
"""Files and links of every kind a lookup meets: chained, escaping, absolute, dangling, looping."""


@pytest.fixture
def linked(git_repo: GitRepo) -> GitTree:
    return committed(git_repo, LINKED)


def test_a_relative_link_inside_the_tree_resolves_and_reads(linked: GitTree) -> None:
    assert linked.resolve("apps/web/shared.conf") == "shared/base.conf"
    assert linked.read("apps/web/shared.conf") == b"base\n"
    assert linked.read("apps/web/hop1") == b"web\n"
    assert linked.blob_id("apps/web/hop1") == linked.blob_id("apps/web/score.yaml")
    assert linked.resolve("web/shared.conf") == "shared/base.conf"  # a linked folder on the way
    assert linked.read("web/score.yaml") == b"web\n"


@pytest.mark.parametrize("path", ["apps/web/out", "apps/web/abs", "up/etc/passwd", "/etc/passwd"])
def test_links_that_leave_the_tree_resolve_to_none(linked: GitTree, path: str) -> None:
    assert linked.resolve(path) is None
    with pytest.raises(PermissionError):
        linked.read(path)
    assert not linked.exists(path)


def test_a_link_loop_is_reported_as_missing(linked: GitTree) -> None:
    with pytest.raises(FileNotFoundError) as caught:
        linked.read("apps/web/loop-a")
    assert caught.value.errno == errno.ELOOP
    assert linked.blob_id("apps/web/loop-b") is None


def test_files_lists_links_to_files_but_not_to_folders(linked: GitTree, git_repo: GitRepo) -> None:
    listed = set(linked.files())
    assert {"apps/web/shared.conf", "apps/web/abs", "apps/web/dangling"} <= listed
    assert "web" not in listed
    # A link out of the tree is listed whatever it points at: a commit cannot know, and reading
    # it then reports the escape. A checkout lists "up" (a link to a folder) as a folder.
    assert "up" in listed
    assert listed - {"up"} == set(DirectoryTree(git_repo.root).files())


def test_chains_of_eight_links_are_followed_and_nine_are_not(git_repo: GitRepo) -> None:
    links: dict[str, str | bytes | Symlink | None] = {"l0": "end\n"}
    links.update({f"l{i}": Symlink(f"l{i - 1}") for i in range(1, 10)})
    tree = committed(git_repo, links)
    assert tree.read("l8") == b"end\n"
    with pytest.raises(FileNotFoundError):
        tree.read("l9")


def loose_object(git_repo: GitRepo, rev: str) -> Path:
    sha = git_repo.git("rev-parse", rev)
    return git_repo.root / ".git" / "objects" / sha[:2] / sha[2:]


def test_reading_one_file_reads_neither_other_blobs_nor_other_folders(git_repo: GitRepo) -> None:
    git_repo.commit({"a/x.txt": "x", "a/y.txt": "y", "b/deep/z.txt": "z"})
    loose_object(git_repo, "HEAD:a/y.txt").unlink()
    loose_object(git_repo, "HEAD:b/deep").unlink()
    tree = Repository.open(git_repo.root).tree("HEAD")
    assert tree.read("a/x.txt") == b"x"
    assert tree.blob_id("a/y.txt") is not None  # the id comes from the folder, not the blob
    with pytest.raises(GitError) as caught:
        tree.read("a/y.txt")
    assert caught.value.code is Code.GIT_READ_FAILED
    with pytest.raises(GitError) as walked:
        list(tree.files())
    assert walked.value.code is Code.GIT_READ_FAILED


def test_a_committed_score_repository_validates_without_diagnostics(git_repo: GitRepo) -> None:
    shutil.copytree(PROJECT / "examples" / "shop", git_repo.root, dirs_exist_ok=True)
    git_repo.commit({})
    for path in git_repo.root.iterdir():
        if path.name != ".git":
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    tree: Tree = Repository.open(git_repo.root).tree("HEAD")
    report = validate_tree(tree)
    assert report.diagnostics == ()
    assert report.files == 5
    assert sorted(w.name or "" for w in report.workloads) == [
        "catalog",
        "orders",
        "payments",
        "storefront",
    ]


def test_a_blob_missing_from_the_object_database_is_a_read_failure(git_repo: GitRepo) -> None:
    tree = committed(git_repo, {"kept.txt": "kept\n", "lost.txt": "lost\n"})
    oid = tree.blob_id("lost.txt")
    assert oid is not None
    (git_repo.root / ".git" / "objects" / oid[:2] / oid[2:]).unlink()
    assert tree.read("kept.txt") == b"kept\n"
    with pytest.raises(GitError) as raised:
        tree.read("lost.txt")
    assert raised.value.code is Code.GIT_READ_FAILED
    assert "lost.txt" in raised.value.message


LOOKUPS = [
    "apps/web/score.yaml",
    "apps/web/shared.conf",
    "apps/web/hop1",
    "web/score.yaml",
    "./apps/web/score.yaml",
    "apps/./web/score.yaml",
    "apps/web/../web/score.yaml",
    "apps//web/score.yaml",
    "apps/web",
    "apps/web/out",
    "apps/web/loop-a",
    "apps/web/dangling",
    "apps/web/score.yaml/x",
    "up/etc/passwd",
    "nope",
]


def _looked_up(tree: GitTree, path: str) -> object:
    def outcome(call: Callable[[str], object]) -> object:
        try:
            return call(path)
        except OSError as exc:
            return (type(exc).__name__, exc.errno)

    return [outcome(tree.resolve), outcome(tree.read), tree.blob_id(path), tree.exists(path)]


def test_lookups_agree_before_and_after_the_tree_is_walked(git_repo: GitRepo) -> None:
    """A walked tree answers plain paths from its map (a full plan reads every Score file so);
    every path, plain, dotted, linked or missing, reads as it does through the folders."""
    sha = git_repo.commit(LINKED)
    fresh = Repository.open(git_repo.root).tree(sha)
    before = {path: _looked_up(fresh, path) for path in LOOKUPS}
    walked = Repository.open(git_repo.root).tree(sha)
    assert "apps/web/score.yaml" in set(walked.files())
    assert {path: _looked_up(walked, path) for path in LOOKUPS} == before
    assert before["apps/web/score.yaml"][1] == b"web\n"
