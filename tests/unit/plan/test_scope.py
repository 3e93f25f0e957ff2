"""Cutting a plan along workloads: which workloads own its changes, and what a run of some
workloads must carry out (the daemon's per-workload queue relies on both)."""

from __future__ import annotations

from reconciler.catalogue import Code
from reconciler.desired.model import DesiredResource, DesiredState, DesiredWorkload, digest
from reconciler.diagnostics import Diagnostic, Severity
from reconciler.plan.model import Action, ActionKind, Plan, Subject
from reconciler.plan.scope import changed_workloads, restrict, scoped_diagnostics

SHARED_DB = "postgres.default#shop-db"
DNS = "dns.default#orders.dns"
ROUTE = "route.default#orders.route"
CACHE = "redis.default#cart.cache"


def res(
    uid: str, source: str, consumers: tuple[str, ...], depends: tuple[str, ...] = ()
) -> DesiredResource:
    kind = uid.split(".", 1)[0]
    return DesiredResource(
        uid=uid,
        type=kind,
        class_="default",
        id=uid.split("#", 1)[1],
        source_workload=source,
        consumers=consumers,
        provisioner=f"template://builtin/{kind}",
        params={},
        metadata={},
        depends_on=depends,
        shared=len(consumers) > 1,
        params_hash=digest({}),
    )


def wl(name: str) -> DesiredWorkload:
    return DesiredWorkload(
        name=name,
        file=f"apps/{name}/score.yaml",
        spec={},
        resources={},
        depends_on=(),
        spec_hash="",
        sources=(f"apps/{name}/score.yaml",),
    )


DESIRED = DesiredState(
    environment="staging",
    resources=(
        res(SHARED_DB, "orders", ("orders", "cart")),
        res(DNS, "orders", ("orders",)),
        res(ROUTE, "orders", ("orders",), depends=(DNS,)),
        res(CACHE, "cart", ("cart",)),
    ),
    workloads=(wl("orders"), wl("cart"), wl("search")),
)


def act(kind: Subject, uid: str, action: ActionKind = ActionKind.CREATE) -> Action:
    return Action(action=action, kind=kind, id=uid)


R, W = Subject.RESOURCE, Subject.WORKLOAD


def plan(*actions: Action) -> Plan:
    return Plan(environment="staging", commit="c" * 40, base_commit=None, actions=actions)


def ids(p: Plan) -> set[str]:
    return {a.step_id for a in p.actions}


def test_each_change_is_keyed_by_the_workload_that_owns_it() -> None:
    changes = plan(
        act(W, "search", ActionKind.UPDATE),
        act(R, CACHE, ActionKind.UPDATE),  # cart brought it
        act(R, "volume.default#gone", ActionKind.DELETE),  # recorded as brought by "legacy"
        act(W, "orders", ActionKind.NOOP),
    )
    owners = {"volume.default#gone": "legacy"}
    assert changed_workloads(changes, DESIRED, owners) == {"search", "cart", "legacy"}


def test_an_ownerless_deletion_keys_no_workload_and_rides_along_with_every_scope() -> None:
    changes = plan(act(R, "volume.default#orphan", ActionKind.DELETE))
    assert changed_workloads(changes, DESIRED, {}) == frozenset()
    assert ids(restrict(changes, DESIRED, {"search"}, {})) == {"resource:volume.default#orphan"}


def test_a_scope_carries_its_workloads_the_resources_they_use_and_their_dependencies() -> None:
    everything = plan(
        act(R, SHARED_DB),
        act(R, DNS),
        act(R, ROUTE),
        act(R, CACHE),
        act(W, "orders"),
        act(W, "cart"),
        act(R, "volume.default#old", ActionKind.DELETE),
    )
    owners = {"volume.default#old": "cart"}
    orders = restrict(everything, DESIRED, {"orders"}, owners)
    assert ids(orders) == {
        f"resource:{SHARED_DB}",
        f"resource:{DNS}",
        f"resource:{ROUTE}",
        "workload:orders",
    }
    cart = restrict(everything, DESIRED, {"cart"}, owners)
    assert ids(cart) == {
        f"resource:{SHARED_DB}",  # shared: either consumer's run provisions it
        f"resource:{CACHE}",
        "workload:cart",
        "resource:volume.default#old",
    }
    assert ids(restrict(everything, DESIRED, {"orders", "cart"}, owners)) == ids(everything)


def test_a_removed_workload_is_in_its_own_scope_only() -> None:
    changes = plan(act(W, "legacy", ActionKind.DELETE), act(W, "cart", ActionKind.UPDATE))
    assert ids(restrict(changes, DESIRED, {"legacy"}, {})) == {"workload:legacy"}


def test_a_scoped_run_answers_for_its_own_files_and_for_diagnostics_of_no_file() -> None:
    def diag(file: str | None) -> Diagnostic:
        return Diagnostic(code=Code.YAML_SYNTAX, severity=Severity.ERROR, message="bad", file=file)

    mine, other, general = diag("apps/cart/score.yaml"), diag("apps/aa/score.yaml"), diag(None)
    kept = scoped_diagnostics([mine, other, general], {"apps/cart/score.yaml"})
    assert kept == (mine, general)
