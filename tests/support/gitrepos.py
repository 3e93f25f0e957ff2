"""Helpers that make real Git repositories with the ``git`` binary, as users make them.

Imported by the fixtures in ``conftest.py`` and by tests that need ``Symlink`` or ``GitRepo``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Symlink:
    """A symbolic link to commit, pointing at ``target`` (kept verbatim)."""

    target: str


Content = str | bytes | Symlink | None
"""What a commit puts at a path: text, bytes, a link, or None to delete it."""


@dataclass
class GitRepo:
    """A work tree with helpers to commit, tag and clone; dates advance a minute per commit."""

    root: Path
    env: dict[str, str]
    commits: int = field(default=0)

    def git(self, *args: str, cwd: Path | None = None) -> str:
        done = subprocess.run(
            ["git", *args],
            cwd=cwd or self.root,
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
        )
        return done.stdout.strip()

    def commit(self, files: Mapping[str, Content], message: str = "change") -> str:
        for rel, content in files.items():
            write(self.root / rel, content)
        self.commits += 1
        stamp = f"2024-01-01T00:{self.commits:02d}:00Z"
        self.env["GIT_AUTHOR_DATE"] = self.env["GIT_COMMITTER_DATE"] = stamp
        self.git("add", "--all")
        self.git("commit", "--quiet", "--allow-empty", "-m", message)
        return self.git("rev-parse", "HEAD")

    def tag(self, name: str, *, message: str | None = None) -> None:
        if message is None:
            self.git("tag", name)
        else:
            self.git("tag", "-a", name, "-m", message)

    def clone_bare(self, dest: Path) -> Path:
        self.git("clone", "--quiet", "--bare", str(self.root), str(dest))
        return dest


def write(target: Path, content: Content) -> None:
    if content is None:
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink()
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or target.is_file():
        target.unlink()
    if isinstance(content, Symlink):
        target.symlink_to(content.target)
    elif isinstance(content, bytes):
        target.write_bytes(content)
    else:
        target.write_text(content, encoding="utf-8")


def git_env(home: Path) -> dict[str, str]:
    """No user or system configuration leaks in; authorship is fixed."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_AUTHOR_NAME": "Ada Lovelace",
        "GIT_AUTHOR_EMAIL": "ada@example.com",
        "GIT_COMMITTER_NAME": "Ada Lovelace",
        "GIT_COMMITTER_EMAIL": "ada@example.com",
    }
