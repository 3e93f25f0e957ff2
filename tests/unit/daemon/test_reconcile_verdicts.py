"""A reconcile that stops on an error says so in the commit's note, and the retry's verdict
replaces it.

Real Git repository and notes, real SQLite store, the daemon's real queue and leases; the
error is injected by wrapping one of the daemon's real functions so that it raises once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import reconciler.daemon.reconcile as reconcile_module
from reconciler.daemon.metrics import create_metrics
from reconciler.daemon.queue import WorkQueue
from reconciler.daemon.reconcile import Key, Reconciler
from reconciler.gitops.repository import Repository
from reconciler.gitops.status import FanOut, GitNotes
from reconciler.pipeline import open_source
from reconciler.store.leases import LeaseManager
from reconciler.store.store import Store
from tests.conftest import MakeRepo
from tests.reliability.conftest import notes, plain_workload
from tests.support.gitrepos import GitRepo
from tests.unit.daemon.support import DEADLINE, FakeClock

CONFIG = "environments:\n  staging:\n    branch: main\n"
ENV = "staging"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open("sqlite:///" + str(tmp_path / "state.db")) as opened:
        yield opened


class Daemon:
    """The daemon's reconciling half on one repository, driven key by key on a fake clock."""

    def __init__(self, repo: GitRepo, store: Store, head: str) -> None:
        self.repo = repo
        self.clock = FakeClock()
        self.queue: WorkQueue[Key] = WorkQueue(clock=self.clock, uniform=lambda: 0.5)
        repository = Repository.open(repo.root)
        environments = open_source(repository, head).config.environments
        self.reporters = FanOut([GitNotes(repo.root)])
        self.work = Reconciler(
            store=store,
            queue=self.queue,
            leases=LeaseManager(store, "test", 30.0),
            metrics=create_metrics(),
            repo=lambda: repository,
            environments=lambda: dict(environments),
            head=lambda env: head,
            parallelism=2,
            target_url=None,
            remote=None,
        )
        self.work.reporters = self.reporters
        self.head = head

    def drain(self) -> None:
        """Process every ready key, a workload's together with the others ready, as the
        daemon's workers do; then wait for the notes to be written."""
        while (key := self.queue.get(timeout=0)) is not None:
            batch = [key]
            if key[1]:
                batch += self.queue.take_ready(lambda k: k[0] == key[0] and bool(k[1]), 100)
            self.work.process(key[0], batch)
        assert self.reporters.wait_idle(DEADLINE)

    def retry(self) -> None:
        """Let the backoff pass, then drain again."""
        self.clock.advance(3600)
        self.drain()

    def verdicts(self) -> list[dict[str, Any]]:
        """The environment's verdicts noted on the commit, in order (not per-workload lines)."""
        return [
            n
            for n in notes(self.repo, self.head)
            if n["environment"] == ENV and n.get("scope") == [] and n["phase"] != "Running"
        ]


def raising_once(monkeypatch: pytest.MonkeyPatch, name: str, error: Exception) -> list[int]:
    """Make ``reconcile_module.<name>`` raise ``error`` on its first call, then work."""
    real: Callable[..., Any] = getattr(reconcile_module, name)
    calls: list[int] = []

    def once(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(reconcile_module, name, once)
    return calls


@pytest.fixture
def daemon(make_repo: MakeRepo, store: Store) -> Iterator[Daemon]:
    """A repository of one workload, its commit queued; the reporters' threads stopped after."""
    repo = make_repo()
    head = repo.commit({"reconciler.yaml": CONFIG, "apps/aa/score.yaml": plain_workload("aa")})
    started = Daemon(repo, store, head)
    started.queue.add((ENV, ""))
    try:
        yield started
    finally:
        assert started.reporters.close(DEADLINE)


def test_a_crashed_run_is_noted_failed_with_a_code_then_succeeded_on_retry(
    daemon: Daemon, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = raising_once(monkeypatch, "apply_environment", RuntimeError("a bug"))
    daemon.drain()
    assert len(calls) == 1
    crashed = daemon.verdicts()
    assert [(v["phase"], [f["code"] for f in v["failures"]]) for v in crashed] == [
        ("Failed", ["RCN-3017"])
    ]
    assert "a bug" not in crashed[0]["failures"][0]["message"]  # the log has it, not the note
    assert "RuntimeError" in crashed[0]["failures"][0]["message"]

    daemon.drain()  # nothing is due before the backoff: the same verdict stands, once
    assert len(daemon.verdicts()) == 1
    daemon.retry()
    assert [v["phase"] for v in daemon.verdicts()] == ["Failed", "Succeeded"]
    assert store.last_commit(ENV) == daemon.head


def test_a_crash_after_the_commit_was_recorded_still_gets_its_verdict(
    daemon: Daemon, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Settling records the commit, then says the verdict: a crash in between must not leave
    the commit settled with the crash as its last word."""
    calls = raising_once(monkeypatch, "environment_verdict", RuntimeError("a bug"))
    daemon.drain()
    assert calls  # the settle was reached
    assert store.last_commit(ENV) == daemon.head
    assert [v["phase"] for v in daemon.verdicts()] == ["Failed"]
    daemon.retry()
    assert [v["phase"] for v in daemon.verdicts()] == ["Failed", "Succeeded"]
