"""Store URLs and the default location: what is accepted, what is refused, what is shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.catalogue import Code
from reconciler.store import StoreError, default_store_url, find_git_dir, parse_store_url
from reconciler.store.url import resolve_store_url


def test_sqlite_paths_are_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = parse_store_url("sqlite:///state/state.db")
    assert (relative.dialect, relative.path) == ("sqlite", tmp_path / "state" / "state.db")
    absolute = parse_store_url(f"sqlite:///{tmp_path}/x.db")
    assert absolute.path == tmp_path / "x.db"
    assert absolute.display == f"sqlite:///{tmp_path}/x.db"


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "postgresql+psycopg"])
def test_postgresql_uses_psycopg3_and_a_connect_timeout(scheme: str) -> None:
    parsed = parse_store_url(f"{scheme}://app:hunter2@db.example:5433/state")
    assert parsed.dialect == "postgresql"
    assert parsed.url.drivername == "postgresql+psycopg"
    assert parsed.url.query["connect_timeout"] == "10"
    assert parsed.display == f"{scheme}://app:***@db.example:5433/state"
    assert "hunter2" not in parsed.display
    assert parsed.password == "hunter2"


@pytest.mark.parametrize(
    "url",
    [
        "",
        "state.db",
        "mysql://u:pw@h/db",
        "sqlite://",
        "sqlite:///:memory:",
        "sqlite:///x.db?mode=ro",
        "postgresql://u:secretpw@host",
        "postgresql://u:secretpw@/db",
        "postgresql+psycopg2://u:secretpw@h/db",
    ],
)
def test_unsupported_urls_are_refused_without_showing_the_password(url: str) -> None:
    with pytest.raises(StoreError) as caught:
        parse_store_url(url)
    assert caught.value.code is Code.STORE_URL_INVALID
    assert "secretpw" not in str(caught.value)


def test_default_store_lives_in_the_git_dir(tmp_path: Path) -> None:
    url = default_store_url(tmp_path / ".git")
    assert url == f"sqlite:///{tmp_path}/.git/reconciler/state.db"
    assert parse_store_url(url).path == tmp_path / ".git" / "reconciler" / "state.db"


def test_git_dir_of_a_work_tree_a_linked_work_tree_and_a_bare_repository(tmp_path: Path) -> None:
    (tmp_path / "work" / ".git").mkdir(parents=True)
    (tmp_path / "work" / "apps" / "web").mkdir(parents=True)
    assert find_git_dir(tmp_path / "work" / "apps" / "web") == tmp_path / "work" / ".git"

    (tmp_path / "linked").mkdir()
    (tmp_path / "linked" / ".git").write_text("gitdir: ../work/.git/worktrees/linked\n")
    expected = (tmp_path / "work" / ".git" / "worktrees" / "linked").resolve()
    assert find_git_dir(tmp_path / "linked") == expected

    bare = tmp_path / "bare.git"
    (bare / "objects").mkdir(parents=True)
    (bare / "refs").mkdir()
    (bare / "HEAD").write_text("ref: refs/heads/main\n")
    assert find_git_dir(bare) == bare


def test_resolve_prefers_the_flag_then_the_environment_then_the_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".git").mkdir()
    monkeypatch.delenv("RECONCILER_STORE", raising=False)
    assert resolve_store_url(None, tmp_path) == default_store_url(tmp_path / ".git")
    monkeypatch.setenv("RECONCILER_STORE", "postgresql://u@h/db")
    assert resolve_store_url(None, tmp_path) == "postgresql://u@h/db"
    assert resolve_store_url("sqlite:///x.db", tmp_path) == "sqlite:///x.db"


def test_resolve_outside_a_repository_names_the_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RECONCILER_STORE", raising=False)
    outside = tmp_path / "outside"
    outside.mkdir()
    if find_git_dir(outside) is not None:
        pytest.skip("the temporary folder is itself inside a Git repository")
    with pytest.raises(StoreError) as caught:
        resolve_store_url(None, outside)
    assert caught.value.code is Code.REPOSITORY_NOT_FOUND
