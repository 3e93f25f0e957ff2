"""The planner: diff of desired against recorded state, and its three renderings."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

from markdown_it import MarkdownIt

from reconciler.desired.model import DesiredResource, DesiredState, DesiredWorkload, digest
from reconciler.desired.secrets import embed, redact, secret_ref
from reconciler.plan.diff import (
    UNPUBLISHED,
    ActionMemo,
    diff,
    field_changes,
    flatten,
    redacted_leaves,
)
from reconciler.plan.model import KNOWN_AFTER_APPLY, ActionKind, Subject
from reconciler.plan.render import to_json, to_markdown, to_text


@dataclass(frozen=True)
class Res:
    uid: str
    provisioner: str
    params: dict[str, Any]
    params_hash: str = ""
    source_workload: str = "orders"


@dataclass(frozen=True)
class Wl:
    name: str
    file: str
    spec: dict[str, Any]
    spec_hash: str = ""
    sources: dict[str, str] = field(default_factory=dict)
    status: str = "Synced"


def resource(uid: str, params: dict[str, Any], depends: tuple[str, ...] = ()) -> DesiredResource:
    kind, rest = uid.split(".", 1)
    return DesiredResource(
        uid=uid,
        type=kind,
        class_="default",
        id=rest.split("#", 1)[1],
        source_workload="orders",
        consumers=("orders",),
        provisioner=f"template://builtin/{kind}",
        params=params,
        metadata={},
        depends_on=depends,
        shared=False,
        params_hash=digest(params),
    )


def workload(name: str, variables: dict[str, str], uses: tuple[str, ...] = ()) -> DesiredWorkload:
    spec = {"containers": {"main": {"image": "nginx", "variables": variables}}}
    return DesiredWorkload(
        name=name,
        file=f"apps/{name}/score.yaml",
        spec=spec,
        resources={},
        depends_on=uses,
        spec_hash=digest(spec),
        sources=(f"apps/{name}/score.yaml",),
    )


DB = "postgres.default#orders.db"
PASSWORD_REF = secret_ref("staging", DB, "password")


def state(*parts: DesiredResource | DesiredWorkload) -> DesiredState:
    return DesiredState(
        environment="staging",
        resources=tuple(p for p in parts if isinstance(p, DesiredResource)),
        workloads=tuple(p for p in parts if isinstance(p, DesiredWorkload)),
    )


def recorded_from(desired: DesiredState) -> tuple[dict[str, Res], dict[str, Wl]]:
    resources = {
        r.uid: Res(r.uid, r.provisioner, r.params, r.params_hash) for r in desired.resources
    }
    workloads = {w.name: Wl(w.name, w.file, w.spec, w.spec_hash) for w in desired.workloads}
    return resources, workloads


def test_everything_new_is_created_resources_before_workloads() -> None:
    desired = state(
        resource(DB, {"size": "small"}),
        workload("orders", {"DB": f"postgres://app:{embed(PASSWORD_REF)}@db"}, (DB,)),
    )
    plan = diff(desired, {}, {}, commit="a" * 40)
    assert [(a.action, a.kind, a.id) for a in plan.actions] == [
        (ActionKind.CREATE, Subject.RESOURCE, DB),
        (ActionKind.CREATE, Subject.WORKLOAD, "orders"),
    ]
    assert plan.actions[1].depends_on == (f"resource:{DB}",)
    assert (plan.summary.add, plan.summary.change, plan.summary.destroy) == (2, 0, 0)


def test_an_unchanged_state_plans_nothing() -> None:
    desired = state(resource(DB, {"size": "small"}), workload("orders", {"A": "1"}, (DB,)))
    plan = diff(desired, *recorded_from(desired), commit="b" * 40)
    assert {a.action for a in plan.actions} == {ActionKind.NOOP}
    assert not plan.summary.has_changes
    assert "No changes. Your infrastructure matches the configuration." in to_text(plan).plain


def test_a_recorded_workload_not_yet_published_is_updated_to_publish_it() -> None:
    """A run recorded the workload, then its process died before the publish: the spec is the
    same, but the target may not hold it, so the plan updates it (and says why) rather than
    calling the environment in sync."""
    desired = state(resource(DB, {"size": "small"}), workload("orders", {"A": "1"}, (DB,)))
    resources, workloads = recorded_from(desired)
    workloads["orders"] = replace(workloads["orders"], status=UNPUBLISHED)
    memo = ActionMemo()
    plan = diff(desired, resources, workloads, commit="b" * 40, memo=memo)
    [action] = plan.changes()
    assert (action.action, action.kind, action.id) == (
        ActionKind.UPDATE,
        Subject.WORKLOAD,
        "orders",
    )
    assert list(action.changes) == []
    assert action.detail == {"reason": "recorded, not yet published to the target"}
    assert plan.summary.change == 1
    text = to_text(plan).plain
    assert (
        "# workload orders will be updated in-place (recorded, not yet published to the target)"
        in text
    )
    assert json.loads(to_json(plan))["actions"][1]["detail"] == action.detail
    # Published since: the next plan (same memo; the store hands out a new mapping) is in sync.
    published = {**workloads, "orders": replace(workloads["orders"], status="Synced")}
    again = diff(desired, resources, published, commit="b" * 40, memo=memo)
    assert not again.summary.has_changes


def test_update_create_delete_with_field_changes() -> None:
    before = state(
        resource(DB, {"size": "small"}),
        workload("orders", {"A": "1", "B": "2"}, (DB,)),
        workload("legacy", {"X": "y"}),
    )
    after = state(
        resource(DB, {"size": "large"}),
        workload("orders", {"A": "1", "B": "3"}, (DB,)),
        workload("payments", {"P": KNOWN_AFTER_APPLY}),
    )
    plan = diff(after, *recorded_from(before), commit="c" * 40)
    acts = {(a.action, a.id) for a in plan.changes()}
    assert acts == {
        (ActionKind.UPDATE, DB),
        (ActionKind.UPDATE, "orders"),
        (ActionKind.CREATE, "payments"),
        (ActionKind.DELETE, "legacy"),
    }
    orders = next(a for a in plan.actions if a.id == "orders")
    assert [(c.path, c.old, c.new) for c in orders.changes] == [
        ("containers.main.variables.B", "2", "3")
    ]
    assert orders.unchanged == 2
    assert plan.summary.line() == "Plan: 1 to add, 2 to change, 1 to destroy."


def test_removed_resources_go_after_the_workloads_that_used_them() -> None:
    before = state(resource(DB, {"size": "small"}), workload("orders", {"A": "1"}, (DB,)))
    plan = diff(state(), *recorded_from(before), commit="d" * 40)
    steps = [a.step_id for a in plan.actions]
    assert steps == ["workload:orders", f"resource:{DB}"]
    assert plan.actions[1].depends_on == ("workload:orders",)


def test_a_changed_provisioner_forces_replacement() -> None:
    desired = state(resource(DB, {"size": "small"}))
    resources, workloads = recorded_from(desired)
    resources[DB] = Res(DB, "cmd://./old-provisioner", {"size": "small"}, digest({"size": "small"}))
    plan = diff(desired, resources, workloads, commit="e" * 40)
    (action,) = plan.changes()
    assert action.action is ActionKind.REPLACE
    assert action.changes[0].forces_replacement
    assert plan.summary.line() == "Plan: 1 to add, 0 to change, 1 to destroy."
    assert "must be replaced" in to_text(plan).plain
    assert "# forces replacement" in to_text(plan).plain


def test_renderings_never_show_a_secret_and_mark_unknowns() -> None:
    desired = state(
        resource(DB, {"size": "small"}),
        workload(
            "orders", {"DB": f"postgres://app:{embed(PASSWORD_REF)}@db", "H": KNOWN_AFTER_APPLY}
        ),
    )
    plan = diff(desired, {}, {}, commit="f" * 40)
    for text in (to_text(plan).plain, to_json(plan), to_markdown(plan)):
        assert PASSWORD_REF not in text
        assert "(sensitive value)" in text
        assert "(known after apply)" in text


def test_text_follows_terraform() -> None:
    desired = state(resource(DB, {"size": "small"}), workload("orders", {"A": "1"}, (DB,)))
    text = to_text(diff(desired, {}, {}, commit="0123456789" + "0" * 30)).plain
    assert "Environment staging at 0123456" in text
    assert "  + create" in text
    assert f"# resource {DB} will be created" in text
    assert f'+ resource "{DB}" {{' in text
    assert "Plan: 2 to add, 0 to change, 0 to destroy." in text


def test_json_has_the_documented_shape() -> None:
    desired = state(resource(DB, {"size": "small"}), workload("orders", {"A": "1"}, (DB,)))
    document = json.loads(to_json(diff(desired, {}, {}, commit="1" * 40)))
    assert set(document) >= {"environment", "commit", "actions", "summary"}
    first = document["actions"][0]
    assert set(first) >= {"action", "kind", "id", "depends_on", "changes"}
    assert document["summary"] == {"add": 2, "change": 0, "destroy": 0, "unchanged": 0}


def test_markdown_renders_with_folds_and_a_footer() -> None:
    many = {f"VAR_{i:02d}": str(i) for i in range(20)}
    desired = state(resource(DB, {"size": "small"}), workload("orders", many, (DB,)))
    text = to_markdown(diff(desired, {}, {}, commit="2" * 40))
    tokens = MarkdownIt().enable("table").parse(text)
    headings = [t for t in tokens if t.type == "heading_open"]
    assert [h.tag for h in headings] == ["h2", "h3"]
    fences = [t for t in tokens if t.type == "fence"]
    assert len(fences) == 1
    assert fences[0].info == "diff"
    assert "+ workload" in fences[0].content
    assert "<details><summary>Show plan</summary>" in text
    assert text.rstrip().endswith("1 workload, 1 with changes, 0 without, 0 failed")


def test_a_memo_patches_the_last_actions_and_leaves_earlier_plans_alone() -> None:
    """The memo patches its own lists in place: each plan must equal a diff made without
    it, and a plan handed out earlier must not change when a later diff patches."""
    first = state(
        resource(DB, {"size": "small"}),
        workload("orders", {"A": "1"}, (DB,)),
        workload("legacy", {"X": "y"}),
    )
    resources, workloads = recorded_from(first)
    second = state(
        resource(DB, {"size": "large"}),
        workload("orders", {"A": "2"}, (DB,)),
        first.workloads[1],
    )
    third = state(second.resources[0], first.workloads[0], second.workloads[1])
    memo = ActionMemo()
    plans = [diff(d, resources, workloads, commit="d" * 40, memo=memo) for d in (first, second)]
    snapshot = [to_json(p) for p in plans]
    plans.append(diff(third, resources, workloads, commit="d" * 40, memo=memo))
    fresh = [diff(d, resources, workloads, commit="d" * 40) for d in (first, second, third)]
    assert [to_json(p) for p in plans] == [to_json(p) for p in fresh]
    assert [to_json(p) for p in plans[:2]] == snapshot
    assert [a.action for a in plans[1].actions] == [ActionKind.UPDATE] * 2 + [ActionKind.NOOP]
    fewer = dict(workloads)
    del fewer["legacy"]
    gone = diff(third, resources, fewer, commit="d" * 40, memo=memo)
    assert to_json(gone) == to_json(diff(third, resources, fewer, commit="d" * 40))


def test_redacted_leaves_are_the_flattened_redaction() -> None:
    """``field_changes`` walks a spec once (``redacted_leaves``); what it finds is what
    flattening the redacted copy found: paths, quoting, empty containers, tuples, secrets."""
    ref = secret_ref("prod", "postgres.default#db", "password")
    values: list[Any] = [
        {},
        [],
        (),
        "x",
        3,
        None,
        ref,
        [1, {"a": ref}],
        (ref, ()),
        {
            "a": (),
            "b": [],
            "c": {},
            "d": (1, 2),
            "x y": {"é": [embed(ref), f"a{embed(ref)}b", "plain"]},
            "": 0,
            "Z": [[], [[]], {"k": ()}],
        },
    ]
    for value in values:
        assert redacted_leaves(value) == flatten(redact(value)), value
        changes = field_changes({}, value)
        assert [c.path for c in changes] == sorted(flatten(redact(value)))
        assert field_changes(value, {}) == tuple(type(c)(c.path, c.new, None) for c in changes)


def test_creations_and_deletions_make_their_changes_when_read() -> None:
    """A first plan builds no ``Change`` for what it creates (nothing that carries a plan out
    reads them): they are made from the desired or recorded object when read, and are the
    same changes, equal to the tuple an eager diff would have made."""
    before = state(resource(DB, {"size": "small"}), workload("legacy", {"X": "y"}))
    after = state(
        resource("redis.default#orders.cache", {"tags": ["a", embed(PASSWORD_REF)], "x": {}}),
        workload("orders", {"DB": f"postgres://app:{embed(PASSWORD_REF)}@db"}),
    )
    plan = diff(after, *recorded_from(before), commit="a" * 40)
    by_id = {a.id: a for a in plan.actions}
    created, new_workload = by_id["redis.default#orders.cache"], by_id["orders"]
    deleted, old_workload = by_id[DB], by_id["legacy"]
    assert not isinstance(created.changes, tuple)
    assert created.changes == field_changes({}, {"params": after.resources[0].params})
    assert new_workload.changes == field_changes({}, after.workloads[0].spec)
    assert deleted.changes == field_changes({"params": {"size": "small"}}, {})
    assert old_workload.changes == field_changes(before.workloads[0].spec, {})
    assert [c.path for c in created.changes] == ["params.tags[0]", "params.tags[1]", "params.x"]
    assert created.changes[1].new == "(sensitive value)"
    assert len(new_workload.changes) == 2
    assert new_workload.changes[-1:] == (new_workload.changes[1],)
    assert repr(created.changes) == repr(tuple(created.changes))
    for action in (created, new_workload, deleted, old_workload):  # a stored plan's changes
        assert action.to_dict()["changes"] == [c.to_dict() for c in tuple(action.changes)]
    assert created.to_dict()["changes"][1] == {
        "path": "params.tags[1]",
        "old": None,
        "new": "(sensitive value)",
    }


def test_redacted_leaves_keep_each_scalar_and_its_type() -> None:
    """Numbers, flags and nulls are told apart by exact type on the way (a subclass or a
    mapping that is not a dict takes the general path): each leaf is the value, of the type,
    that flattening the redacted copy gives."""
    import enum  # noqa: PLC0415
    from types import MappingProxyType  # noqa: PLC0415

    class Level(enum.IntEnum):
        HIGH = 2

    ref = secret_ref("prod", "postgres.default#db", "password")
    value = {
        "flags": [True, False, None],
        "numbers": {"int": 1, "float": 1.5, "zero": 0.0, "big": 10**30, "level": Level.HIGH},
        "view": MappingProxyType({"b": 1, "a": ref, "e": MappingProxyType({})}),
        "mixed": [1, "1", 1.0, True, {"x": None}],
    }
    found = redacted_leaves(value)
    expected = flatten(redact(value))
    assert found == expected
    assert {k: (type(v), repr(v)) for k, v in found.items()} == {
        k: (type(v), repr(v)) for k, v in expected.items()
    }
