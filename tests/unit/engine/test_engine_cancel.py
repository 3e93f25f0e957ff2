"""Cancel: no new step starts, running steps see their event, the run ends Interrupted with
RUN_INTERRUPTED on what did not finish, and everything is checkpointed."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from reconciler.catalogue import Code
from reconciler.engine import Executor, RunStatus, StepContext, StepStatus
from tests.unit.engine.support import DEADLINE, Calls, RecordingCheckpointer, step


def cancel_when(executor: Executor, *events: threading.Event) -> threading.Thread:
    """Cancel from another thread, as a signal handler would, once every event is set."""

    def wait_then_cancel() -> None:
        if all(event.wait(DEADLINE) for event in events):
            executor.cancel()

    thread = threading.Thread(target=wait_then_cancel)
    thread.start()
    return thread


def test_cancel_stops_starting_signals_running_steps_and_checkpoints(
    recorder: RecordingCheckpointer, run_id: str, calls: Calls
) -> None:
    started = {name: threading.Event() for name in ("a", "b")}

    def stops_with_error(context: StepContext) -> Mapping[str, Any]:
        started["a"].set()
        context.cancelled.wait(DEADLINE)
        context.raise_if_cancelled()
        return {}

    def finishes_anyway(context: StepContext) -> Mapping[str, Any]:
        started["b"].set()
        return {"cancelled_seen": context.cancelled.wait(DEADLINE)}

    executor = Executor(recorder, parallelism=2)
    steps = [
        step("a", stops_with_error),
        step("b", finishes_anyway),
        step("c", calls.ok(), "a"),
        step("d", calls.ok()),
    ]
    canceller = cancel_when(executor, *started.values())
    result = executor.run(run_id, steps)
    canceller.join(DEADLINE)

    assert result.status is RunStatus.INTERRUPTED
    assert calls.order == []
    a, b, c, d = (result.steps[name] for name in "abcd")
    assert (a.status, a.error_code) == (StepStatus.FAILED, Code.RUN_INTERRUPTED)
    assert a.message == "interrupted: the attempt ended with RCN-3001 StepCancelled: a: cancelled"
    assert (b.status, dict(b.outputs)) == (StepStatus.SUCCEEDED, {"cancelled_seen": True})
    for skipped in (c, d):
        assert (skipped.status, skipped.error_code) == (StepStatus.SKIPPED, Code.RUN_INTERRUPTED)
    stored = recorder.store_steps(run_id)
    assert {sid: (r.status, r.error_code) for sid, r in stored.items()} == {
        "a": ("Failed", "RCN-3005"),
        "b": ("Succeeded", None),
        "c": ("Skipped", "RCN-3005"),
        "d": ("Skipped", "RCN-3005"),
    }


def test_a_step_that_ignores_cancel_is_given_up_after_the_grace_period(
    recorder: RecordingCheckpointer, run_id: str
) -> None:
    started, release = threading.Event(), threading.Event()

    def stubborn(context: StepContext) -> Mapping[str, Any]:
        started.set()
        release.wait(DEADLINE)
        return {"late": True}

    executor = Executor(recorder, grace_period=0.05)
    cancel_when(executor, started)
    try:
        result = executor.run(run_id, [step("a", stubborn)])
    finally:
        release.set()
    assert result.status is RunStatus.INTERRUPTED
    assert result.steps["a"].message == "interrupted: did not stop within 0.05 s"
    for thread in threading.enumerate():
        if thread.name.startswith("engine-"):
            thread.join(DEADLINE)  # the step returned; its worker must have written nothing
    assert recorder.statuses("a") == ["Running", "Failed"]  # started with the first write
    assert recorder.store_steps(run_id)["a"].error_code == "RCN-3005"


def test_an_executor_cancelled_before_the_run_starts_nothing(
    recorder: RecordingCheckpointer, run_id: str, calls: Calls
) -> None:
    executor = Executor(recorder)
    executor.cancel()
    result = executor.run(run_id, [step("a", calls.ok()), step("b", calls.ok(), "a")])
    assert result.status is RunStatus.INTERRUPTED
    assert calls.order == []
    assert result.with_status(StepStatus.SKIPPED) == ["a", "b"]
