"""The Source stage: commits read straight from Git's object database, no checkout needed.

This is the only package that imports pygit2 (an import-linter contract keeps it so); the rest of
the reconciler sees revisions as SHAs, commit trees as ``reconciler.tree.Tree`` and failures as
``GitError`` with a catalogue code.
"""

from reconciler.gitops.changes import ChangeSet
from reconciler.gitops.errors import GitError
from reconciler.gitops.repository import CommitInfo, Repository
from reconciler.gitops.tree import GitTree

__all__ = ["ChangeSet", "CommitInfo", "GitError", "GitTree", "Repository"]
