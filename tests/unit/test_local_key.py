"""The embedded setup's secret key: made once, whoever asks first, and the same for everyone."""

from __future__ import annotations

import stat
import threading

from cryptography.fernet import Fernet

from reconciler.gitops.repository import Repository
from reconciler.services import LOCAL_KEY_FILE, local_key
from tests.conftest import MakeRepo


def test_environments_starting_together_get_one_key(make_repo: MakeRepo) -> None:
    """The daemon reconciles its environments at once on a new repository, and each asks for
    the key: one of them makes it, every one gets that key, and none fails because another
    made the file first (or reads it half written)."""
    repo = Repository.open(make_repo().root)
    start = threading.Barrier(8, timeout=10)
    keys: list[bytes] = []
    errors: list[BaseException] = []

    def ask() -> None:
        start.wait()
        try:
            keys.append(local_key(repo))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    assert errors == []
    assert len(keys) == 8
    assert len(set(keys)) == 1
    path = repo.common_dir / LOCAL_KEY_FILE
    assert path.read_bytes() == keys[0] + b"\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left
    Fernet(keys[0])  # a valid key
    assert local_key(repo) == keys[0]
