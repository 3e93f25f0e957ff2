"""write_branch on a large tree: a few names changed are cut and joined from the tree's own
data (``commit._spliced``); the commit's tree must be exactly the one rebuilding it entry by
entry gives, and what ``git`` reads back.

The trees mix files and folders whose names sort around ``/`` in Git's order (``w007-x``,
``w007.yaml``, the folder ``w007``): the cases where a folder's name compares as if it ended
in ``/``. Real repositories; the edits are random from a seed.
"""

from __future__ import annotations

import random
from pathlib import Path

import pygit2
import pytest

from reconciler.gitops import commit as commit_module
from reconciler.gitops.commit import write_branch
from tests.conftest import MakeRepo
from tests.support.gitrepos import GitRepo

AUTHOR = ("score-reconciler", "reconciler@example.com")
BRANCH = "reconciler/status"
SIZE = 200  # names: about 340 entries in the root tree, past ``SPLICE_FROM``


def base_files() -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for i in range(SIZE):
        files[f"w{i:03d}.yaml"] = f"status {i}\n".encode()
        if i % 2 == 0:
            files[f"w{i:03d}/deployment.yaml"] = f"kind: Deployment # {i}\n".encode()
        if i % 5 == 0:
            files[f"w{i:03d}-x"] = b"a name that sorts before the folder\n"
    return files


def random_edit(rng: random.Random, names: list[str]) -> dict[str, bytes | None]:
    """Up to ``SPLICE_UP_TO`` changes of one kind or another at the root and below it."""
    edit: dict[str, bytes | None] = {}
    for _ in range(rng.randint(1, commit_module.SPLICE_UP_TO)):
        i = rng.randrange(SIZE + 20)  # past SIZE: names that are not there yet
        kind = rng.choice(["file", "remove-file", "folder", "remove-folder", "dash", "nested"])
        if kind == "file":
            edit[f"w{i:03d}.yaml"] = f"status {i} {rng.random()}\n".encode()
        elif kind == "remove-file":
            edit[f"w{i:03d}.yaml"] = None
        elif kind == "folder":
            edit[f"w{i:03d}/deployment.yaml"] = f"kind: Deployment # {rng.random()}\n".encode()
        elif kind == "remove-folder":
            edit[f"w{i:03d}"] = None
        elif kind == "dash":
            edit[f"w{i:03d}-x"] = rng.choice([None, b"changed\n"])
        else:
            edit[f"w{i:03d}/service.yaml"] = b"kind: Service\n"
    names.extend(edit)
    return edit


def tree_id(path: Path) -> str:
    return str(pygit2.Repository(str(path)).revparse_single(BRANCH).peel(pygit2.Tree).id)


@pytest.fixture
def pair(make_repo: MakeRepo) -> tuple[GitRepo, GitRepo]:
    """Two repositories with the same branch: one edited by splicing, one by rebuilding."""
    repos = (make_repo("spliced"), make_repo("rebuilt"))
    for repo in repos:
        repo.commit({"README.md": "hello\n"})
        write_branch(repo.root, BRANCH, base_files(), prefix="", message="base", author=AUTHOR)
    return repos


def test_spliced_trees_are_the_trees_rebuilding_gives(
    pair: tuple[GitRepo, GitRepo], monkeypatch: pytest.MonkeyPatch
) -> None:
    spliced_repo, rebuilt_repo = pair
    real = commit_module._spliced
    spliced: list[bool] = []

    def counted(*args: object) -> bytes | None:
        data = real(*args)  # type: ignore[arg-type]
        spliced.append(data is not None)
        return data

    rng = random.Random(20261129)
    names: list[str] = []
    for _ in range(100):
        edit = random_edit(rng, names)
        monkeypatch.setattr(commit_module, "_spliced", counted)
        write_branch(spliced_repo.root, BRANCH, edit, prefix="", message="e", author=AUTHOR)
        monkeypatch.setattr(commit_module, "SPLICE_FROM", 10**9)  # rebuild every tree
        write_branch(rebuilt_repo.root, BRANCH, edit, prefix="", message="e", author=AUTHOR)
        monkeypatch.undo()
        assert tree_id(spliced_repo.root) == tree_id(rebuilt_repo.root), edit
    assert sum(spliced) > 60  # most edits were spliced, not handed back to the rebuild
    # git itself reads the spliced tree: every entry, in order, with no error
    fsck = spliced_repo.git("fsck", "--strict", "--no-dangling")
    assert "error" not in fsck.lower()
    listed = spliced_repo.git("ls-tree", "-r", "--name-only", BRANCH).splitlines()
    assert listed == rebuilt_repo.git("ls-tree", "-r", "--name-only", BRANCH).splitlines()


def test_a_file_that_becomes_a_folder_is_rebuilt_in_its_new_place(
    pair: tuple[GitRepo, GitRepo],
) -> None:
    """A file ``w001.yaml`` removed and a folder of that name written moves in Git's order
    (after ``w001.yaml-x`` would it be a file; a folder sorts as ``w001.yaml/``)."""
    spliced_repo, _ = pair
    edit: dict[str, bytes | None] = {
        "w001.yaml": None,
        "w001.yaml/inner.txt": b"now a folder\n",
        "w001.yaml-x": b"sorts between the file and the folder\n",
    }
    write_branch(spliced_repo.root, BRANCH, edit, prefix="", message="e", author=AUTHOR)
    spliced_repo.git("fsck", "--strict", "--no-dangling")
    assert spliced_repo.git("show", f"{BRANCH}:w001.yaml/inner.txt") == "now a folder"
    root = spliced_repo.git("ls-tree", "--name-only", BRANCH).splitlines()
    assert root.index("w001.yaml-x") < root.index("w001.yaml")  # the folder, after the file
