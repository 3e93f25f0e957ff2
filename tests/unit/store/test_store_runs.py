"""Runs, their checkpointed steps and the hash-chained audit log, on both databases."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import text

from reconciler.store import RunRecord, Store

if TYPE_CHECKING:
    from tests.unit.store.conftest import Builders, TickingClock


def test_run_lifecycle(store: Store, clock: TickingClock) -> None:
    run = store.create_run(
        "prod", "c" * 40, trigger="push", plan={"b": 1, "a": [1, 2]}, trace_id="t1"
    )
    started = clock.current
    assert store.get_run(run.id) == RunRecord(
        run.id, "prod", "c" * 40, "Pending", "push", started, {"a": [1, 2], "b": 1}, "t1"
    )
    running = store.update_run(run.id, status="Running")
    assert (running.status, running.finished_at, running.plan) == ("Running", None, run.plan)
    failed = store.update_run(
        run.id, status="Failed", error_code="RCN-3001", message="boom", finished=True
    )
    assert failed == replace(
        run, status="Failed", error_code="RCN-3001", message="boom", finished_at=clock.current
    )
    assert store.get_run(run.id) == failed
    assert store.get_run("no-such-run") is None
    with pytest.raises(KeyError):
        store.update_run("no-such-run", status="Running")


def test_list_runs_newest_first_filtered_and_limited(store: Store) -> None:
    made = [store.create_run(env, "c" * 40, trigger="poll") for env in ["prod", "dev", "prod"]]
    assert [r.id for r in store.list_runs()] == [made[2].id, made[1].id, made[0].id]
    assert [r.id for r in store.list_runs("prod")] == [made[2].id, made[0].id]
    assert [r.id for r in store.list_runs(limit=1)] == [made[2].id]


def test_commits_runs_apply_stay_unsettled_until_a_settle_after_them(store: Store) -> None:
    """A run that starts applying (created Running, or moved to Running) makes its commit
    unsettled, once; settling a commit settles them all but those of runs still open."""
    a, b, c, d = ("a" * 40, "b" * 40, "c" * 40, "d" * 40)
    store.set_last_commit("prod", a)
    own = store.create_run("prod", a, trigger="push", status="Running")  # the last commit
    store.update_run(own.id, status="Succeeded", finished=True)
    waiting = store.create_run("prod", b, trigger="push")  # Pending: applies nothing yet
    assert store.plan_inputs("prod").unsettled == frozenset()
    store.update_run(waiting.id, status="Running")
    store.create_run("prod", b, trigger="push", status="Running")  # noted once
    killed = store.create_run("prod", c, trigger="push", status="Running")
    store.create_run("dev", d, trigger="push", status="Running")
    assert store.plan_inputs("prod").unsettled == {b, c}
    store.update_run(waiting.id, status="Succeeded", finished=True)
    store.set_last_commit("prod", d)  # c's run is still open: a replica may still record
    assert store.plan_inputs("prod").unsettled == {b, c}
    for run in store.list_runs("prod"):
        if run.status in ("Pending", "Running") and run.id != killed.id:
            store.update_run(run.id, status="Failed", finished=True)
    store.set_last_commit("prod", d)
    assert store.plan_inputs("prod").unsettled == {c}
    store.update_run(killed.id, status="Failed", finished=True)
    store.set_last_commit("prod", d)
    assert store.plan_inputs("prod").unsettled == frozenset()
    assert store.plan_inputs("dev").unsettled == {d}


def test_steps_checkpoint_and_round_trip(store: Store, build: Builders) -> None:
    _, _, step = build
    run = store.create_run("prod", "c" * 40, trigger="push")
    store.save_step(run.id, step("020-b", status="Running", finished_at=None))
    store.save_step(run.id, step("010-a", depends_on=[]))
    store.save_step(run.id, step("020-b", attempt=3))  # the after-checkpoint replaces
    assert store.steps(run.id) == [step("010-a", depends_on=()), step("020-b", attempt=3)]
    assert store.steps("other-run") == []


def test_step_targets_are_those_of_one_kind_action_and_status_in_one_run(
    store: Store, build: Builders
) -> None:
    _, _, step = build
    run = store.create_run("prod", "c" * 40, trigger="push")
    other = store.create_run("prod", "d" * 40, trigger="push")
    removed = {"kind": "workload", "action": "delete", "status": "Succeeded"}
    store.save_steps(
        run.id,
        [
            step("workload:web", target="web", **removed),
            step("workload:api", target="api", **removed),
            step("workload:db", target="db", **(removed | {"status": "Failed"})),
            step("workload:ui", target="ui", **(removed | {"action": "apply"})),
            step("resource:x", target="x", **(removed | {"kind": "resource"})),
        ],
    )
    store.save_step(other.id, step("workload:old", target="old", **removed))
    assert store.step_targets(run.id, **removed) == ["api", "web"]
    assert store.step_targets(other.id, **removed) == ["old"]
    assert store.step_targets("no-such-run", **removed) == []


def test_audit_chain_verifies(store: Store, clock: TickingClock) -> None:
    assert store.verify_audit() is None
    first = store.audit(actor="daemon", action="apply", subject="web", environment="prod")
    second = store.audit(actor="alice", action="approve", subject="run/1", detail={"ü": [1.5]})
    assert (first.id, second.id) == (1, 2)
    assert second.prev_hash == first.hash != second.hash
    assert second.at == clock.current
    assert store.audit_log() == [second, first]
    assert store.audit_log("prod") == [first]
    assert store.audit_log(limit=1) == [second]
    assert store.verify_audit() is None


@pytest.mark.parametrize(
    ("tamper", "broken"),
    [
        ("UPDATE audit SET actor = 'mallory' WHERE id = 2", 2),
        ("UPDATE audit SET detail = '{\"n\": 2}' WHERE id = 2", 2),
        ("UPDATE audit SET subject = 'db' WHERE id = 4", 4),
        ("DELETE FROM audit WHERE id = 2", 3),
        ("UPDATE audit SET id = 20 WHERE id = 3", 4),
    ],
)
def test_tampered_audit_row_is_found(store: Store, tamper: str, broken: int) -> None:
    for n in range(4):
        store.audit(actor="daemon", action="apply", subject="web", detail={"n": n})
    assert store.verify_audit() is None
    with store.engine.begin() as conn:
        conn.execute(text(tamper))
    assert store.verify_audit() == broken


def test_update_run_leaves_the_plan_out_when_asked(store: Store) -> None:
    """A caller holding the plan already need not have it decoded again (a first apply of
    1,000 workloads updates its run twice, each decoding its whole plan)."""
    run = store.create_run("prod", "c" * 40, trigger="push", plan={"actions": [1, 2]})
    running = store.update_run(run.id, status="Running", with_plan=False)
    assert running == replace(run, status="Running", plan=None)
    assert store.get_run(run.id) == replace(run, status="Running")  # the plan is still there
