"""What the planner keeps of each recorded workload and resource shares what is equal.

The daemon keeps, for every workload of an environment, the store's record and the builder's
state made from it: equal parts kept twice are memory that grows with the repository."""

from __future__ import annotations

from reconciler.desired.build import build
from reconciler.desired.incremental import _declared, _typed
from reconciler.desired.provisioners import builtin_provisioner_files, load_provisioners
from reconciler.diagnostics import has_errors
from reconciler.pipeline import _from_record, known_outputs
from reconciler.plan.model import Action, ActionKind, Subject
from reconciler.score.loader import LoadedWorkload
from reconciler.store.records import ResourceRecord, WorkloadRecord

SOURCE = {
    "apiVersion": "score.dev/v1b1",
    "metadata": {"name": "web"},
    "containers": {"main": {"image": "nginx"}},
    "resources": {"db": {"type": "postgres"}, "cache": {"type": "redis"}, "dns": {"type": "dns"}},
}


def _record() -> WorkloadRecord:
    return WorkloadRecord("web", "c0ffee", "apps/web/score.yaml", "sha256:x", {}, source=SOURCE)


def test_a_records_declarations_share_one_placer() -> None:
    first = _declared(_typed("web", _from_record(_record())))
    second = _declared(_typed("web", _from_record(_record())))
    assert sorted(first) == ["cache", "db", "dns"]
    documents = {id(d.document) for d in first.values()}
    assert len(documents) == 1
    document = next(iter(first.values())).document
    assert document.data == {}
    assert document.file == "apps/web/score.yaml"
    # every recorded document has the same (empty) positions, not a pair of mappings each
    assert next(iter(second.values())).document.positions is document.positions


def _resource(outputs: dict[str, object], secret_refs: dict[str, str]) -> ResourceRecord:
    return ResourceRecord(
        "dns.default#web.dns", "dns", "default", "web.dns", "builtin://dns", "sha256:y",
        outputs=outputs, secret_refs=secret_refs,
    )  # fmt: skip


def test_known_outputs_without_secrets_are_the_records_own() -> None:
    outputs: dict[str, object] = {"host": "web.example.com", "port": 443}
    assert known_outputs(_resource(outputs, {})) is outputs


def test_known_outputs_merge_secrets_and_leave_the_drivers_keys_out() -> None:
    outputs: dict[str, object] = {"host": "db", "_seed": "x"}
    merged = known_outputs(_resource(outputs, {"password": "vault:kv/db#password"}))
    assert merged == {"host": "db", "password": "vault:kv/db#password"}
    assert known_outputs(_resource(outputs, {})) == {"host": "db"}
    assert outputs == {"host": "db", "_seed": "x"}


def test_empty_params_metadata_and_details_are_one_mapping() -> None:
    """The builder keeps a desired resource per resource and the diff's memo an action per
    workload and resource, between plans: empty ones share one mapping."""
    empty_detail = Action(ActionKind.NOOP, Subject.WORKLOAD, "a").detail
    assert empty_detail == {}
    assert Action(ActionKind.CREATE, Subject.WORKLOAD, "b").detail is empty_detail
    provisioners, problems = load_provisioners(builtin_provisioner_files())
    assert not has_errors(problems)
    state, problems = build(
        environment="prod",
        variables={},
        workloads=[_loaded("aa"), _loaded("bb")],
        provisioners=provisioners,
        file_contents={},
        outputs={},
    )
    assert not has_errors(problems)
    resources = {r.uid: r for r in state.resources}
    first, second = (resources[f"dns.default#{n}.dns"] for n in ("aa", "bb"))
    assert first.params == {}
    assert first.metadata == {}
    assert first.params is second.params is first.metadata is second.metadata


def _loaded(name: str) -> LoadedWorkload:
    record = WorkloadRecord(
        name,
        "c0ffee",
        f"apps/{name}/score.yaml",
        "sha256:x",
        {},
        source={
            "apiVersion": "score.dev/v1b1",
            "metadata": {"name": name},
            "containers": {"main": {"image": "nginx"}},
            "resources": {"dns": {"type": "dns"}},
        },
    )
    return _from_record(record)
