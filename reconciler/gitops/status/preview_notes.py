"""A pull-request preview as a Git note on the head commit, for forges we cannot post to.

``refs/notes/reconciler-preview`` holds, per previewed commit, the latest Markdown preview:
``git fetch origin refs/notes/reconciler-preview:refs/notes/reconciler-preview`` then
``git notes --ref=reconciler-preview show SHA``. Unlike the status notes (a set of lines that
replicas merge), a preview is one text that the newest run replaces, so the note is written
whole; ``gitops.status.notes.push_notes`` pushes it like the status notes.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pygit2

from reconciler.gitops.errors import GitError
from reconciler.gitops.repository import Repository
from reconciler.gitops.status.notes import AUTHOR
from reconciler.gitops.status.reporter import NOTES_WRITE_FAILED

PREVIEW_NOTES_REF = "refs/notes/reconciler-preview"


def write_preview_note(repo: Repository, commit: str, text: str) -> bool:
    """Put ``text`` as the note on ``commit``; False when the note already said exactly that."""
    git = pygit2.Repository(str(repo.git_dir))
    try:
        current = git.lookup_note(commit, PREVIEW_NOTES_REF).message
    except KeyError:
        current = None
    if current == text:
        return False
    signature = pygit2.Signature(*AUTHOR, int(datetime.now(UTC).timestamp()), 0)
    try:
        git.create_note(text, signature, signature, commit, PREVIEW_NOTES_REF, True)
    except pygit2.GitError as exc:
        raise GitError(NOTES_WRITE_FAILED, f"{PREVIEW_NOTES_REF} on {commit[:7]}: {exc}") from exc
    return True


def read_preview_note(repo: Repository, commit: str) -> str | None:
    git = pygit2.Repository(str(repo.git_dir))
    try:
        return str(git.lookup_note(commit, PREVIEW_NOTES_REF).message)
    except KeyError:
        return None
