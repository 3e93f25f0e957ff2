"""One step's attempts: retries with backoff for retryable failures and timeouts, none for the
rest, RETRIES_EXHAUSTED at the end; backoff values; waits that a cancel interrupts."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from reconciler.catalogue import Code
from reconciler.engine import (
    Executor,
    RetryPolicy,
    RunStatus,
    StepContext,
    StepStatus,
    backoff_delay,
)
from reconciler.engine.attempts import _checked_outputs
from reconciler.engine.backoff import event_sleep
from reconciler.providers.base import DriverError
from tests.unit.engine.support import DEADLINE, FakeSleep, RecordingCheckpointer, step


def flaky(failures: list[BaseException]) -> Callable[[StepContext], Mapping[str, Any]]:
    """Raise the given errors on the first attempts, then succeed with the attempt number."""

    def run(context: StepContext) -> Mapping[str, Any]:
        if context.attempt <= len(failures):
            raise failures[context.attempt - 1]
        return {"attempt": context.attempt}

    return run


def busy(code: Code = Code.KUBERNETES_API_FAILED) -> DriverError:
    return DriverError(code, "server busy", retryable=True)


def test_retryable_driver_errors_are_retried_with_backoff(
    executor: Executor, run_id: str, fake_sleep: FakeSleep, recorder: RecordingCheckpointer
) -> None:
    result = executor.run(run_id, [step("a", flaky([busy(), busy()]))])
    outcome = result.steps["a"]
    assert (outcome.status, outcome.attempts, dict(outcome.outputs)) == (
        StepStatus.SUCCEEDED,
        3,
        {"attempt": 3},
    )
    assert fake_sleep.waits == [1.0, 2.0]  # uniform() == 0.5: no jitter offset
    # Started at once: its first state is Running, in the run's first transaction.
    assert recorder.statuses("a") == [*["Running"] * 5, "Succeeded"]
    record = recorder.store_steps(run_id)["a"]
    assert "attempt 1 failed: RCN-3013 server busy; retrying in 1.0 s" in record.log


@pytest.mark.parametrize(
    "error",
    [
        DriverError(Code.POSTGRES_DRIVER_FAILED, "permission denied", retryable=False),
        KeyError("oops"),
    ],
)
def test_other_failures_are_not_retried(
    executor: Executor, run_id: str, fake_sleep: FakeSleep, error: BaseException
) -> None:
    outcome = executor.run(run_id, [step("a", flaky([error]))]).steps["a"]
    assert outcome.attempts == 1
    assert fake_sleep.waits == []
    if isinstance(error, DriverError):
        assert (outcome.error_code, outcome.message) == (error.code, "permission denied")
    else:
        assert (outcome.error_code, outcome.message) == (Code.STEP_FAILED, "KeyError: 'oops'")


def test_retries_run_out(executor: Executor, run_id: str, fake_sleep: FakeSleep) -> None:
    policy = RetryPolicy(max_attempts=3, initial_backoff=1.0, multiplier=3.0)
    result = executor.run(run_id, [step("a", flaky([busy()] * 5), retry=policy)])
    outcome = result.steps["a"]
    assert result.status is RunStatus.FAILED
    assert (outcome.status, outcome.attempts, outcome.error_code) == (
        StepStatus.FAILED,
        3,
        Code.RETRIES_EXHAUSTED,
    )
    assert outcome.message == "3 attempts failed; last: RCN-3013 server busy"
    assert fake_sleep.waits == [1.0, 3.0]


def test_a_single_attempt_keeps_its_own_code(executor: Executor, run_id: str) -> None:
    policy = RetryPolicy(max_attempts=1)
    outcome = executor.run(run_id, [step("a", flaky([busy()]), retry=policy)]).steps["a"]
    assert outcome.error_code is Code.KUBERNETES_API_FAILED


def test_a_timed_out_attempt_is_cancelled_abandoned_and_retried(
    executor: Executor, run_id: str, fake_sleep: FakeSleep, recorder: RecordingCheckpointer
) -> None:
    first_cancelled = threading.Event()

    def slow_first(context: StepContext) -> Mapping[str, Any]:
        if context.attempt == 1:
            # Blocks until the engine gives up on it; the event is how it learns.
            if context.cancelled.wait(DEADLINE):
                first_cancelled.set()
            context.log("late line from the abandoned attempt")
            return {"attempt": 1}
        return {"attempt": context.attempt}

    result = executor.run(run_id, [step("a", slow_first, timeout=0.05)])
    outcome = result.steps["a"]
    assert (outcome.status, outcome.attempts, dict(outcome.outputs)) == (
        StepStatus.SUCCEEDED,
        2,
        {"attempt": 2},
    )
    assert first_cancelled.wait(DEADLINE)
    assert len(fake_sleep.waits) == 1
    log = recorder.store_steps(run_id)["a"].log
    assert "RCN-3002 attempt timed out after 0.05 s" in log
    assert "late line" not in log


def test_timeouts_on_every_attempt_end_in_retries_exhausted(
    executor: Executor, run_id: str
) -> None:
    release = threading.Event()
    policy = RetryPolicy(max_attempts=2)
    try:
        outcome = executor.run(
            run_id,
            [step("a", lambda c: {"ok": release.wait(DEADLINE)}, timeout=0.02, retry=policy)],
        ).steps["a"]
    finally:
        release.set()
    assert outcome.error_code is Code.RETRIES_EXHAUSTED
    assert "RCN-3002 attempt timed out after 0.02 s" in outcome.message


def test_a_backoff_wait_ends_when_the_run_is_cancelled(
    recorder: RecordingCheckpointer, run_id: str
) -> None:
    waiting = threading.Event()

    def sleep(seconds: float, interrupt: threading.Event) -> bool:
        waiting.set()
        return event_sleep(seconds, interrupt)  # a real wait of 1000 s unless interrupted

    executor = Executor(recorder, sleep=sleep)
    policy = RetryPolicy(initial_backoff=1000.0, max_backoff=1000.0)

    def cancel_when_waiting() -> None:
        if waiting.wait(DEADLINE):
            executor.cancel()

    threading.Thread(target=cancel_when_waiting).start()
    result = executor.run(run_id, [step("a", flaky([busy()] * 5), retry=policy)])
    assert result.status is RunStatus.INTERRUPTED
    assert result.steps["a"].error_code is Code.RUN_INTERRUPTED
    assert result.steps["a"].message == "interrupted: while waiting to retry"


@pytest.mark.parametrize(
    ("failed", "uniform", "expected"),
    [
        (1, 0.5, 1.0),
        (2, 0.5, 2.0),
        (4, 0.5, 8.0),
        (1, 0.0, 0.8),  # jitter 0.2: the delay spreads over [0.8, 1.2] times
        (1, 1.0, 1.2),
        (10, 0.5, 300.0),  # capped
        (10, 1.0, 300.0),  # the jitter never passes the cap
        (5000, 0.5, 300.0),  # no overflow
    ],
)
def test_backoff_is_exponential_with_proportional_jitter_and_a_cap(
    failed: int, uniform: float, expected: float
) -> None:
    assert backoff_delay(RetryPolicy(), failed, lambda: uniform) == pytest.approx(expected)


@pytest.mark.parametrize(
    "fields",
    [{"max_attempts": 0}, {"multiplier": 0.5}, {"jitter": 1.5}, {"initial_backoff": -1.0}],
)
def test_bad_policies_are_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must"):
        RetryPolicy(**fields)


@pytest.mark.parametrize(
    "outputs",
    [
        {"x": object()},
        {"x": float("nan")},
        {"x": [1, {"y": float("inf")}]},
        {1: "a", "b": 2},
        {"x": {1, 2}},
    ],
    ids=["object", "nan", "inf", "mixed-keys", "set"],
)
def test_outputs_that_are_not_json_fail_as_json_dumps_says(outputs: dict[Any, Any]) -> None:
    with pytest.raises((TypeError, ValueError)) as expected:
        json.dumps(outputs, sort_keys=True, allow_nan=False)
    with pytest.raises(TypeError) as refused:
        _checked_outputs(outputs)
    assert str(refused.value) == f"outputs are not JSON: {expected.value}"


def test_json_outputs_are_kept_as_given() -> None:
    outputs = {"b": [1, 2.5, None, True], "a": {"é": "x"}}
    checked = _checked_outputs(outputs)
    assert checked == outputs
    assert list(checked) == ["b", "a"]
    circular: list[Any] = []
    circular.append(circular)
    with pytest.raises(TypeError, match="outputs are not JSON: Circular reference detected"):
        _checked_outputs({"x": circular})
