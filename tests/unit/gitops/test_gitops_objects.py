"""ObjectBuffer and write_pack: the objects of a deploy commit, loose when few, one pack when
many, checked by git itself (fsck, verify-pack) and against libgit2's own trees."""

from __future__ import annotations

from pathlib import Path

import pygit2
import pytest
from pygit2.enums import FileMode

from reconciler.gitops.commit import write_branch
from reconciler.gitops.objects import PACK_THRESHOLD, ObjectBuffer
from tests.conftest import MakeRepo
from tests.support.gitrepos import GitRepo

AUTHOR = ("score-reconciler", "reconciler@example.com")
BRANCH = "reconciler/deploy/prod"


@pytest.fixture
def bare(make_repo: MakeRepo, tmp_path: Path) -> GitRepo:
    source = make_repo("source")
    source.commit({"README.md": "hello\n"})
    return GitRepo(source.clone_bare(tmp_path / "bare.git"), source.env)


def _packs(git: GitRepo) -> list[Path]:
    return sorted((git.root / "objects" / "pack").glob("*.pack"))


def _loose(git: GitRepo) -> int:
    return sum(1 for d in (git.root / "objects").glob("[0-9a-f][0-9a-f]") for _ in d.iterdir())


def _deploy(git: GitRepo, files: dict[str, bytes | None]) -> str | None:
    return write_branch(git.root, BRANCH, files, prefix="", message="deploy", author=AUTHOR)


def test_a_large_commit_is_one_pack_that_git_reads_and_verifies(bare: GitRepo) -> None:
    packs_before, loose_before = _packs(bare), _loose(bare)
    files = {
        f"svc-{i:03d}/{name}": f"{name}: {i}\nbig: {'x' * 300 * i}\n".encode()
        for i in range(60)
        for name in ("manifests.yaml", "resources.yaml")
    }
    sha = _deploy(bare, dict(files))
    assert sha is not None
    new_packs = sorted(set(_packs(bare)) - set(packs_before))
    assert len(new_packs) == 1
    assert _loose(bare) == loose_before + 1  # the commit only, written by libgit2
    bare.git("fsck", "--strict", "--no-dangling")
    verified = bare.git("verify-pack", "-v", str(new_packs[0].with_suffix(".idx")))
    assert f"non delta: {len(files) + 60 + 1} objects" in verified  # blobs, folders, the root
    listed = bare.git("ls-tree", "-r", "--name-only", BRANCH).splitlines()
    assert sorted(listed) == sorted(files)
    assert bare.git("show", f"{BRANCH}:svc-059/resources.yaml").encode() == (
        files["svc-059/resources.yaml"].rstrip(b"\n")
    )


def test_a_small_commit_stays_loose(bare: GitRepo) -> None:
    assert _deploy(bare, {"api/manifests.yaml": b"a: 1\n"}) is not None
    packs_before, loose_before = _packs(bare), _loose(bare)
    assert _deploy(bare, {"web/manifests.yaml": b"b: 2\n"}) is not None
    assert _packs(bare) == packs_before
    assert _loose(bare) == loose_before + 4  # the file, its folder, the root, the commit
    bare.git("fsck", "--strict", "--no-dangling")


def test_the_commit_that_creates_the_branch_is_one_pack_however_small(bare: GitRepo) -> None:
    """A first deploy writes every folder at once, once per branch: a pack costs two files."""
    packs_before, loose_before = _packs(bare), _loose(bare)
    assert _deploy(bare, {"web/manifests.yaml": b"a: 1\n"}) is not None
    assert len(set(_packs(bare)) - set(packs_before)) == 1
    assert _loose(bare) == loose_before + 1  # the commit only, written by libgit2
    bare.git("fsck", "--strict", "--no-dangling")
    assert bare.git("show", f"{BRANCH}:web/manifests.yaml") == "a: 1"


def test_an_unchanged_tree_writes_no_object(bare: GitRepo) -> None:
    files: dict[str, bytes | None] = {f"svc-{i}/manifests.yaml": b"a: 1\n" for i in range(120)}
    assert _deploy(bare, files) is not None
    packs, loose = _packs(bare), _loose(bare)
    assert _deploy(bare, files) is None
    assert (_packs(bare), _loose(bare)) == (packs, loose)


@pytest.mark.parametrize("count", [3, PACK_THRESHOLD + 5])
def test_trees_are_the_ones_libgit2_builds(tmp_path: Path, count: int) -> None:
    """Names that sort differently as a file and as a folder ('a.b', 'a-b', 'a0' next to the
    folder 'a'), executable files and links keep git's order and modes."""
    repo = pygit2.init_repository(str(tmp_path / "repo"), bare=True)
    buffer = ObjectBuffer()
    blob = repo.create_blob(b"x\n")
    inner = repo.TreeBuilder()
    inner.insert("f", blob, FileMode.BLOB)
    folder = inner.write()
    entries = [
        (b"a", folder, FileMode.TREE),
        (b"a.b", blob, FileMode.BLOB),
        (b"a-b", blob, FileMode.BLOB_EXECUTABLE),
        (b"a0", blob, FileMode.LINK),
        *((f"n{i}".encode(), blob, FileMode.BLOB) for i in range(count)),
    ]
    expected = repo.TreeBuilder()
    for name, oid, mode in entries:
        expected.insert(name.decode(), oid, mode)
    tree = buffer.tree(reversed(entries))
    buffer.store(repo)
    assert tree == expected.write()
    assert [e.name for e in repo[tree]] == [e.name for e in repo[expected.write()]]
