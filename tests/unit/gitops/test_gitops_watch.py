"""RefWatcher on real repositories changed by the real ``git`` binary, as users change them."""

from __future__ import annotations

import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.gitops import GitError, Repository
from reconciler.gitops.watch import RefWatcher
from tests.conftest import MakeRepo
from tests.support.gitrepos import GitRepo

DEADLINE = 10.0


class Calls:
    """The callbacks received, with a way to wait for the n-th one."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []
        self.times: list[float] = []
        self._cond = threading.Condition()

    def __call__(self, branch: str, sha: str) -> None:
        with self._cond:
            self.items.append((branch, sha))
            self.times.append(time.perf_counter())
            self._cond.notify_all()

    def wait_for(self, count: int, timeout: float = DEADLINE) -> list[tuple[str, str]]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.items) >= count, timeout):
                raise AssertionError(f"expected {count} calls within {timeout}s, got {self.items}")
            return list(self.items)


@pytest.fixture
def repo(make_repo: MakeRepo) -> GitRepo:
    git = make_repo()
    git.commit({"a.txt": "1"})
    return git


@pytest.fixture
def watch(repo: GitRepo) -> Iterator[tuple[RefWatcher, Calls]]:
    calls = Calls()
    watcher = RefWatcher(Repository.open(repo.root), ["main", "release"], calls)
    watcher.start()
    yield watcher, calls
    watcher.stop()


def test_a_commit_is_reported_with_its_new_head(
    repo: GitRepo, watch: tuple[RefWatcher, Calls]
) -> None:
    _, calls = watch
    sha = repo.commit({"a.txt": "2"})
    assert calls.wait_for(1) == [("main", sha)]


def test_a_new_watched_branch_is_reported(repo: GitRepo, watch: tuple[RefWatcher, Calls]) -> None:
    _, calls = watch
    repo.git("branch", "release-1.x")  # not watched: a name that starts the same
    repo.git("branch", "release")
    assert calls.wait_for(1) == [("release", repo.git("rev-parse", "HEAD"))]


def test_the_daemons_own_writes_and_other_branches_are_not_reported(
    repo: GitRepo, watch: tuple[RefWatcher, Calls]
) -> None:
    watcher, calls = watch
    repo.git("notes", "--ref=reconciler", "add", "-m", "status: Synced")
    repo.git("branch", "reconciler/status")
    repo.git("branch", "feature")
    repo.git("pack-refs", "--all")  # rewrites packed-refs and deletes the loose refs
    repo.git("update-ref", "refs/heads/reconciler/status", repo.commit({"b.txt": "x"}))
    sha = repo.git("rev-parse", "HEAD")
    # Events are handled in order, so by the time the commit above is reported every write
    # before it has been looked at; exactly one call proves they were all ignored.
    assert calls.wait_for(1) == [("main", sha)]
    repo.git("checkout", "--quiet", "-b", "other")
    other = repo.commit({"c.txt": "y"})
    repo.git("checkout", "--quiet", "main")
    repo.git("merge", "--quiet", "--ff-only", "other")
    assert calls.wait_for(2)[1] == ("main", other)
    assert watcher.heads == {"main": other, "release": None}


def test_a_bare_repository_is_watched_through_pushes(repo: GitRepo, tmp_path: Path) -> None:
    bare = repo.clone_bare(tmp_path / "bare.git")
    calls = Calls()
    watcher = RefWatcher(Repository.open(bare), ["main"], calls)
    watcher.start()
    try:
        sha = repo.commit({"a.txt": "pushed"})
        repo.git("push", "--quiet", str(bare), "main")
        assert calls.wait_for(1) == [("main", sha)]
    finally:
        watcher.stop()


def test_a_commit_in_a_linked_work_tree_is_seen_and_state_is_shared(
    repo: GitRepo, tmp_path: Path
) -> None:
    linked = tmp_path / "linked"
    repo.git("worktree", "add", "--quiet", "-b", "release", str(linked))
    opened = Repository.open(linked)
    assert opened.git_dir != opened.common_dir  # its own folder: HEAD and little else
    assert opened.common_dir == Repository.open(repo.root).git_dir.resolve()  # one store for all
    calls = Calls()
    watcher = RefWatcher(opened, ["release"], calls, rescan=60)  # events only, no re-read
    watcher.start()
    try:
        (linked / "b.txt").write_text("from the linked work tree\n")
        subprocess.run(["git", "add", "b.txt"], cwd=linked, check=True, env=repo.env)
        subprocess.run(["git", "commit", "-qm", "linked"], cwd=linked, check=True, env=repo.env)
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=linked, check=True, capture_output=True, text=True
        ).stdout.strip()
        assert calls.wait_for(1) == [("release", sha)]
    finally:
        watcher.stop()


def test_a_deleted_branch_is_reported_when_it_comes_back(
    repo: GitRepo, watch: tuple[RefWatcher, Calls]
) -> None:
    watcher, calls = watch
    repo.git("branch", "release")
    first = calls.wait_for(1)
    repo.git("branch", "-D", "release")
    repo.commit({"a.txt": "3"})
    repo.git("branch", "release")
    sha = repo.git("rev-parse", "HEAD")
    assert calls.wait_for(3)[1:] == [("main", sha), ("release", sha)]
    assert first[0][0] == "release"
    assert watcher.heads["release"] == sha


def test_a_failing_callback_does_not_end_the_watch(repo: GitRepo) -> None:
    calls = Calls()

    def flaky(branch: str, sha: str) -> None:
        calls(branch, sha)
        if len(calls.items) == 1:
            raise RuntimeError("boom")

    watcher = RefWatcher(Repository.open(repo.root), ["main"], flaky)
    watcher.start()
    try:
        repo.commit({"a.txt": "4"})
        calls.wait_for(1)
        second = repo.commit({"a.txt": "5"})
        assert calls.wait_for(2)[1] == ("main", second)
        assert watcher.running
    finally:
        watcher.stop()


def test_stop_is_prompt_and_start_twice_is_refused(repo: GitRepo) -> None:
    watcher = RefWatcher(Repository.open(repo.root), ["main"], Calls())
    watcher.start()
    with pytest.raises(RuntimeError):
        watcher.start()
    began = time.perf_counter()
    watcher.stop()
    elapsed = time.perf_counter() - began
    assert not watcher.running
    assert elapsed < 0.5, elapsed


def test_an_unreadable_repository_is_reported_not_raised(repo: GitRepo) -> None:
    errors: list[GitError] = []
    reported = threading.Event()

    def on_error(error: GitError) -> None:
        errors.append(error)
        reported.set()

    watcher = RefWatcher(Repository.open(repo.root), ["main"], Calls(), on_error=on_error)
    watcher.start()
    try:
        (repo.root / ".git" / "refs" / "heads" / "main").write_text("not a sha\n")
        assert reported.wait(DEADLINE)
        assert errors[0].code.id.startswith("RCN-400")
        assert watcher.running
    finally:
        watcher.stop()


def test_commit_to_callback_latency(repo: GitRepo, watch: tuple[RefWatcher, Calls]) -> None:
    """30 commits with the git binary; the figures are printed for the report."""
    _, calls = watch
    latencies: list[float] = []
    for n in range(30):
        (repo.root / "a.txt").write_text(f"latency {n}\n")
        subprocess.run(["git", "add", "a.txt"], cwd=repo.root, env=repo.env, check=True)
        subprocess.run(
            ["git", "commit", "--quiet", "-m", f"c{n}"], cwd=repo.root, env=repo.env, check=True
        )
        committed = time.perf_counter()
        calls.wait_for(n + 1)
        latencies.append((calls.times[n] - committed) * 1000)
    shas = [sha for _, sha in calls.items]
    assert len(set(shas)) == 30
    p50 = statistics.median(latencies)
    p95 = statistics.quantiles(latencies, n=20)[-1]
    print(f"\ncommit -> callback latency over 30 commits: p50 {p50:.1f} ms, p95 {p95:.1f} ms")
    assert p95 < 1000
