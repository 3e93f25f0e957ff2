"""A Git repository opened for reading commits: revisions, commit details, trees and changes.

The daemon opens the watched repository once and asks it, per reconcile, for the commit a
revision points at, that commit's files and the paths changed since the last reconciled commit.
Nothing here needs a work tree, so bare repositories (what a fetch loop keeps) behave the same.

One ``Repository`` should serve one thread at a time: libgit2 reads are thread-safe, but the small
tree cache here is not guarded; open another ``Repository`` for another thread.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path

import pygit2

from reconciler.catalogue import Code
from reconciler.gitops.changes import ChangeSet, diff_trees
from reconciler.gitops.errors import GitError
from reconciler.gitops.tree import GitTree

TREE_CACHE_SIZE = 16
"""Commit trees kept with their flattened path maps: the heads of a few environments and the
commits just before them, which the daemon asks for again and again."""


COMMIT_CACHE_SIZE = 64
"""Commits kept by their SHA (``_commit``): a few plans' worth."""


@dataclass(frozen=True, slots=True)
class CommitInfo:
    sha: str
    summary: str
    author: str
    author_email: str
    committed_at: datetime
    parents: tuple[str, ...]

    @property
    def short(self) -> str:
        """Seven characters, as statuses and tables show a SHA (Argo CD and Flux do the same)."""
        return self.sha[:7]


class Repository:
    """A work tree's repository or a bare one, read through libgit2 (pygit2)."""

    def __init__(self, repo: pygit2.Repository) -> None:
        self._repo = repo
        self._trees: OrderedDict[str, GitTree] = OrderedDict()
        self._commits: dict[str, pygit2.Commit] = {}
        self.git_dir = Path(repo.path)
        self.is_bare = repo.is_bare
        self.path = self.git_dir if repo.workdir is None else Path(repo.workdir)

    @cached_property
    def common_dir(self) -> Path:
        """Where refs, objects and the reconciler's own state live: the main repository's Git
        directory, shared by its linked work trees (``git worktree add``), whose ``git_dir`` is a
        folder of their own holding little more than ``HEAD``. Looked up when first asked:
        a plan opens its repository and never asks."""
        return common_dir_of(self.git_dir)

    @classmethod
    def open(cls, path: Path) -> Repository:
        """The repository holding ``path``: any folder in a work tree, or a bare repository.

        libgit2 looks upwards from ``path`` itself, as ``discover_repository`` does; only when
        it fails is the folder looked at again, to say why. Looking first was a fifth of
        opening a repository, which every plan and preview does."""
        try:
            return cls(pygit2.Repository(str(path)))
        except pygit2.GitError as exc:
            raise _why_not_opened(path, exc) from exc

    def resolve(self, rev: str = "HEAD") -> str:
        """The full SHA of the commit ``rev`` names (branch, tag, short SHA, ``HEAD~1``, ref)."""
        return str(self._commit(rev).id)

    def commit_info(self, rev: str) -> CommitInfo:
        commit = self._commit(rev)
        message = commit.message.strip()
        return CommitInfo(
            sha=str(commit.id),
            summary=message.splitlines()[0] if message else "",
            author=commit.author.name,
            author_email=commit.author.email,
            committed_at=datetime.fromtimestamp(commit.commit_time, tz=UTC),
            parents=tuple(str(parent) for parent in commit.parent_ids),
        )

    def tree(self, rev: str) -> GitTree:
        """The files of the commit ``rev`` names; kept for the next call with the same commit."""
        commit = self._commit(rev)
        sha = str(commit.id)
        cached = self._trees.get(sha)
        if cached is not None:
            self._trees.move_to_end(sha)
            return cached
        tree = GitTree(self._repo, sha, self._tree_of(commit))
        self._trees[sha] = tree
        if len(self._trees) > TREE_CACHE_SIZE:
            self._trees.popitem(last=False)
        return tree

    def changed_paths(self, old: str | None, new: str) -> ChangeSet:
        """Paths that differ from ``old`` to ``new``; with no ``old``, every file is added.

        ``old`` need not be an ancestor (a force-push compares the two trees all the same); if it
        no longer exists at all, the caller gets ``REVISION_NOT_FOUND`` and may start over with
        ``old=None``.
        """
        new_tree = self._tree_of(self._commit(new))
        old_tree = None if old is None else self._tree_of(self._commit(old))
        if old_tree is not None and old_tree.id == new_tree.id:
            return ChangeSet()
        try:
            return diff_trees(self._repo, None if old_tree is None else old_tree.id, new_tree.id)
        except (KeyError, pygit2.GitError) as exc:
            raise GitError(Code.GIT_READ_FAILED, f"cannot diff {old} and {new}: {exc}") from exc

    def branch_head(self, branch: str) -> str | None:
        """The commit a local branch points at; None when it does not exist (or is unborn)."""
        try:
            ref = self._repo.references.get(f"refs/heads/{branch}")
            return None if ref is None else str(ref.peel(pygit2.Commit).id)
        except (KeyError, ValueError):
            return None
        except pygit2.GitError as exc:
            raise GitError(Code.GIT_READ_FAILED, f"branch '{branch}': {exc}") from exc

    def branches(self) -> dict[str, str]:
        """Every local branch and the commit it points at."""
        try:
            return {
                name: str(self._repo.references[f"refs/heads/{name}"].peel(pygit2.Commit).id)
                for name in sorted(self._repo.branches.local)
            }
        except (KeyError, ValueError, pygit2.GitError) as exc:
            raise GitError(Code.GIT_READ_FAILED, f"listing branches: {exc}") from exc

    def _commit(self, rev: str) -> pygit2.Commit:
        """The commit ``rev`` names; a full SHA's is kept (it never names another), since a
        plan asks for the same commits several times (to resolve, for its tree, to diff)."""
        found = self._commits.get(rev)
        if found is not None:
            return found
        commit = self._revparse(rev)
        sha = str(commit.id)
        if len(self._commits) >= COMMIT_CACHE_SIZE:
            self._commits.clear()
        self._commits[sha] = commit
        return commit

    def _revparse(self, rev: str) -> pygit2.Commit:
        try:
            return self._repo.revparse_single(rev).peel(pygit2.Commit)
        except (KeyError, ValueError) as exc:  # NotFoundError, InvalidSpecError, AmbiguousError
            raise GitError(
                Code.REVISION_NOT_FOUND, f"revision '{rev}' does not name a commit in {self.path}"
            ) from exc
        except pygit2.GitError as exc:
            raise GitError(Code.GIT_READ_FAILED, f"revision '{rev}': {exc}") from exc

    def _tree_of(self, commit: pygit2.Commit) -> pygit2.Tree:
        try:
            return commit.tree
        except pygit2.GitError as exc:
            raise GitError(
                Code.GIT_READ_FAILED, f"commit {str(commit.id)[:7]}: cannot read its tree: {exc}"
            ) from exc


def _why_not_opened(path: Path, error: pygit2.GitError) -> GitError:
    """The error for a ``path`` libgit2 would not open: none there, none above it, or one it
    could not read (an unreadable config, a repository owned by another user)."""
    if not path.exists():
        return GitError(Code.REPOSITORY_NOT_FOUND, f"{path}: no such folder")
    try:
        if pygit2.discover_repository(str(path)) is None:
            return GitError(Code.REPOSITORY_NOT_FOUND, f"{path}: not a Git repository (or in one)")
    except pygit2.GitError:
        pass  # found, but not readable either: the error libgit2 gave is the one to show
    return GitError(Code.GIT_READ_FAILED, f"{path}: cannot open the repository: {error}")


def common_dir_of(git_dir: Path) -> Path:
    """A linked work tree's Git directory names the shared one in its ``commondir`` file.

    Looked for with a ``stat`` first: most repositories have none, and a failed ``open``
    (an exception with its path formatted) cost a sixth of opening the repository."""
    pointer = os.path.join(git_dir, "commondir")
    if not os.path.isfile(pointer):
        return git_dir
    try:
        return (git_dir / Path(pointer).read_text().strip()).resolve()
    except OSError:
        return git_dir
