"""A read-only view of a repository's files, whatever holds them.

Validation reads a directory on disk; planning reads a commit straight from Git's object database.
Both sit behind this small protocol so that loading and checking code never knows which.
Paths are always POSIX, relative to the repository root.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from wcmatch import glob

GLOB_FLAGS = glob.GLOBSTAR | glob.DOTGLOB | glob.BRACE | glob.NEGATE
"""Globs as users know them from shells and CI tools: ``**`` spans folders, ``{a,b}`` alternates."""

SKIPPED_DIRS = frozenset({".git", ".hg", ".svn", "node_modules", ".venv", "__pycache__"})


class Tree(Protocol):
    def files(self) -> Iterator[str]:
        """Every file in the tree (symlinks included), in sorted order."""
        ...

    def read(self, path: str) -> bytes:
        """The file's bytes, following links inside the tree; ``FileNotFoundError`` if none."""
        ...

    def resolve(self, path: str) -> str | None:
        """``path`` with every link followed, or None when that leads out of the tree.

        Raises ``FileNotFoundError`` when nothing is there.
        """
        ...


def matches(
    path: str, include: list[str] | tuple[str, ...], exclude: list[str] | tuple[str, ...] = ()
) -> bool:
    """Whether ``path`` matches ``include`` and not ``exclude``; the patterns are compiled once
    (a plan asks this for every file of a commit with the same few patterns)."""
    return bool(_compiled(tuple(include), tuple(exclude)).match(path))


@functools.lru_cache(maxsize=128)
def _compiled(include: tuple[str, ...], exclude: tuple[str, ...]) -> glob.WcMatcher[str]:
    return glob.compile(list(include), flags=GLOB_FLAGS, exclude=list(exclude) or None)


class DirectoryTree:
    """A folder on disk, read as a repository work tree (``.git`` and tool folders skipped)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def files(self) -> Iterator[str]:
        found: list[str] = []
        for folder, dirs, names in os.walk(self.root):
            dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
            rel = Path(folder).relative_to(self.root)
            found.extend((rel / name).as_posix() for name in names)
        yield from sorted(found)

    def read(self, path: str) -> bytes:
        resolved = self.resolve(path)
        if resolved is None:
            raise PermissionError(f"{path} leads outside the repository")
        full = self.root / resolved
        if not full.is_file():
            raise FileNotFoundError(path)
        return full.read_bytes()

    def resolve(self, path: str) -> str | None:
        full = self.root / path
        if not full.exists() and not full.is_symlink():
            raise FileNotFoundError(path)
        try:
            real = full.resolve(strict=True)
        except (RuntimeError, OSError) as exc:  # a link loop, or a link to nothing
            raise FileNotFoundError(path) from exc
        try:
            return real.relative_to(self.root).as_posix()
        except ValueError:
            return None


class MemoryTree:
    """Files held in memory: for checking a document before it is committed anywhere."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self._files = dict(files)

    def files(self) -> Iterator[str]:
        yield from sorted(self._files)

    def read(self, path: str) -> bytes:
        try:
            return self._files[path]
        except KeyError:
            raise FileNotFoundError(path) from None

    def resolve(self, path: str) -> str | None:
        if path not in self._files:
            raise FileNotFoundError(path)
        return path
