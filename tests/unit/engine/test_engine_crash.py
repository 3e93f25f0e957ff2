"""A real process dies under a running step (SIGKILL) and the run resumes in this process; a
real process gets SIGTERM and ends its run Interrupted, checkpointed."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.engine import Executor, RunStatus, StoreCheckpointer
from reconciler.store import Store
from tests.unit.engine.crash_child import build_steps
from tests.unit.engine.support import DEADLINE, new_run

CHILD = Path(__file__).with_name("crash_child.py")
# A child imports the whole package before it prints: on a loaded machine (two cores, the rest
# of the suite beside it) that alone has taken more than DEADLINE. Only a bound on a hang.
CHILD_DEADLINE = 6 * DEADLINE
PROJECT = Path(__file__).resolve().parents[3]


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return "sqlite:///" + str(tmp_path / "state.db")
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    with Store.open(store_url) as opened:
        yield opened


def start_child(mode: str, url: str, run_id: str, effects: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(CHILD), mode, url, run_id, str(effects)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=PROJECT,
    )


def read_line(child: subprocess.Popen[str]) -> str:
    """The child's next line, or a failure after CHILD_DEADLINE instead of a hang."""
    assert child.stdout is not None
    ready, _, _ = select.select([child.stdout], [], [], CHILD_DEADLINE)
    assert ready, "the child printed nothing in time"
    return child.stdout.readline().strip()


def test_a_killed_run_resumes_without_running_finished_steps_again(
    store: Store, store_url: str, tmp_path: Path
) -> None:
    run_id, effects = new_run(store), tmp_path / "effects.txt"
    child = start_child("kill", store_url, run_id, effects)
    try:
        assert read_line(child) == "b running"
        # b's Running state is written within RUNNING_FLUSH of its start.
        wanted = {"a": "Succeeded", "b": "Running", "c": "Pending"}
        deadline = time.monotonic() + DEADLINE
        states = {r.step_id: r.status for r in store.steps(run_id)}
        while states != wanted and time.monotonic() < deadline:
            select.select([], [], [], 0.005)
            states = {r.step_id: r.status for r in store.steps(run_id)}
        assert states == wanted
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.communicate(timeout=DEADLINE)
    assert child.returncode == -signal.SIGKILL

    result = Executor(StoreCheckpointer(store)).run(run_id, build_steps(effects, block=None))
    assert result.status is RunStatus.SUCCEEDED
    assert effects.read_text().split() == ["a", "b", "b", "c"]  # b once more, a and c once
    assert result.steps["a"].resumed
    assert not result.steps["b"].resumed
    assert dict(result.steps["c"].outputs) == {"by": "c"}
    assert {r.step_id: r.status for r in store.steps(run_id)} == dict.fromkeys("abc", "Succeeded")


def test_sigterm_interrupts_the_run_and_checkpoints_it(
    store: Store, store_url: str, tmp_path: Path
) -> None:
    run_id, effects = new_run(store), tmp_path / "effects.txt"
    child = start_child("term", store_url, run_id, effects)
    try:
        assert read_line(child) == "b running"
        child.send_signal(signal.SIGTERM)
        summary = json.loads(read_line(child))
    finally:
        child.kill()
        child.communicate(timeout=DEADLINE)
    assert summary == {
        "status": "Interrupted",
        "steps": {
            "a": ["Succeeded", None],
            "b": ["Failed", "RCN-3005"],
            "c": ["Skipped", "RCN-3005"],
        },
    }
    stored = {r.step_id: (r.status, r.error_code) for r in store.steps(run_id)}
    assert stored == {k: (v[0], v[1]) for k, v in summary["steps"].items()}


def test_sigterm_delivered_to_a_worker_thread_still_interrupts_the_run(
    store: Store, store_url: str, tmp_path: Path
) -> None:
    """The kernel delivers a process's SIGTERM to any of its threads. One that lands on a
    worker does not wake the coordinator's wait on the main thread, where Python runs signal
    handlers; the coordinator must come back to the interpreter by itself."""
    run_id, effects = new_run(store), tmp_path / "effects.txt"
    child = start_child("term-worker", store_url, run_id, effects)
    try:
        assert read_line(child) == "b running"
        summary = json.loads(read_line(child))
    finally:
        child.kill()
        child.communicate(timeout=DEADLINE)
    assert summary["status"] == "Interrupted"
    assert summary["steps"]["b"] == ["Failed", "RCN-3005"]  # cancelled, not left to finish
