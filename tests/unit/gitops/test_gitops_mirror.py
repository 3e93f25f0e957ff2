"""Mirror and FetchLoop against a real ``git daemon`` serving a real bare repository."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.gitops import GitError, Repository
from reconciler.gitops.mirror import FetchLoop, HeadMove, Mirror, display_url
from tests.conftest import MakeRepo
from tests.support.git_daemon import GitDaemon, free_port
from tests.support.gitrepos import GitRepo

DEADLINE = 10.0


@pytest.fixture
def work(make_repo: MakeRepo) -> GitRepo:
    git = make_repo("work")
    git.commit({"apps/web/score.yaml": "name: web\n"}, "first")
    git.git("branch", "staging")
    return git


@pytest.fixture
def daemon(work: GitRepo, tmp_path: Path) -> Iterator[GitDaemon]:
    base = tmp_path / "served"
    base.mkdir()
    work.clone_bare(base / "remote.git")
    served = GitDaemon(base, free_port())
    served.start()
    work.git("remote", "add", "origin", served.url)
    yield served
    served.stop()


@pytest.fixture
def mirror(daemon: GitDaemon, tmp_path: Path) -> Mirror:
    return Mirror(daemon.url, tmp_path / "mirror.git", branches=["main", "staging", "absent"])


def test_the_first_fetch_makes_the_mirror_and_reports_every_branch(
    work: GitRepo, mirror: Mirror
) -> None:
    head = work.git("rev-parse", "HEAD")
    assert mirror.heads() == {}
    assert mirror.fetch_moves() == (
        HeadMove("main", None, head, forced=False),
        HeadMove("staging", None, head, forced=False),
    )
    assert Repository.open(mirror.path).is_bare
    assert Repository.open(mirror.path).branch_head("staging") == head
    assert mirror.fetch() == {}


def test_one_fetch_per_call_whatever_the_branches(
    work: GitRepo, mirror: Mirror, daemon: GitDaemon
) -> None:
    mirror.fetch()
    assert daemon.wait_uploads(1) == 1
    sha = work.commit({"apps/api/score.yaml": "name: api\n"})
    work.git("push", "--quiet", "origin", "main", "main:staging")
    assert mirror.fetch() == {"main": sha, "staging": sha}
    assert daemon.wait_uploads(2) == 2


def test_a_push_moves_the_head_and_a_force_push_is_reported_as_such(
    work: GitRepo, mirror: Mirror
) -> None:
    first = work.git("rev-parse", "HEAD")
    mirror.fetch()
    second = work.commit({"apps/web/score.yaml": "name: web2\n"})
    work.git("push", "--quiet", "origin", "main")
    assert mirror.fetch_moves() == (HeadMove("main", first, second, forced=False),)

    work.git("reset", "--quiet", "--hard", first)
    rewritten = work.commit({"apps/web/score.yaml": "name: rewritten\n"})
    work.git("push", "--quiet", "--force", "origin", "main")
    assert mirror.fetch_moves() == (HeadMove("main", second, rewritten, forced=True),)
    assert mirror.heads()["main"] == rewritten


def test_an_unreachable_remote_is_a_coded_error_and_the_mirror_is_kept(
    work: GitRepo, mirror: Mirror, daemon: GitDaemon
) -> None:
    head = work.git("rev-parse", "HEAD")
    mirror.fetch()
    daemon.stop()
    with pytest.raises(GitError) as caught:
        mirror.fetch()
    assert caught.value.code.id == "RCN-4013"
    assert "127.0.0.1" in caught.value.message
    assert mirror.heads() == {"main": head, "staging": head}


def test_a_folder_that_is_not_a_repository_is_refused(tmp_path: Path) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("mine")
    with pytest.raises(GitError) as caught:
        Mirror("git://127.0.0.1:1/x.git", tmp_path / "busy", branches=["main"]).fetch()
    assert caught.value.code.id == "RCN-4014"


def test_urls_in_messages_hide_secrets() -> None:
    assert display_url("https://bot:tok3n@forge.example:8443/a/b.git") == (
        "https://bot:***@forge.example:8443/a/b.git"
    )
    assert display_url("https://ghp_secret@forge.example/a/b.git") == (
        "https://***@forge.example/a/b.git"
    )
    assert display_url("ssh://git@forge.example/a/b.git") == "ssh://git@forge.example/a/b.git"
    assert display_url("git://127.0.0.1:9418/r.git") == "git://127.0.0.1:9418/r.git"


# -- FetchLoop -----------------------------------------------------------------------------


class Moves:
    def __init__(self) -> None:
        self.items: list[HeadMove] = []
        self.errors: list[GitError] = []
        self._cond = threading.Condition()

    def __call__(self, move: HeadMove) -> None:
        with self._cond:
            self.items.append(move)
            self._cond.notify_all()

    def error(self, error: GitError) -> None:
        with self._cond:
            self.errors.append(error)
            self._cond.notify_all()

    def wait(self, moves: int = 0, errors: int = 0) -> None:
        with self._cond:
            done = self._cond.wait_for(
                lambda: len(self.items) >= moves and len(self.errors) >= errors, DEADLINE
            )
            assert done, (self.items, self.errors)


def test_a_trigger_fetches_at_once(work: GitRepo, mirror: Mirror) -> None:
    moves = Moves()
    loop = FetchLoop(mirror, on_change=moves, interval=3600.0)
    loop.start()
    try:
        moves.wait(moves=2)  # the first fetch, as soon as the loop starts
        sha = work.commit({"apps/web/score.yaml": "name: web3\n"})
        work.git("push", "--quiet", "origin", "main")
        loop.trigger()
        moves.wait(moves=3)
        assert moves.items[2] == HeadMove("main", moves.items[0].new, sha, forced=False)
    finally:
        loop.stop()
    assert not loop.running


class TickSleep:
    """A fake ``sleep``: records each wait, moves the fake clock past it, and blocks the loop
    between ticks until the test lets it go on, so the test decides when each tick happens."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.waits: list[float] = []
        self.go = threading.Semaphore(0)
        self.closed = False
        self._cond = threading.Condition()

    def clock(self) -> float:
        return self.now

    def __call__(self, event: threading.Event, seconds: float) -> None:
        with self._cond:
            self.waits.append(seconds)
            self._cond.notify_all()
        if not self.closed:
            self.go.acquire(timeout=DEADLINE)
        self.now += seconds

    def close(self) -> None:
        """Let the loop go for good (call after ``stop(timeout=0)`` asked it to end)."""
        self.closed = True
        self.go.release()

    def wait_waits(self, count: int) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.waits) >= count, DEADLINE), self.waits


def test_the_remote_going_down_is_reported_and_retried_at_the_next_tick(
    work: GitRepo, mirror: Mirror, daemon: GitDaemon
) -> None:
    moves, sleep = Moves(), TickSleep()
    loop = FetchLoop(
        mirror,
        on_change=moves,
        on_error=moves.error,
        interval=60.0,
        jitter=0.1,
        clock=sleep.clock,
        sleep=sleep,
        uniform=lambda low, high: high,
    )
    loop.start()
    try:
        sleep.wait_waits(1)
        assert len(moves.items) == 2
        assert sleep.waits == [pytest.approx(66.0)]
        daemon.stop()
        sleep.go.release()  # tick: the remote is down
        sleep.wait_waits(2)
        assert [e.code.id for e in moves.errors] == ["RCN-4013"]
        daemon.start()
        sha = work.commit({"apps/web/score.yaml": "name: back\n"})
        work.git("push", "--quiet", "origin", "main")
        sleep.go.release()  # tick: the remote is back
        sleep.wait_waits(3)
        assert moves.items[-1].new == sha
        assert (loop.fetches, loop.failures) == (3, 1)
    finally:
        loop.stop(timeout=0)
        sleep.close()
        loop.stop()
    assert not loop.running


class SlowMirror(Mirror):
    """A mirror whose fetch blocks until released, and that counts fetches running at once."""

    def __init__(self, path: Path) -> None:
        super().__init__("git://127.0.0.1:1/none.git", path, branches=["main"])
        self.release = threading.Semaphore(0)
        self.started = threading.Semaphore(0)
        self.running = 0
        self.most = 0
        self.calls = 0
        self._count = threading.Lock()

    def fetch_moves(self) -> tuple[HeadMove, ...]:
        with self._count:
            self.running += 1
            self.calls += 1
            self.most = max(self.most, self.running)
        self.started.release()
        self.release.acquire(timeout=DEADLINE)
        with self._count:
            self.running -= 1
        return ()


def test_triggers_during_a_fetch_give_one_more_fetch_never_two_at_once(tmp_path: Path) -> None:
    slow = SlowMirror(tmp_path / "m.git")
    sleep = TickSleep()
    loop = FetchLoop(slow, on_change=Moves(), clock=sleep.clock, sleep=sleep)
    loop.start()
    try:
        assert slow.started.acquire(timeout=DEADLINE)  # the first fetch is under way
        for _ in range(5):
            loop.trigger()
        slow.release.release()
        assert slow.started.acquire(timeout=DEADLINE)  # one more, at once, for the triggers
        slow.release.release()
        sleep.wait_waits(1)  # then back to waiting for the interval
        assert (slow.calls, slow.most) == (2, 1)
    finally:
        loop.stop(timeout=0)
        sleep.close()
        slow.release.release()
        loop.stop()
    assert not loop.running


def test_the_interval_is_jittered_within_bounds(tmp_path: Path) -> None:
    mirror = Mirror("git://127.0.0.1:1/x.git", tmp_path / "m.git", branches=["main"])
    low = FetchLoop(mirror, on_change=Moves(), interval=60.0, uniform=lambda a, b: a)
    high = FetchLoop(mirror, on_change=Moves(), interval=60.0, uniform=lambda a, b: b)
    assert low.next_delay() == pytest.approx(54.0)
    assert high.next_delay() == pytest.approx(66.0)
    real = FetchLoop(mirror, on_change=Moves(), interval=60.0, jitter=0.1)
    assert all(54.0 <= real.next_delay() <= 66.0 for _ in range(200))
    with pytest.raises(ValueError, match="interval must be positive"):
        FetchLoop(mirror, on_change=Moves(), interval=0)
