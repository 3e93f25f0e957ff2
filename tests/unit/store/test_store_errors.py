"""Failures a user can act on come out as StoreError with the right code, quickly."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.catalogue import Code
from reconciler.store import Store, StoreError
from reconciler.store.errors import translated


def test_unreachable_postgresql_fails_fast_and_masks_the_password() -> None:
    started = time.monotonic()
    with pytest.raises(StoreError) as caught:
        Store.open("postgresql://postgres:topsecret@127.0.0.1:1/state")
    assert caught.value.code is Code.STORE_UNREACHABLE
    assert time.monotonic() - started < 5
    assert "topsecret" not in str(caught.value)
    assert "postgres:***@127.0.0.1:1/state" in str(caught.value)


def test_missing_postgresql_database_is_unreachable(pg_server_url: str) -> None:
    with pytest.raises(StoreError) as caught:
        Store.open(pg_server_url + "_missing")
    assert caught.value.code is Code.STORE_UNREACHABLE
    assert "does not exist" in caught.value.message


def test_sqlite_path_that_is_a_folder_is_unreachable(tmp_path: Path) -> None:
    with pytest.raises(StoreError) as caught:
        Store.open(f"sqlite:///{tmp_path}")
    assert caught.value.code is Code.STORE_UNREACHABLE


def test_file_that_is_not_a_database_is_unreachable(tmp_path: Path) -> None:
    (tmp_path / "state.db").write_text("not a database, just text " * 100)
    with pytest.raises(StoreError) as caught:
        Store.open(f"sqlite:///{tmp_path}/state.db")
    assert caught.value.code is Code.STORE_UNREACHABLE


@pytest.fixture
def read_only_file(tmp_path: Path) -> Iterator[Path]:
    """A store file nobody may write, root included (root ignores modes: use the immutable flag)."""
    path = tmp_path / "state.db"
    Store.open(f"sqlite:///{path}").close()
    if os.geteuid() != 0:
        path.chmod(0o444)
        yield path
        path.chmod(0o644)
        return
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", path], check=False).returncode != 0:
        pytest.skip("running as root without chattr: cannot make a file read-only")
    try:
        yield path
    finally:
        subprocess.run([chattr, "-i", path], check=True)


def test_read_only_sqlite_file(read_only_file: Path) -> None:
    with pytest.raises(StoreError) as caught:
        Store.open(f"sqlite:///{read_only_file}")
    assert caught.value.code is Code.STORE_READ_ONLY
    assert str(read_only_file) in caught.value.message


def test_a_sqlite_file_locked_past_the_busy_timeout_is_a_coded_busy_error(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    Store.open(f"sqlite:///{path}").close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process keeps the write lock
    waiter = sqlite3.connect(path, timeout=0.05)
    try:
        with pytest.raises(StoreError) as caught, translated(str(path), None):
            waiter.execute("UPDATE environments SET revision = 'x'")
    finally:
        holder.rollback()
        holder.close()
        waiter.close()
    assert caught.value.code is Code.STORE_BUSY
    assert "locked" in caught.value.message
