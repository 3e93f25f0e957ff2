"""FanOut: reporting never blocks or fails the caller, and failing reporters are retried alone."""

from __future__ import annotations

import socket
import threading
import time

from reconciler.catalogue import Code
from reconciler.gitops import GitError
from reconciler.gitops.status import (
    CommitStatus,
    FanOut,
    ForgeStatuses,
    GitNotes,
    RetrySettings,
    StatusBranch,
)
from tests.conftest import MakeRepo
from tests.unit.status.support import status

FAST = RetrySettings(initial_backoff=0.01, max_backoff=0.05, max_attempts=3)


class Recording:
    """A reporter that fails its first ``failures`` calls, then records."""

    def __init__(self, name: str, failures: int = 0, error: Exception | None = None) -> None:
        self.name = name
        self.failures = failures
        self.error = error or GitError(Code.GIT_READ_FAILED, "remote down")
        self.received: list[CommitStatus] = []
        self.calls = 0

    def report(self, status: CommitStatus) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        self.received.append(status)


class Blocked:
    """A reporter stuck until released, like a forge that never answers."""

    name = "stuck"

    def __init__(self) -> None:
        self.gate = threading.Event()

    def report(self, status: CommitStatus) -> None:
        self.gate.wait(10)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_forge_that_is_down_blocks_nothing() -> None:
    down = ForgeStatuses(
        "github", f"http://127.0.0.1:{_closed_port()}", "acme/shop", "T", environ={"T": "secret"}
    )
    fan = FanOut([down], retry=RetrySettings(initial_backoff=5.0, max_attempts=10))
    started = time.monotonic()
    for run in range(50):
        fan.report(status(run_id=f"run-{run}"))
    assert time.monotonic() - started < 0.5
    started = time.monotonic()
    assert fan.close(0.3) is False  # still retrying when time ran out: reported, not hidden
    assert time.monotonic() - started < 2.0
    counters = fan.counters()["forge"]
    assert counters.sent == 0
    assert counters.retried >= 1
    assert counters.pending == 0
    assert counters.superseded == 49
    assert counters.dropped == 1
    assert counters.last_error is not None
    assert "ConnectError" in counters.last_error


def test_a_failing_reporter_is_retried_while_the_others_go_on() -> None:
    flaky = Recording("notes", failures=2)
    steady = Recording("status-branch")
    stuck = Blocked()
    fan = FanOut([flaky, steady, stuck], retry=FAST)
    fan.report(status(run_id="a"))
    fan.report(status(run_id="b"))
    deadline = time.monotonic() + 5
    while len(steady.received) < 2 or len(flaky.received) < 2:  # the stuck lane holds no one up
        assert time.monotonic() < deadline, "lanes did not deliver"
        fan.wait_idle(0.01)
    assert [s.run_id for s in flaky.received] == ["a", "b"]  # order kept through the retries
    assert fan.counters()["notes"].retried == 2
    stuck.gate.set()
    assert fan.close(5)


def test_giving_up_is_counted_and_never_raised() -> None:
    broken = Recording("notes", failures=99)
    buggy = Recording("status-branch", failures=99, error=RuntimeError("bug"))
    fan = FanOut([broken, buggy], retry=FAST)
    fan.report(status())
    assert fan.close(5)
    assert broken.calls == FAST.max_attempts
    assert buggy.calls == 1
    assert fan.counters()["notes"].failed == 1
    assert fan.counters()["status-branch"].failed == 1
    assert "RuntimeError: bug" in (fan.counters()["status-branch"].last_error or "")


def test_statuses_after_close_are_dropped_not_raised() -> None:
    late = Recording("notes")
    fan = FanOut([late], retry=FAST)
    assert fan.close(1)
    fan.report(status())
    assert late.received == []
    assert fan.counters()["notes"].dropped == 1


def test_git_reporters_through_fanout(make_repo: MakeRepo) -> None:
    repo = make_repo()
    sha = repo.commit({"README.md": "hello\n"})
    fan = FanOut([GitNotes(repo.root), StatusBranch(repo.root)], retry=FAST)
    fan.report(status(commit=sha))
    assert fan.close(10)
    assert repo.git("notes", "--ref=reconciler", "show", sha) == status(commit=sha).to_json_line()
    assert "prod/web.yaml" in repo.git("ls-tree", "-r", "--name-only", "reconciler/status")
