"""Ref lock files that a killed writer left behind.

Git (and libgit2) move a ref by creating ``<ref>.lock`` exclusively, writing the new id into it
and renaming it over the ref; the lock lives for the milliseconds of that rename. A process
killed in between leaves the file, and from then on every writer of that ref fails as if
another writer held it: git asks a person to remove the file. The reconciler's own refs (deploy
and status branches, notes) are written by reconciler processes that are killed and restarted
as a matter of course, so a lock file older than ``STALE_AFTER`` seconds on one of them is
taken for a dead writer's and removed, with a warning.

Two processes may find the same stale lock. The one that removes it may create its own lock at
once, so the other must not then remove that fresh one on the strength of its earlier look:
the check and the removal are made under an OS lock of the reconciler's, one at a time.
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from reconciler.gitops.repository import common_dir_of

STALE_AFTER = 5.0
"""Seconds after which a ref's lock file is a dead writer's (a live one holds it milliseconds)."""

log = structlog.get_logger("reconciler.gitops")


def lock_file(git_dir: Path, ref: str) -> Path:
    """Where the lock of ``ref`` (``refs/...``) is: refs live in the common Git directory."""
    return common_dir_of(git_dir) / f"{ref}.lock"


def clear_stale_lock(git_dir: Path, ref: str, *, now: Callable[[], float] = time.time) -> bool:
    """Remove the lock file of ``ref`` if a dead writer left it; True when one was removed."""
    lock = lock_file(git_dir, ref)
    if not lock.exists():
        return False
    guard_dir = common_dir_of(git_dir) / "reconciler"
    try:
        guard_dir.mkdir(exist_ok=True)
        with (guard_dir / "ref-locks.flock").open("a") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            try:
                age = now() - lock.stat().st_mtime
            except FileNotFoundError:
                return False
            if age < STALE_AFTER:
                return False
            lock.unlink(missing_ok=True)
    except OSError:  # a read-only repository: the writer's own error says what went wrong
        return False
    log.warning(
        "removed a stale ref lock",
        lock=str(lock),
        age_seconds=round(age, 1),
        hint="a writer of this ref was killed while it moved the ref",
    )
    return True


def lost_race(git_dir: Path, ref: str, error: BaseException) -> bool:
    """Whether ``error``, raised while moving ``ref`` by compare-and-swap, means another writer
    came first: it holds the ref's lock (a dead writer's is removed on the way, once old) or
    moved the ref since it was read. pygit2 raises libgit2's "locked" as ``GitError`` or
    ``OSError``."""
    text = str(error)
    if "lock" in text:
        clear_stale_lock(git_dir, ref)
        return True
    return "does not match" in text
