"""Inline steps: the thread calling ``run`` makes their first attempt itself, in id order with
the others, within the parallelism; a retry goes to a worker; a cancel or Ctrl-C stops the run
after the step."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import pytest

from reconciler.catalogue import Code
from reconciler.engine import Executor, RunStatus, StepContext, StepStatus
from reconciler.providers.base import DriverError
from tests.unit.engine.support import Calls, FakeSleep, RecordingCheckpointer, step


def test_inline_steps_run_on_the_calling_thread_and_start_no_worker(
    recorder: RecordingCheckpointer, run_id: str
) -> None:
    seen: list[tuple[int, int]] = []  # (thread, threads alive) while each step runs

    def where(context: StepContext) -> Mapping[str, Any]:
        seen.append((threading.get_ident(), threading.active_count()))
        return {"step": context.step_id}

    before = threading.active_count()
    steps = [step("a", where, inline=True), step("b", where, "a", inline=True)]
    steps.append(step("c", where, inline=True))
    result = Executor(recorder, parallelism=4).run(run_id, steps)

    assert result.status is RunStatus.SUCCEEDED
    assert seen == [(threading.get_ident(), before)] * 3
    stored = recorder.store_steps(run_id)
    assert {sid: r.status for sid, r in stored.items()} == dict.fromkeys("abc", "Succeeded")
    assert dict(stored["b"].outputs) == {"step": "b"}


def test_inline_and_worker_steps_start_in_id_order(
    recorder: RecordingCheckpointer, run_id: str, calls: Calls
) -> None:
    steps = [
        step("d", calls.ok(), inline=True),
        step("b", calls.ok()),
        step("a", calls.ok(), inline=True),
        step("c", calls.ok(), "a"),
    ]
    result = Executor(recorder, parallelism=1).run(run_id, steps)
    assert result.status is RunStatus.SUCCEEDED
    assert calls.order == ["a", "b", "c", "d"]


@pytest.mark.parametrize(("parallelism", "wait", "saw_b"), [(2, 10.0, True), (1, 0.25, False)])
def test_an_inline_step_runs_beside_a_worker_step_within_the_parallelism(
    recorder: RecordingCheckpointer, run_id: str, parallelism: int, wait: float, saw_b: bool
) -> None:
    """``a`` runs on a worker and waits for ``b`` (inline) to start: with a parallelism of 2,
    ``b`` runs beside it; with 1, ``b`` must not start until ``a`` ends, and ``a`` gives up
    waiting after a quarter of a second."""
    b_ran = threading.Event()

    def wait_for_b(context: StepContext) -> Mapping[str, Any]:
        return {"saw_b": b_ran.wait(wait)}

    def mark(context: StepContext) -> Mapping[str, Any]:
        b_ran.set()
        return {}

    steps = [step("a", wait_for_b), step("b", mark, inline=True)]
    result = Executor(recorder, parallelism=parallelism).run(run_id, steps)
    assert result.status is RunStatus.SUCCEEDED
    assert dict(result.steps["a"].outputs) == {"saw_b": saw_b}
    assert b_ran.is_set()


def test_a_failed_inline_attempt_is_retried_on_a_worker(
    recorder: RecordingCheckpointer, run_id: str, fake_sleep: FakeSleep
) -> None:
    threads: list[int] = []

    def flaky(context: StepContext) -> Mapping[str, Any]:
        threads.append(threading.get_ident())
        if context.attempt == 1:
            raise DriverError(Code.STEP_FAILED, "the store was busy", retryable=True)
        return {"attempt": context.attempt}

    executor = Executor(recorder, parallelism=2, sleep=fake_sleep, uniform=lambda: 0.5)
    result = executor.run(run_id, [step("a", flaky, inline=True)])

    assert result.status is RunStatus.SUCCEEDED
    assert result.steps["a"].attempts == 2
    assert threads[0] == threading.get_ident()
    assert threads[1] != threading.get_ident()
    assert len(fake_sleep.waits) == 1
    assert [w for w in recorder.writes if w[0] == "a"][-3:] == [
        ("a", "Running", 1),  # the wait, with why: "attempt 1 failed ...; retrying in 1.0 s"
        ("a", "Running", 2),
        ("a", "Succeeded", 2),
    ]
    log = recorder.store_steps(run_id)["a"].log
    assert "attempt 1 failed: RCN-3001 the store was busy; retrying in" in log


def test_a_cancel_during_an_inline_step_stops_the_run_after_it(
    recorder: RecordingCheckpointer, run_id: str, calls: Calls
) -> None:
    executor = Executor(recorder, parallelism=4)

    def cancel(context: StepContext) -> Mapping[str, Any]:
        executor.cancel()  # what the SIGTERM handler does, on this same thread
        return {"cancelled": context.cancelled.is_set()}

    steps = [step("a", cancel, inline=True), step("b", calls.ok(), inline=True)]
    result = executor.run(run_id, steps)

    assert result.status is RunStatus.INTERRUPTED
    assert result.steps["a"].status is StepStatus.SUCCEEDED
    assert dict(result.steps["a"].outputs) == {"cancelled": False}
    assert result.steps["b"].status is StepStatus.SKIPPED
    assert result.steps["b"].error_code is Code.RUN_INTERRUPTED
    assert calls.order == []
    assert recorder.store_steps(run_id)["b"].status == "Skipped"


def test_ctrl_c_in_an_inline_step_reaches_the_caller(
    recorder: RecordingCheckpointer, run_id: str, calls: Calls
) -> None:
    """Not a failed step: the run stops, and the caller sees the KeyboardInterrupt."""
    steps = [step("a", calls.fail(KeyboardInterrupt()), inline=True)]
    steps.append(step("b", calls.ok(), inline=True))
    with pytest.raises(KeyboardInterrupt):
        Executor(recorder, parallelism=4).run(run_id, steps)
    assert calls.order == ["a"]
    assert "Succeeded" not in recorder.statuses("a")
