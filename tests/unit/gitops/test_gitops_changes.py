"""Which paths a commit changed: a diff of two trees that grows with the change."""

from __future__ import annotations

import pytest

from reconciler.catalogue import Code
from reconciler.gitops import ChangeSet, GitError, Repository
from tests.support.gitrepos import Content, GitRepo, Symlink


def test_add_modify_delete_and_rename(git_repo: GitRepo) -> None:
    old = git_repo.commit(
        {"keep.txt": "k", "edit.txt": "1", "gone.txt": "g", "apps/old/score.yaml": "s"}
    )
    new = git_repo.commit(
        {
            "edit.txt": "2",
            "gone.txt": None,
            "apps/old": None,
            "apps/new/score.yaml": "s",  # a rename of the folder: delete plus add
            "fresh/nested/file.txt": "f",
        }
    )
    changes = Repository.open(git_repo.root).changed_paths(old, new)
    assert changes == ChangeSet(
        added=frozenset({"apps/new/score.yaml", "fresh/nested/file.txt"}),
        modified=frozenset({"edit.txt"}),
        deleted=frozenset({"gone.txt", "apps/old/score.yaml"}),
    )
    assert changes.all == {
        "apps/new/score.yaml",
        "fresh/nested/file.txt",
        "edit.txt",
        "gone.txt",
        "apps/old/score.yaml",
    }


def test_a_file_becoming_a_link_is_one_modification(git_repo: GitRepo) -> None:
    old = git_repo.commit({"a.txt": "a", "b.txt": "b"})
    new = git_repo.commit({"b.txt": Symlink("a.txt")})
    changes = Repository.open(git_repo.root).changed_paths(old, new)
    assert changes == ChangeSet(modified=frozenset({"b.txt"}))


def test_without_an_old_commit_every_file_is_added(git_repo: GitRepo) -> None:
    git_repo.commit({"a.txt": "a", "d/b.txt": "b", "d/link": Symlink("b.txt")})
    changes = Repository.open(git_repo.root).changed_paths(None, "HEAD")
    assert changes == ChangeSet(added=frozenset({"a.txt", "d/b.txt", "d/link"}))


def test_the_same_commit_changes_nothing(git_repo: GitRepo) -> None:
    sha = git_repo.commit({"a.txt": "a"})
    changes = Repository.open(git_repo.root).changed_paths(sha, "main")
    assert not changes
    assert changes.all == frozenset()


def test_an_unknown_old_commit_is_revision_not_found(git_repo: GitRepo) -> None:
    git_repo.commit({"a.txt": "a"})
    with pytest.raises(GitError) as caught:
        Repository.open(git_repo.root).changed_paths("f" * 40, "HEAD")
    assert caught.value.code is Code.REVISION_NOT_FOUND


def test_one_changed_file_among_two_thousand(git_repo: GitRepo) -> None:
    files: dict[str, Content] = {
        f"apps/team{i % 20:02d}/svc{i:04d}/score.yaml": f"n: {i}\n" for i in range(2000)
    }
    old = git_repo.commit(files)
    new = git_repo.commit({"apps/team07/svc0987/score.yaml": "n: changed\n"})
    repo = Repository.open(git_repo.root)
    assert repo.changed_paths(old, new) == ChangeSet(
        modified=frozenset({"apps/team07/svc0987/score.yaml"})
    )
    assert len(repo.changed_paths(None, new).added) == 2000


def test_folders_that_did_not_change_are_not_read(git_repo: GitRepo) -> None:
    old = git_repo.commit({"big/deep/a.txt": "a", "apps/web/score.yaml": "1"})
    new = git_repo.commit({"apps/web/score.yaml": "2"})
    unchanged = git_repo.git("rev-parse", "HEAD:big")
    (git_repo.root / ".git" / "objects" / unchanged[:2] / unchanged[2:]).unlink()
    changes = Repository.open(git_repo.root).changed_paths(old, new)
    assert changes == ChangeSet(modified=frozenset({"apps/web/score.yaml"}))


def test_a_file_replaced_by_a_folder(git_repo: GitRepo) -> None:
    old = git_repo.commit({"conf": "flat"})
    new = git_repo.commit({"conf": None, "conf/a.yaml": "a", "conf/b/c.yaml": "c"})
    changes = Repository.open(git_repo.root).changed_paths(old, new)
    assert changes == ChangeSet(
        added=frozenset({"conf/a.yaml", "conf/b/c.yaml"}), deleted=frozenset({"conf"})
    )
    back = Repository.open(git_repo.root).changed_paths(new, old)
    assert back == ChangeSet(
        added=frozenset({"conf"}), deleted=frozenset({"conf/a.yaml", "conf/b/c.yaml"})
    )


def test_submodules_are_not_files(git_repo: GitRepo) -> None:
    old = git_repo.commit({"a.txt": "a"})
    git_repo.git("update-index", "--add", "--cacheinfo", f"160000,{old},vendor/lib")
    git_repo.git("commit", "--quiet", "-m", "add a submodule link")
    repo = Repository.open(git_repo.root)
    assert repo.changed_paths(old, "HEAD") == ChangeSet()
    assert list(repo.tree("HEAD").files()) == ["a.txt"]
    with pytest.raises(FileNotFoundError):
        repo.tree("HEAD").read("vendor/lib")


def _raw_commit(git_repo: GitRepo, entries: list[tuple[str, str, str]]) -> str:
    """A commit of a tree written byte for byte (as old Git versions wrote some modes)."""
    raw = b"".join(
        f"{mode} {name}".encode() + b"\0" + bytes.fromhex(oid) for mode, name, oid in entries
    )
    path = git_repo.root.parent / f"tree-{git_repo.commits}-{len(raw)}"
    path.write_bytes(raw)
    tree = git_repo.git("hash-object", "-w", "-t", "tree", "--literally", str(path))
    return git_repo.git("commit-tree", tree, "-m", "raw tree")


def test_modes_compare_as_libgit2_normalises_them(git_repo: GitRepo) -> None:
    git_repo.commit({"a.txt": "a", "b.txt": "b"})
    a, b = git_repo.git("rev-parse", "HEAD:a.txt"), git_repo.git("rev-parse", "HEAD:b.txt")
    old = _raw_commit(git_repo, [("100644", "a.txt", a), ("100644", "b.txt", b)])
    group_writable = _raw_commit(git_repo, [("100664", "a.txt", a), ("100644", "b.txt", b)])
    executable = _raw_commit(git_repo, [("100664", "a.txt", a), ("100755", "b.txt", b)])
    repo = Repository.open(git_repo.root)
    assert repo.changed_paths(old, group_writable) == ChangeSet()
    assert repo.changed_paths(group_writable, executable) == ChangeSet(
        modified=frozenset({"b.txt"})
    )


def test_ids_holding_any_byte_are_read_whole(git_repo: GitRepo) -> None:
    """Entries are found in the tree's bytes: an id with a NUL in it must not throw the
    reading of the next entry off."""
    files: dict[str, Content] = {f"d{i:03d}/f.txt": str(i) for i in range(300)}
    old = git_repo.commit(files)
    ids = [line.split()[2] for line in git_repo.git("ls-tree", "HEAD").splitlines()]
    assert any(bytes.fromhex(oid).count(0) for oid in ids)  # what the test is about
    new = git_repo.commit({"d150/f.txt": "changed", "d299/g.txt": "new", "d000/f.txt": None})
    assert Repository.open(git_repo.root).changed_paths(old, new) == ChangeSet(
        added=frozenset({"d299/g.txt"}),
        modified=frozenset({"d150/f.txt"}),
        deleted=frozenset({"d000/f.txt"}),
    )
