"""The work queue: deduplication, one worker per key, backoff on a fake clock, fairness."""

from __future__ import annotations

import threading

import pytest

from reconciler.daemon.queue import SKIP_POLL, WorkQueue
from reconciler.engine.steps import RetryPolicy
from tests.unit.daemon.support import DEADLINE, FakeClock

Key = tuple[str, str]
A, B, C = ("prod", "a"), ("prod", "b"), ("prod", "c")
NO_JITTER = RetryPolicy(initial_backoff=1.0, max_backoff=8.0, multiplier=2.0, jitter=0.1)


def new_queue(clock: FakeClock, backoff: RetryPolicy = NO_JITTER) -> WorkQueue[Key]:
    return WorkQueue(clock=clock, backoff=backoff, uniform=lambda: 0.5)  # 0.5: no spread


def drain(queue: WorkQueue[Key]) -> list[Key]:
    """Take every ready key, finishing each successfully, in the order they come out."""
    taken = []
    while (key := queue.get(timeout=0)) is not None:
        taken.append(key)
        queue.done(key, ok=True)
    return taken


def test_adding_a_waiting_key_again_does_nothing() -> None:
    queue = new_queue(FakeClock())
    for key in (A, B, A, A):
        queue.add(key)
    assert queue.depth() == 2
    assert drain(queue) == [A, B]


def test_a_key_added_while_processed_runs_once_more_after_and_not_before() -> None:
    queue = new_queue(FakeClock())
    queue.add(A)
    assert queue.get(timeout=0) == A
    queue.add(A)
    queue.add(A)
    assert queue.get(timeout=0) is None  # one worker per key
    assert queue.depth() == 0
    queue.done(A, ok=True)
    assert drain(queue) == [A]


def test_backoff_doubles_after_each_failure_up_to_the_cap_and_success_resets() -> None:
    clock = FakeClock()
    queue = new_queue(clock)
    queue.add(A)
    waits = []
    for _ in range(5):
        key = queue.get(timeout=0)
        assert key == A
        delay = queue.done(A, ok=False)
        assert delay is not None
        waits.append(delay)
        clock.advance(delay - 0.001)
        assert queue.get(timeout=0) is None
        clock.advance(0.001)
    assert waits == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert queue.failures(A) == 5
    assert queue.get(timeout=0) == A
    assert queue.done(A, ok=True) is None
    assert queue.failures(A) == 0
    queue.add(A)
    assert queue.get(timeout=0) == A
    assert queue.done(A, ok=False) == 1.0


def test_an_add_during_backoff_runs_now_but_keeps_the_failure_count() -> None:
    queue = new_queue(FakeClock())
    queue.add(A)
    assert queue.get(timeout=0) == A
    queue.done(A, ok=False)
    assert queue.get(timeout=0) is None
    queue.add(A)  # a push may be the fix
    assert queue.get(timeout=0) == A
    assert queue.done(A, ok=False) == 2.0


def test_add_after_waits_and_an_earlier_request_wins() -> None:
    clock = FakeClock()
    queue = new_queue(clock)
    queue.add_after(A, 10.0)
    queue.add_after(A, 5.0)
    queue.add_after(A, 20.0)
    clock.advance(4.9)
    assert queue.get(timeout=0) is None
    clock.advance(0.1)
    assert queue.get(timeout=0) == A


def test_a_failing_key_goes_to_the_back_and_does_not_starve_others() -> None:
    queue = new_queue(FakeClock(), RetryPolicy(initial_backoff=0.0, jitter=0.0))
    for start in (A, B, C):
        queue.add(start)
    order = []
    for _ in range(5):
        key = queue.get(timeout=0)
        assert key is not None
        order.append(key)
        queue.done(key, ok=key != A)
        if key != A:
            queue.add(key)  # B and C stay busy too: level-triggered resyncs
    assert order == [A, B, C, A, B]


def test_keys_that_became_ready_earlier_come_out_first() -> None:
    clock = FakeClock()
    queue = new_queue(clock)
    queue.add_after(B, 2.0)
    queue.add_after(A, 1.0)
    clock.advance(3.0)
    queue.add(C)
    assert drain(queue) == [A, B, C]


def test_done_for_a_key_not_being_processed_is_an_error() -> None:
    queue = new_queue(FakeClock())
    queue.add(A)
    with pytest.raises(ValueError, match="not being processed"):
        queue.done(A, ok=True)


def test_depth_counts_waiting_and_backing_off_keys_but_not_those_in_work() -> None:
    queue = new_queue(FakeClock())
    queue.add(A)
    queue.add(B)
    assert queue.get(timeout=0) == A
    assert queue.depth() == 1
    queue.done(A, ok=False)
    assert queue.depth() == 2


def take_in_thread(
    queue: WorkQueue[Key], timeout: float | None
) -> tuple[threading.Thread, list[Key | None]]:
    got: list[Key | None] = []
    thread = threading.Thread(target=lambda: got.append(queue.get(timeout=timeout)), daemon=True)
    thread.start()
    return thread, got


def test_a_blocked_get_wakes_when_a_key_is_added() -> None:
    clock = FakeClock()
    queue = new_queue(clock)
    thread, got = take_in_thread(queue, None)
    assert clock.waiting.wait(DEADLINE)
    queue.add(A)
    thread.join(DEADLINE)
    assert got == [A]


def test_a_blocked_get_wakes_when_the_clock_reaches_a_retry() -> None:
    clock = FakeClock()
    queue = new_queue(clock)
    queue.add(A)
    assert queue.get(timeout=0) == A
    queue.done(A, ok=False)
    thread, got = take_in_thread(queue, 60.0)
    assert clock.waiting.wait(DEADLINE)
    clock.waiting.clear()
    clock.advance(0.5)
    assert clock.waiting.wait(DEADLINE)  # still waiting: the retry is due at 1.0
    assert got == []
    clock.advance(0.5)
    thread.join(DEADLINE)
    assert got == [A]


def test_get_times_out_on_the_injected_clock() -> None:
    clock = FakeClock()
    queue = new_queue(clock)
    thread, got = take_in_thread(queue, 5.0)
    assert clock.waiting.wait(DEADLINE)
    clock.advance(5.0)
    thread.join(DEADLINE)
    assert got == [None]


def test_a_second_worker_waits_for_the_key_the_first_holds() -> None:
    clock = FakeClock()
    queue = new_queue(clock)
    queue.add(A)
    assert queue.get(timeout=0) == A
    queue.add(A)
    thread, got = take_in_thread(queue, None)
    assert clock.waiting.wait(DEADLINE)
    assert got == []
    queue.done(A, ok=True)
    thread.join(DEADLINE)
    assert got == [A]


def test_shutdown_wakes_waiters_and_ignores_later_adds() -> None:
    clock = FakeClock()
    queue = new_queue(clock)
    thread, got = take_in_thread(queue, None)
    assert clock.waiting.wait(DEADLINE)
    queue.shutdown()
    thread.join(DEADLINE)
    assert got == [None]
    queue.add(A)
    assert queue.get(timeout=0) is None
    assert queue.depth() == 0


def test_take_ready_brings_along_matching_ready_keys_and_leaves_the_rest_in_place() -> None:
    clock = FakeClock()
    queue = new_queue(clock)
    other = ("dev", "a")
    for key in (A, other, B):
        queue.add(key)
    queue.add_after(C, 5.0)  # not ready yet: stays behind
    first = queue.get(timeout=0)
    assert first == A
    assert queue.take_ready(lambda k: k[0] == "prod", limit=10) == [B]
    assert queue.depth() == 2  # ``other`` and ``C`` still wait
    for key in (A, B):
        queue.done(key, ok=True)
    assert drain(queue) == [other]
    clock.advance(5.0)
    assert drain(queue) == [C]


def test_take_ready_stops_at_its_limit_and_taken_keys_are_processing() -> None:
    queue = new_queue(FakeClock())
    for key in (A, B, C):
        queue.add(key)
    assert queue.take_ready(lambda k: True, limit=2) == [A, B]
    queue.add(A)  # added while processing: runs once more after done
    assert drain(queue) == [C]
    queue.done(A, ok=True)
    queue.done(B, ok=True)
    assert drain(queue) == [A]


def by_environment(clock: FakeClock) -> WorkQueue[Key]:
    return WorkQueue(clock=clock, backoff=NO_JITTER, uniform=lambda: 0.5, group=lambda k: k[0])


def test_get_passes_over_skipped_keys_which_keep_their_place() -> None:
    queue = by_environment(FakeClock())
    other = ("staging", "a")
    for key in (A, B, other):
        queue.add(key)
    busy = {"prod"}
    assert queue.get(timeout=0, skip=lambda key: key[0] in busy) == other
    assert queue.get(timeout=0, skip=lambda key: key[0] in busy) is None
    assert queue.depth() == 2
    busy.clear()
    assert [queue.get(timeout=0, skip=lambda key: key[0] in busy) for _ in range(2)] == [A, B]


def test_a_get_that_skipped_ready_keys_looks_again_after_the_poll() -> None:
    clock = FakeClock()
    queue = by_environment(clock)
    queue.add(A)
    busy = {"prod"}
    got: list[Key | None] = []
    thread = threading.Thread(
        target=lambda: got.append(queue.get(skip=lambda key: key[0] in busy)), daemon=True
    )
    thread.start()
    assert clock.waiting.wait(DEADLINE)
    busy.clear()
    clock.advance(SKIP_POLL)
    thread.join(DEADLINE)
    assert got == [A]


def test_a_skipped_group_is_asked_about_once_however_many_keys_it_has() -> None:
    """A worker waiting while another applies an environment's thousands of keys looks at the
    queue every ``SKIP_POLL``: each look must cost the groups, not the keys."""
    queue = by_environment(FakeClock())
    for i in range(1000):
        queue.add(("prod", f"w{i:04d}"))
    queue.add(("staging", "a"))
    asked: list[Key] = []

    def busy_prod(key: Key) -> bool:
        asked.append(key)
        return key[0] == "prod"

    assert queue.get(timeout=0, skip=busy_prod) == ("staging", "a")
    assert sorted(asked) == [("prod", "w0000"), ("staging", "a")]
    assert queue.get(timeout=0, skip=busy_prod) is None
    assert len(asked) == 3  # prod's first key again, and nothing else
    assert queue.take_ready(lambda k: True, limit=3, group="prod") == [
        ("prod", "w0000"),
        ("prod", "w0001"),
        ("prod", "w0002"),
    ]
    assert queue.take_ready(lambda k: True, limit=3, group="dev") == []
    assert queue.depth() == 997


def test_groups_come_out_in_the_order_their_keys_became_ready() -> None:
    clock = FakeClock()
    queue = by_environment(clock)
    queue.add_after(("prod", "late"), 2.0)
    queue.add(("staging", "a"))
    queue.add(("prod", "a"))
    queue.add(("staging", "b"))
    clock.advance(2.0)
    assert drain(queue) == [("staging", "a"), ("prod", "a"), ("staging", "b"), ("prod", "late")]


@pytest.mark.parametrize("added", [("prod", "b"), ("staging", "a")])
def test_a_waiting_get_wakes_for_a_key_due_before_the_one_it_waits_for(added: Key) -> None:
    """Adds notify waiters only when the key comes first in its group; a key added behind a
    later one of its group, or to another group, is still handed out at once."""
    clock = FakeClock()
    queue = by_environment(clock)
    queue.add_after(A, 60.0)
    thread, got = take_in_thread(queue, None)
    assert clock.waiting.wait(DEADLINE)
    queue.add(added)
    thread.join(DEADLINE / 2)  # before the fake clock's own safety net wakes the waiter
    assert got == [added]
