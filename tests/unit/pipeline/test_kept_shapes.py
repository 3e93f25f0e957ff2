"""What the planner keeps of each recorded workload and resource shares what is equal.

The daemon keeps, for every workload of an environment, the store's record and the builder's
state made from it: equal parts kept twice are memory that grows with the repository."""

from __future__ import annotations

from reconciler.desired.incremental import _declared, _typed
from reconciler.pipeline import _from_record, known_outputs
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
