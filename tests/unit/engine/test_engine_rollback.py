"""Rollback: when a run fails, compensate what it completed, newest first, despite errors."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from reconciler.catalogue import Code
from reconciler.engine import Executor, RunStatus, StepContext, StepStatus
from reconciler.store import StepRecord
from tests.unit.engine.support import Calls, RecordingCheckpointer, step


class Undo:
    def __init__(self) -> None:
        self.order: list[str] = []

    def ok(self) -> Callable[[StepContext], None]:
        def compensate(context: StepContext) -> None:
            self.order.append(context.step_id)
            context.log(f"deleted {context.outputs[context.step_id]['done']}")

        return compensate

    def fail(self) -> Callable[[StepContext], None]:
        def compensate(context: StepContext) -> None:
            self.order.append(context.step_id)
            raise RuntimeError("cannot delete")

        return compensate


def test_compensations_run_in_reverse_completion_order_and_errors_are_recorded(
    recorder: RecordingCheckpointer, run_id: str, calls: Calls
) -> None:
    undo = Undo()
    steps = [
        step("a", calls.ok(), compensate=undo.ok()),
        step("b", calls.ok(), "a", compensate=undo.fail()),
        step("c", calls.fail(RuntimeError("boom")), "b", compensate=undo.ok()),
        step("d", calls.ok(), compensate=undo.ok()),
        step("e", calls.ok(), "a"),  # nothing to undo
    ]
    result = Executor(recorder, parallelism=1).run(run_id, steps, rollback=True)
    assert calls.order == ["a", "b", "c", "d", "e"]
    assert undo.order == ["d", "b", "a"]
    assert result.status is RunStatus.FAILED
    assert result.rolled_back
    assert result.with_status(StepStatus.ROLLED_BACK) == ["a", "d"]
    b = result.steps["b"]
    assert (b.status, b.error_code) == (StepStatus.SUCCEEDED, Code.ROLLBACK_FAILED)
    assert b.message == "compensation failed: RuntimeError: cannot delete"
    assert result.steps["e"].status is StepStatus.SUCCEEDED
    stored = recorder.store_steps(run_id)
    assert stored["a"].status == "RolledBack"
    assert stored["a"].log == "deleted a\ncompensated\n"
    assert (stored["b"].status, stored["b"].error_code) == ("Succeeded", "RCN-3014")


@pytest.mark.parametrize("fails", [True, False])
def test_no_rollback_unless_asked_and_failed(
    recorder: RecordingCheckpointer, run_id: str, calls: Calls, fails: bool
) -> None:
    undo = Undo()
    last = calls.fail(RuntimeError("x")) if fails else calls.ok()
    steps = [step("a", calls.ok(), compensate=undo.ok()), step("b", last, "a")]
    result = Executor(recorder).run(run_id, steps, rollback=not fails)
    assert not result.rolled_back
    assert undo.order == []


def test_rollback_of_a_resumed_run_undoes_the_steps_of_the_crashed_process_too(
    recorder: RecordingCheckpointer, run_id: str, calls: Calls
) -> None:
    recorder.save(
        run_id,
        StepRecord("a", "", "", "", "Succeeded", attempt=1, outputs={"done": "a"}),
    )
    undo = Undo()
    steps = [
        step("a", calls.ok(), compensate=undo.ok()),
        step("b", calls.ok(), "a", compensate=undo.ok()),
        step("c", calls.fail(RuntimeError("boom")), "b"),
    ]
    result = Executor(recorder).run(run_id, steps, rollback=True)
    assert calls.order == ["b", "c"]
    assert undo.order == ["b", "a"]
    assert result.with_status(StepStatus.ROLLED_BACK) == ["a", "b"]
