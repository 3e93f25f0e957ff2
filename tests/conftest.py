"""Shared test helpers: paths to the project and to the shared Score reference data."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
from hypothesis import settings

from tests.support.gitrepos import GitRepo, git_env

# Property tests check what a function does, not how fast: Hypothesis's default deadline (200 ms
# per example) is a wall-clock assertion, and on a loaded two-core machine one example of a
# test that never changed went past it.
settings.register_profile("project", deadline=None)
settings.load_profile("project")

PROJECT = Path(__file__).resolve().parents[1]
SHARED_SCORE = PROJECT.parent / "shared" / "score"


@pytest.fixture
def shared_score() -> Path:
    if not SHARED_SCORE.is_dir():
        pytest.skip(f"the shared Score reference data is not at {SHARED_SCORE}")
    return SHARED_SCORE


WriteRepo = Callable[[Mapping[str, str | bytes]], Path]


@pytest.fixture
def write_repo(tmp_path: Path) -> WriteRepo:
    """Write a repository's files (path → text or bytes) under a fresh folder and return it."""

    def write(files: Mapping[str, str | bytes]) -> Path:
        root = tmp_path / "repo"
        root.mkdir(exist_ok=True)
        for rel, content in files.items():
            target = root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                target.write_bytes(content)
            else:
                target.write_text(content, encoding="utf-8")
        return root

    return write


MakeRepo = Callable[..., GitRepo]
"""``make_repo(name="repo")`` makes a real Git work tree; needs the git binary."""


@pytest.fixture
def make_repo(tmp_path: Path) -> MakeRepo:
    """``make_repo(name="repo")``: a fresh work tree on branch ``main``."""

    def make(name: str = "repo") -> GitRepo:
        root = tmp_path / name
        root.mkdir()
        repo = GitRepo(root, git_env(tmp_path))
        repo.git("init", "--quiet", "--initial-branch=main")
        repo.git("config", "core.symlinks", "true")
        return repo

    return make


@pytest.fixture
def git_repo(make_repo: MakeRepo) -> GitRepo:
    return make_repo()
