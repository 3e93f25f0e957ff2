"""Scheduling: dependency order, sorted starts, bounded parallelism, failed branches, outputs."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Mapping
from typing import Any

import pytest

from reconciler.catalogue import Code
from reconciler.engine import Executor, RunStatus, StepContext, StepStatus
from reconciler.engine.executor import WORKER_RAMP
from tests.unit.engine.support import DEADLINE, Calls, RecordingCheckpointer, step


def test_steps_start_in_dependency_then_id_order(
    recorder: RecordingCheckpointer, run_id: str, calls: Calls
) -> None:
    steps = [step("z", calls.ok()), step("m", calls.ok(), "a"), step("a", calls.ok())]
    result = Executor(recorder, parallelism=1).run(run_id, steps)
    assert result.status is RunStatus.SUCCEEDED
    assert calls.order == ["a", "m", "z"]
    assert list(result.steps) == ["a", "m", "z"]


def test_parallelism_runs_that_many_steps_at_once_and_no_more(
    recorder: RecordingCheckpointer, run_id: str
) -> None:
    pair = threading.Barrier(2, timeout=DEADLINE)
    lock = threading.Lock()
    active = [0, 0]  # now, most

    def meet(context: StepContext) -> Mapping[str, Any]:
        with lock:
            active[0] += 1
            active[1] = max(active)
        pair.wait()  # fails (BrokenBarrierError) unless two steps run at the same time
        with lock:
            active[0] -= 1
        return {}

    steps = [step(name, meet) for name in "abcd"]
    result = Executor(recorder, parallelism=2).run(run_id, steps)
    assert result.status is RunStatus.SUCCEEDED
    assert active[1] == 2


def test_steps_that_compute_share_one_worker(recorder: RecordingCheckpointer, run_id: str) -> None:
    """Workers are added for steps that wait, not for steps that compute: under the GIL, a
    second worker computing would only take turns with the first."""
    threads: set[int] = set()

    def compute(context: StepContext) -> Mapping[str, Any]:
        threads.add(threading.get_ident())
        until = time.thread_time() + 4 * WORKER_RAMP  # on the CPU, longer than the ramp
        while time.thread_time() < until:
            pass
        return {}

    steps = [step(f"s{i}", compute) for i in range(6)]
    result = Executor(recorder, parallelism=4).run(run_id, steps)
    assert result.status is RunStatus.SUCCEEDED
    assert len(threads) == 1


def test_a_step_that_waits_gets_workers_added_beside_it(
    recorder: RecordingCheckpointer, run_id: str
) -> None:
    """The first step waits for the last one to start: with one worker it would wait out the
    deadline; workers are added, up to the parallelism, once it has waited ``WORKER_RAMP``."""
    last_started = threading.Event()
    threads: set[int] = set()

    def wait_for_last(context: StepContext) -> Mapping[str, Any]:
        threads.add(threading.get_ident())
        return {"waited": last_started.wait(DEADLINE)}

    def quick(context: StepContext) -> Mapping[str, Any]:
        threads.add(threading.get_ident())
        if context.step_id == "d":
            last_started.set()
        return {}

    steps = [step("a", wait_for_last), *(step(name, quick) for name in "bcd")]
    result = Executor(recorder, parallelism=3).run(run_id, steps)
    assert result.status is RunStatus.SUCCEEDED
    assert dict(result.steps["a"].outputs) == {"waited": True}
    assert 2 <= len(threads) <= 3


def test_failed_step_skips_its_dependents_and_other_branches_go_on(
    executor: Executor, run_id: str, calls: Calls
) -> None:
    steps = [
        step("db", calls.fail(RuntimeError("disk full"))),
        step("app", calls.ok(), "db"),
        step("route", calls.ok(), "app"),
        step("cache", calls.ok()),
        step("worker", calls.ok(), "cache"),
    ]
    result = executor.run(run_id, steps)
    assert result.status is RunStatus.FAILED
    assert result.steps["db"].status is StepStatus.FAILED
    assert result.steps["db"].error_code is Code.STEP_FAILED
    assert result.steps["db"].message == "RuntimeError: disk full"
    for skipped in ("app", "route"):
        assert result.steps[skipped].status is StepStatus.SKIPPED
        assert result.steps[skipped].error_code is Code.DEPENDENCY_FAILED
        assert "'db'" in result.steps[skipped].message
    assert result.with_status(StepStatus.SUCCEEDED) == ["cache", "worker"]
    assert sorted(calls.order) == ["cache", "db", "worker"]


def test_outputs_of_finished_steps_are_visible_to_later_steps(
    executor: Executor, run_id: str
) -> None:
    seen: dict[str, Any] = {}

    def read(context: StepContext) -> Mapping[str, Any]:
        seen.update(host=context.outputs["db"]["host"], ids=list(context.outputs))
        with pytest.raises(TypeError):
            context.outputs["db"]["host"] = "changed"  # type: ignore[index]
        return {"url": f"postgres://{context.outputs['db']['host']}"}

    steps = [step("db", lambda _: {"host": "db.internal"}), step("app", read, "db")]
    result = executor.run(run_id, steps)
    assert seen == {"host": "db.internal", "ids": ["db"]}
    assert result.steps["app"].outputs == {"url": "postgres://db.internal"}


def test_a_step_returning_something_else_than_json_outputs_fails(
    executor: Executor, run_id: str
) -> None:
    steps = [step("list", lambda _: [1, 2]), step("obj", lambda _: {"x": object()})]
    result = executor.run(run_id, steps)
    assert (
        result.steps["list"].message == "TypeError: a step returns a mapping of outputs, not list"
    )
    assert result.steps["obj"].message.startswith("TypeError: outputs are not JSON")


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([("a", ()), ("a", ())], "duplicate step id 'a'"),
        ([("a", ("ghost", "b")), ("b", ())], "step 'a' depends on unknown steps: ghost"),
        (
            [("a", ("b",)), ("b", ("a",)), ("c", ("b",)), ("d", ())],
            "cycle (or depend on one): a, b, c",
        ),
        ([("a", ("a",))], "cycle (or depend on one): a"),
    ],
)
def test_bad_graphs_are_refused_before_anything_is_written(
    recorder: RecordingCheckpointer,
    run_id: str,
    calls: Calls,
    steps: list[tuple[str, tuple[str, ...]]],
    message: str,
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        Executor(recorder).run(run_id, [step(sid, calls.ok(), *deps) for sid, deps in steps])
    assert recorder.writes == []
    assert calls.order == []
