"""Git notes on reconciled commits: one JSON line per status, readable with ``git notes show``.

``append_note`` adds a status's line to the note on its commit and ``push_notes`` sends the notes
ref to a remote. A note is a set of lines (sorted, no duplicates), which makes concurrent writers
easy: two replicas that both appended to a commit's note merge by taking the union, so a rejected
push fetches the remote notes, merges and tries again instead of failing or overwriting.

Both write the notes commit themselves (rather than through ``create_note``, which reads the ref
afresh and would overwrite a line another writer added since we read the note) and move the ref
by compare-and-swap, retrying on a lost race. Pushing and fetching run the ``git`` binary, so the
user's credential helpers and SSH configuration apply as they do for their own pushes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pygit2
from pygit2.enums import FileMode

from reconciler.catalogue import Code
from reconciler.gitops.errors import GitError
from reconciler.gitops.gitcli import push_merging
from reconciler.gitops.reflock import lost_race
from reconciler.gitops.status.model import CommitStatus
from reconciler.gitops.status.reporter import NOTES_PUSH_FAILED, NOTES_WRITE_FAILED

NOTES_REF = "refs/notes/reconciler"
SWAP_ATTEMPTS = 16
"""Lost compare-and-swap races tolerated per write; each loss means another writer progressed."""
PUSH_ATTEMPTS = 5
"""Pushes per ``push_notes``; each rejected one fetches and merges first."""
AUTHOR = ("score-reconciler", "reconciler@localhost")
_HEX = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")


def append_note(
    repo_path: Path, commit: str, status: CommitStatus, *, ref: str = NOTES_REF
) -> bool:
    """Add ``status`` as a line of the note on ``commit``; False when the line was already there
    (so a retried report does not repeat itself)."""
    repo = _open(repo_path)
    if repo.get(commit) is None:
        raise GitError(Code.REVISION_NOT_FOUND, f"commit {commit} is not in {repo_path}")
    line = status.to_json_line()
    for _ in range(SWAP_ATTEMPTS):
        head = _head(repo, ref)
        tree = None if head is None else head.tree
        path, text = read_note_in(repo, tree, commit)
        merged = union(text, line)
        if merged == text:
            return False
        blob = repo.create_blob(merged.encode())
        new_tree = _put(repo, tree, path or commit, blob)
        message = f"reconciler: {status.environment} {status.phase} on {commit[:7]}\n"
        if _swap(repo, ref, head, new_tree, message, []):
            return True
    raise GitError(NOTES_WRITE_FAILED, f"{ref}: other writers kept moving it; note not written")


def read_note(repo_path: Path, commit: str, *, ref: str = NOTES_REF) -> list[str]:
    """The lines of the note on ``commit`` (none when there is no note)."""
    repo = _open(repo_path)
    head = _head(repo, ref)
    _, text = read_note_in(repo, None if head is None else head.tree, commit)
    return text.splitlines()


def push_notes(
    repo_path: Path, remote: str, ref: str = NOTES_REF, *, attempts: int = PUSH_ATTEMPTS
) -> None:
    """Push ``ref`` to ``remote``; on a rejection (another writer pushed first) fetch theirs,
    merge by the union of lines and push again, at most ``attempts`` times."""
    repo = _open(repo_path)
    if _head(repo, ref) is None:
        return  # nothing written yet, nothing to push
    push_merging(
        repo_path,
        remote,
        ref,
        merge=lambda incoming: merge_notes(repo_path, ref, incoming),
        code=NOTES_PUSH_FAILED,
        attempts=attempts,
    )


def merge_notes(repo_path: Path, ref: str, other: str) -> None:
    """Make ``ref`` contain ``other``: fast-forward when it can, else a merge commit whose notes
    are the union of both sides' lines, commit by commit."""
    repo = _open(repo_path)
    theirs = _head(repo, other)
    if theirs is None:
        return
    for _ in range(SWAP_ATTEMPTS):
        ours = _head(repo, ref)
        if ours is not None and (ours.id == theirs.id or repo.descendant_of(ours.id, theirs.id)):
            return
        if ours is None or repo.descendant_of(theirs.id, ours.id):
            if _move(repo, ref, ours, theirs.id):
                return
            continue
        tree = _union_trees(repo, ours.tree, theirs.tree)
        message = f"reconciler: merge notes from {other}\n"
        if _swap(repo, ref, ours, tree, message, [theirs.id]):
            return
    raise GitError(NOTES_WRITE_FAILED, f"{ref}: other writers kept moving it; merge not written")


def union(text: str, *more: str) -> str:
    """A note's lines as a set: sorted (by time, as status lines start with it), no duplicates,
    no blank lines, each ending in a newline."""
    lines = {line for chunk in (text, *more) for line in chunk.splitlines() if line.strip()}
    return "".join(f"{line}\n" for line in sorted(lines))


# -- notes trees -------------------------------------------------------------------------------


def read_note_in(
    repo: pygit2.Repository, tree: pygit2.Tree | None, commit: str
) -> tuple[str | None, str]:
    """Where the note on ``commit`` sits in a notes tree and its text.

    Git spreads notes over folders (``ab/cdef...``) once there are many; every depth is looked
    at, so notes written by ``git notes`` read the same as ours.
    """
    if tree is None:
        return None, ""
    for depth in range(len(commit) // 2):
        path = "/".join([*(commit[2 * i : 2 * i + 2] for i in range(depth)), commit[2 * depth :]])
        try:
            obj = tree[path]
        except KeyError:
            continue
        if isinstance(obj, pygit2.Blob):
            return path, obj.data.decode("utf-8", errors="replace")
    return None, ""


def _notes(tree: pygit2.Tree, prefix: str = "") -> Iterator[tuple[str, pygit2.Blob]]:
    """Every note in a notes tree as (annotated SHA, blob), whatever the fan-out."""
    for obj in tree:
        name = obj.name or ""
        if isinstance(obj, pygit2.Tree):
            yield from _notes(obj, prefix + name)
        elif isinstance(obj, pygit2.Blob) and _HEX.match(prefix + name):
            yield prefix + name, obj


def _union_trees(repo: pygit2.Repository, ours: pygit2.Tree, theirs: pygit2.Tree) -> pygit2.Oid:
    tree: pygit2.Tree = ours
    for commit, blob in _notes(theirs):
        path, text = read_note_in(repo, tree, commit)
        theirs_text = blob.data.decode("utf-8", errors="replace")
        merged = union(text, theirs_text)
        if merged != text:
            oid = _put(repo, tree, path or commit, repo.create_blob(merged.encode()))
            tree = _tree(repo, oid)
    return tree.id


def _put(
    repo: pygit2.Repository, tree: pygit2.Tree | None, path: str, blob: pygit2.Oid
) -> pygit2.Oid:
    """A copy of ``tree`` with the blob at ``path`` (folders made as needed)."""
    name, _, rest = path.partition("/")
    builder = repo.TreeBuilder() if tree is None else repo.TreeBuilder(tree)
    if not rest:
        builder.insert(name, blob, FileMode.BLOB)
    else:
        sub = tree[name] if tree is not None and name in tree else None
        sub_tree = sub if isinstance(sub, pygit2.Tree) else None
        builder.insert(name, _put(repo, sub_tree, rest, blob), FileMode.TREE)
    return builder.write()


# -- refs --------------------------------------------------------------------------------------


def _open(path: Path) -> pygit2.Repository:
    try:
        found = pygit2.discover_repository(str(path))
        if found is None:
            raise GitError(Code.REPOSITORY_NOT_FOUND, f"{path}: not a Git repository")
        return pygit2.Repository(found)
    except pygit2.GitError as exc:
        raise GitError(Code.GIT_READ_FAILED, f"{path}: cannot open the repository: {exc}") from exc


def _head(repo: pygit2.Repository, ref: str) -> pygit2.Commit | None:
    reference = repo.references.get(ref)
    if reference is None:
        return None
    try:
        return reference.peel(pygit2.Commit)
    except (pygit2.GitError, ValueError, KeyError) as exc:
        raise GitError(Code.GIT_READ_FAILED, f"{ref}: not a notes commit: {exc}") from exc


def _tree(repo: pygit2.Repository, oid: pygit2.Oid) -> pygit2.Tree:
    tree = repo.get(oid)
    assert isinstance(tree, pygit2.Tree)
    return tree


def _swap(
    repo: pygit2.Repository,
    ref: str,
    head: pygit2.Commit | None,
    tree: pygit2.Oid,
    message: str,
    extra_parents: list[pygit2.Oid],
) -> bool:
    """Commit ``tree`` on top of ``head`` and move ``ref`` there if it still points at ``head``."""
    now = int(datetime.now(UTC).timestamp())
    signature = pygit2.Signature(*AUTHOR, now, 0)
    parents = ([] if head is None else [head.id]) + extra_parents
    try:
        commit = repo.create_commit(None, signature, signature, message, tree, parents)
    except pygit2.GitError as exc:
        raise GitError(NOTES_WRITE_FAILED, f"{ref}: cannot write the commit: {exc}") from exc
    return _move(repo, ref, head, commit)


def _move(
    repo: pygit2.Repository, ref: str, head: pygit2.Commit | None, target: pygit2.Oid
) -> bool:
    """Compare-and-swap: False when another writer moved (or created) ``ref`` first."""
    try:
        if head is None:
            repo.references.create(ref, target, force=False)
            return True
        reference = repo.references.get(ref)
        if reference is None or reference.target != head.id:
            return False
        reference.set_target(target, "reconciler: notes")
        return True
    except pygit2.AlreadyExistsError:
        return False
    except (pygit2.GitError, OSError) as exc:
        if lost_race(Path(repo.path), ref, exc):
            return False
        raise GitError(NOTES_WRITE_FAILED, f"{ref}: cannot move it: {exc}") from exc


class GitNotes:
    """The notes reporter: append the status's line, then push when a remote is named.

    A retry after a failed push appends nothing new (the line is there) and pushes again.
    """

    name = "notes"

    def __init__(self, repo_path: Path, *, ref: str = NOTES_REF, remote: str | None = None) -> None:
        self._repo_path = repo_path
        self._ref = ref
        self._remote = remote

    def report(self, status: CommitStatus) -> None:
        append_note(self._repo_path, status.commit, status, ref=self._ref)
        if self._remote is not None:
            push_notes(self._repo_path, self._remote, self._ref)
