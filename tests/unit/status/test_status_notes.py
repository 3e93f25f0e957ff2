"""Git notes: lines appended on a real repository, pushed to a real remote by two writers."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.gitops import GitError
from reconciler.gitops.reflock import STALE_AFTER
from reconciler.gitops.status import GitNotes, Phase, append_note, push_notes, read_note
from reconciler.gitops.status.notes import union
from tests.conftest import MakeRepo
from tests.support.gitrepos import GitRepo
from tests.unit.status.support import status

DEADLINE = 10.0


@pytest.fixture
def repo(make_repo: MakeRepo) -> GitRepo:
    repo = make_repo()
    repo.commit({"apps/web/score.yaml": "apiVersion: score.dev/v1b1\n"})
    return repo


def test_a_note_appended_twice_keeps_both_lines_for_git_notes_show(repo: GitRepo) -> None:
    sha = repo.git("rev-parse", "HEAD")
    pending = status(commit=sha, phase=Phase.PENDING)
    done = status(commit=sha, run_id="run-1")
    other_env = status(commit=sha, environment="staging", run_id="run-2")

    assert append_note(repo.root, sha, pending)
    assert append_note(repo.root, sha, done)
    assert append_note(repo.root, sha, other_env)

    shown = repo.git("notes", "--ref=reconciler", "show", sha).splitlines()
    assert sorted(shown) == sorted(s.to_json_line() for s in (pending, done, other_env))
    assert read_note(repo.root, sha) == shown


def test_appending_the_same_status_again_adds_nothing(repo: GitRepo) -> None:
    sha = repo.git("rev-parse", "HEAD")
    assert append_note(repo.root, sha, status(commit=sha))
    notes_head = repo.git("rev-parse", "refs/notes/reconciler")
    assert not append_note(repo.root, sha, status(commit=sha))
    assert repo.git("rev-parse", "refs/notes/reconciler") == notes_head


def test_lines_written_by_git_notes_are_kept(repo: GitRepo) -> None:
    sha = repo.git("rev-parse", "HEAD")
    repo.git("notes", "--ref=reconciler", "add", "-m", "written by hand", sha)
    append_note(repo.root, sha, status(commit=sha))
    assert "written by hand" in repo.git("notes", "--ref=reconciler", "show", sha).splitlines()


def test_works_in_a_bare_repository(repo: GitRepo, tmp_path: Path) -> None:
    sha = repo.git("rev-parse", "HEAD")
    bare = repo.clone_bare(tmp_path / "bare.git")
    append_note(bare, sha, status(commit=sha))
    assert read_note(bare, sha) == [status(commit=sha).to_json_line()]


def test_an_unknown_commit_is_a_coded_error(repo: GitRepo) -> None:
    with pytest.raises(GitError) as raised:
        append_note(repo.root, "f" * 40, status(commit="f" * 40))
    assert raised.value.code.id == "RCN-4002"


def test_concurrent_appenders_in_one_repository_lose_no_line(repo: GitRepo) -> None:
    sha = repo.git("rev-parse", "HEAD")
    statuses = [status(commit=sha, run_id=f"run-{i}") for i in range(12)]
    threads = [threading.Thread(target=append_note, args=(repo.root, sha, s)) for s in statuses]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE)
    assert sorted(read_note(repo.root, sha)) == sorted(s.to_json_line() for s in statuses)


def test_union_sorts_and_dedupes() -> None:
    assert union("b\na\n", "a\nc", "\n") == "a\nb\nc\n"


# -- pushing -----------------------------------------------------------------------------------


def _two_clones(repo: GitRepo, tmp_path: Path, remote: str) -> tuple[GitRepo, GitRepo]:
    clones = []
    for name in ("one", "two"):
        repo.git("clone", "--quiet", remote, str(tmp_path / name))
        clones.append(GitRepo(tmp_path / name, repo.env))
    return clones[0], clones[1]


def _remote_note(repo: GitRepo, remote: Path, sha: str) -> list[str]:
    return repo.git(f"--git-dir={remote}", "notes", "--ref=reconciler", "show", sha).splitlines()


def test_a_rejected_push_merges_the_other_writers_lines(repo: GitRepo, tmp_path: Path) -> None:
    sha = repo.git("rev-parse", "HEAD")
    remote = repo.clone_bare(tmp_path / "remote.git")
    one, two = _two_clones(repo, tmp_path, str(remote))
    first, second = status(commit=sha, run_id="a"), status(commit=sha, run_id="b")

    append_note(one.root, sha, first)
    push_notes(one.root, "origin")
    append_note(two.root, sha, second)  # two never fetched: its push is rejected at first
    push_notes(two.root, "origin")

    expected = sorted([first.to_json_line(), second.to_json_line()])
    assert _remote_note(repo, remote, sha) == expected
    append_note(one.root, sha, first)
    push_notes(one.root, "origin")  # one is behind now: it merges too, and loses nothing
    assert _remote_note(repo, remote, sha) == expected


def test_two_writers_pushing_at_once_both_land(repo: GitRepo, tmp_path: Path) -> None:
    sha = repo.git("rev-parse", "HEAD")
    other = repo.commit({"apps/api/score.yaml": "apiVersion: score.dev/v1b1\n"})
    remote = repo.clone_bare(tmp_path / "remote.git")
    one, two = _two_clones(repo, tmp_path, str(remote))
    written: list[str] = []
    errors: list[BaseException] = []

    def writer(clone: GitRepo, name: str) -> None:
        try:
            for i in range(4):
                for commit in (sha, other):
                    append_note(clone.root, commit, status(commit=commit, run_id=f"{name}-{i}"))
                push_notes(clone.root, "origin", attempts=20)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=writer, args=(c, n)) for c, n in ((one, "one"), (two, "two"))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    for commit in (sha, other):
        written = [
            status(commit=commit, run_id=f"{n}-{i}").to_json_line()
            for n in ("one", "two")
            for i in range(4)
        ]
        assert _remote_note(repo, remote, commit) == sorted(written)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def git_daemon(repo: GitRepo, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real ``git daemon`` serving a bare copy of ``repo`` with pushes enabled."""
    base = tmp_path / "served"
    base.mkdir()
    bare = repo.clone_bare(base / "remote.git")
    port = _free_port()
    daemon = subprocess.Popen(
        [
            "git",
            "daemon",
            "--export-all",
            "--enable=receive-pack",
            f"--base-path={base}",
            f"--port={port}",
            "--listen=127.0.0.1",
            "--reuseaddr",
            str(base),
        ],
        env=repo.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port)
        yield f"git://127.0.0.1:{port}/remote.git", bare
    finally:
        daemon.terminate()
        daemon.wait(DEADLINE)


def _wait_for_port(port: int) -> None:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            continue
    raise AssertionError(f"git daemon did not listen on {port}")


def test_pushes_over_git_daemon_and_merges(
    repo: GitRepo, tmp_path: Path, git_daemon: tuple[str, Path]
) -> None:
    url, bare = git_daemon
    sha = repo.git("rev-parse", "HEAD")
    one, two = _two_clones(repo, tmp_path, url)
    GitNotes(one.root, remote="origin").report(status(commit=sha, run_id="a"))
    GitNotes(two.root, remote="origin").report(status(commit=sha, run_id="b"))
    lines = _remote_note(repo, bare, sha)
    assert [line.count('"run_id":"a"') + line.count('"run_id":"b"') for line in lines] == [1, 1]


def test_an_unreachable_remote_is_a_coded_error(repo: GitRepo) -> None:
    sha = repo.git("rev-parse", "HEAD")
    append_note(repo.root, sha, status(commit=sha))
    with pytest.raises(GitError) as raised:
        push_notes(repo.root, f"git://127.0.0.1:{_free_port()}/nothing.git")
    assert raised.value.code.id.startswith("RCN-4")


def test_a_notes_lock_left_by_a_killed_writer_is_removed_and_the_line_lands(
    repo: GitRepo,
) -> None:
    sha = repo.git("rev-parse", "HEAD")
    assert append_note(repo.root, sha, status(commit=sha, phase=Phase.PENDING))
    lock = repo.root / ".git" / "refs" / "notes" / "reconciler.lock"
    lock.write_text("0" * 40 + "\n")
    then = time.time() - STALE_AFTER - 1
    os.utime(lock, (then, then))
    done = status(commit=sha, run_id="run-1")
    assert append_note(repo.root, sha, done)
    assert done.to_json_line() in read_note(repo.root, sha)
    assert not lock.exists()


def test_a_fresh_notes_lock_is_left_alone(repo: GitRepo) -> None:
    sha = repo.git("rev-parse", "HEAD")
    assert append_note(repo.root, sha, status(commit=sha, phase=Phase.PENDING))
    lock = repo.root / ".git" / "refs" / "notes" / "reconciler.lock"
    lock.write_text("0" * 40 + "\n")
    with pytest.raises(GitError):
        append_note(repo.root, sha, status(commit=sha, run_id="run-1"))
    assert lock.exists()
