"""The kubernetes target against a fake API server: apply, no-op apply, prune, delete, rollout
health, and errors translated at the boundary."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from reconciler.catalogue import Code
from reconciler.desired.secrets import embed, secret_ref
from reconciler.desired.templating import k8s_name
from reconciler.providers.base import DriverError, WorkloadRequest, WorkloadTarget
from reconciler.providers.kubernetes import (
    ANNOTATION_KINDS,
    DEGRADED,
    HEALTHY,
    LABEL_WORKLOAD,
    MISSING,
    PROGRESSING,
    KubernetesTarget,
    ownership_labels,
    rollout_health,
)
from reconciler.providers.kubernetes_objects import LABEL_ENVIRONMENT, LABEL_MANAGED_BY
from tests.support.fake_kube import APPLY, FakeKube

ENV = "prod"
NS = "team-prod"
DB = "postgres.default#db"


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    with FakeKube() as fake:
        yield fake


def _target(url: str) -> KubernetesTarget:
    client = k8s.ApiClient(k8s.Configuration(host=url))
    return KubernetesTarget(client, namespace_template="team-{environment}", request_timeout=5)


@pytest.fixture
def target(kube: FakeKube) -> KubernetesTarget:
    return _target(kube.url)


def _request(
    name: str = "web", image: str = "nginx:1", *, files: bool = False, extra: Any = ()
) -> WorkloadRequest:
    container: dict[str, Any] = {"image": image}
    if files:
        container["files"] = {"/etc/app.conf": {"content": "x=1\n"}}
    spec = {
        "metadata": {"name": name},
        "containers": {"main": container},
        "service": {"ports": {"http": {"port": 80}}},
    }
    return WorkloadRequest(environment=ENV, name=name, spec=spec, resource_manifests=list(extra))


def _statefulset(name: str = "db") -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": name}, "spec": {}}


def _service_account(name: str = "runner") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}}


def _db_secret() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": k8s_name("postgres", "default", "db")},
        "stringData": {"password": embed(secret_ref(ENV, DB, "password"))},
    }


def _all(kube: FakeKube) -> list[tuple[str, str]]:
    return sorted((key[1], key[3]) for key in kube.objects if key[2] == NS)


# -- apply ---------------------------------------------------------------------------------------


def test_is_a_workload_target_with_nothing_to_flush(target: KubernetesTarget) -> None:
    as_protocol: WorkloadTarget = target
    assert as_protocol.flush(ENV, "deploy") is None


def test_apply_creates_every_object_labelled_with_server_side_apply(
    kube: FakeKube, target: KubernetesTarget
) -> None:
    seen = target.apply(_request(files=True, extra=[_statefulset(), _db_secret()]))

    assert _all(kube) == [
        ("configmaps", "web-main-files"),
        ("deployments", "web"),
        ("externalsecrets", k8s_name("postgres", "default", "db")),
        ("services", "web"),
        ("statefulsets", "db"),
    ]
    for key, obj in kube.objects.items():
        assert obj["metadata"]["labels"][LABEL_MANAGED_BY] == "score-reconciler", key
        assert obj["metadata"]["labels"][LABEL_ENVIRONMENT] == ENV, key
        assert obj["metadata"]["labels"][LABEL_WORKLOAD] == "web", key
        assert obj["metadata"]["managedFields"][0]["manager"] == "reconciler", key
    patches = [r for r in kube.requests if r.method == "PATCH"]
    assert len(patches) == 5
    assert {(r.content_type, r.query["fieldManager"], r.query["force"]) for r in patches} == {
        (APPLY, "reconciler", "true")
    }
    assert seen.exists
    assert not seen.healthy  # nothing has rolled out yet
    assert seen.outputs["health"] == PROGRESSING
    assert seen.outputs["namespace"] == NS


def test_changed_image_updates_and_identical_apply_changes_nothing(
    kube: FakeKube, target: KubernetesTarget
) -> None:
    target.apply(_request(image="nginx:1"))
    first = kube.get("apps/v1", "deployments", NS, "web")["metadata"]
    versions = {key: obj["metadata"]["resourceVersion"] for key, obj in kube.objects.items()}

    target.apply(_request(image="nginx:1"))
    assert {k: o["metadata"]["resourceVersion"] for k, o in kube.objects.items()} == versions

    target.apply(_request(image="nginx:2"))
    deployment = kube.get("apps/v1", "deployments", NS, "web")
    assert deployment["metadata"]["generation"] == first["generation"] + 1
    assert deployment["metadata"]["resourceVersion"] != first["resourceVersion"]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:2"
    service = kube.get("v1", "services", NS, "web")["metadata"]
    assert service["resourceVersion"] == versions[("v1", "services", NS, "web")]


def test_apply_takes_over_an_object_someone_else_made(
    kube: FakeKube, target: KubernetesTarget
) -> None:
    kube.put("v1", "services", NS, {"metadata": {"name": "web"}, "spec": {"ports": []}})
    kube.objects[("v1", "services", NS, "web")]["metadata"]["managedFields"] = [
        {"manager": "kubectl", "operation": "Update"}
    ]

    target.apply(_request())

    assert kube.get("v1", "services", NS, "web")["spec"]["ports"][0]["port"] == 80


def test_objects_that_left_the_render_are_pruned(kube: FakeKube, target: KubernetesTarget) -> None:
    extra = [_statefulset(), _service_account()]
    target.apply(_request(files=True, extra=extra))
    target.apply(_request("api"))  # another workload's objects must survive
    owned: dict[str, Any] = {"name": "web-main-files-abc", "labels": ownership_labels(ENV, "web")}
    owned["ownerReferences"] = [{"kind": "ExternalSecret", "name": "x", "controller": True}]
    kube.put("v1", "secrets", NS, {"metadata": owned})

    seen = target.apply(_request())

    assert _all(kube) == [
        ("deployments", "api"),
        ("deployments", "web"),
        ("secrets", "web-main-files-abc"),  # its owner's to remove, not ours
        ("services", "api"),
        ("services", "web"),
    ]
    assert seen.outputs["pruned"] == [
        "ConfigMap/web-main-files",
        "ServiceAccount/runner",  # found only through the kinds recorded on the Deployment
        "StatefulSet/db",
    ]
    annotations = kube.get("apps/v1", "deployments", NS, "web")["metadata"]["annotations"]
    assert annotations[ANNOTATION_KINDS] == "apps/v1/Deployment,v1/Service"


def test_delete_removes_every_object_of_the_workload(
    kube: FakeKube, target: KubernetesTarget
) -> None:
    target.apply(_request(files=True, extra=[_statefulset(), _service_account(), _db_secret()]))
    target.apply(_request("api"))

    target.delete(ENV, "web")
    target.delete(ENV, "web")  # again, as after a crash: nothing left, no error

    assert _all(kube) == [("deployments", "api"), ("services", "api")]
    assert not target.observe(ENV, "web").exists


def test_an_unserved_kind_fails_to_apply_but_is_skipped_when_pruning(
    kube: FakeKube, target: KubernetesTarget
) -> None:
    kube.unserve("external-secrets.io/v1")

    with pytest.raises(DriverError) as caught:
        target.apply(_request(extra=[_db_secret()]))
    target.apply(_request())
    target.delete(ENV, "web")

    assert caught.value.code is Code.KUBERNETES_API_FAILED
    assert not caught.value.retryable
    assert "does not serve" in caught.value.message
    assert _all(kube) == []


# -- health --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "health"),
    [
        ({}, PROGRESSING),
        ({"observedGeneration": 0, "replicas": 1, "updatedReplicas": 1}, PROGRESSING),
        ({"observedGeneration": "current", "replicas": 1, "updatedReplicas": 0}, PROGRESSING),
        ({"observedGeneration": "current", "replicas": 2, "updatedReplicas": 1}, PROGRESSING),
        ({"observedGeneration": "current", "replicas": 1, "updatedReplicas": 1}, PROGRESSING),
        (
            {
                "observedGeneration": "current",
                "replicas": 1,
                "updatedReplicas": 1,
                "availableReplicas": 1,
            },
            HEALTHY,
        ),
        (
            {
                "observedGeneration": "current",
                "replicas": 1,
                "conditions": [
                    {"type": "Available", "status": "False"},
                    {
                        "type": "Progressing",
                        "status": "False",
                        "reason": "ProgressDeadlineExceeded",
                    },
                ],
            },
            DEGRADED,
        ),
    ],
)
def test_observe_maps_the_rollout_to_health(
    kube: FakeKube, target: KubernetesTarget, status: dict[str, Any], health: str
) -> None:
    target.apply(_request())
    kube.set_status(NS, "web", **status)

    seen = target.observe(ENV, "web")

    assert seen.exists
    assert seen.outputs["health"] == health
    assert seen.healthy == (health == HEALTHY)
    assert seen.message.startswith(health)


def test_observe_a_missing_workload(target: KubernetesTarget) -> None:
    seen = target.observe(ENV, "web")
    assert (seen.exists, seen.healthy, seen.outputs["health"]) == (False, False, MISSING)


def test_rollout_health_waits_for_old_replicas_to_go() -> None:
    deployment = {
        "metadata": {"generation": 2},
        "spec": {"replicas": 2},
        "status": {"observedGeneration": 2, "replicas": 3, "updatedReplicas": 2},
    }
    assert rollout_health(deployment) == (PROGRESSING, "1 old replicas pending termination")


class FakeClock:
    """Moves only when slept on, and calls ``on_sleep`` with the number of sleeps so far."""

    def __init__(self, on_sleep: Callable[[int], None] = lambda _: None) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self.on_sleep = on_sleep

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.sleeps.append(seconds)
        self.on_sleep(len(self.sleeps))


READY = {"observedGeneration": "current", "replicas": 1, "updatedReplicas": 1}


def test_wait_healthy_polls_until_the_rollout_is_done(
    kube: FakeKube, target: KubernetesTarget
) -> None:
    target.apply(_request())

    def controller(sleeps: int) -> None:
        if sleeps == 2:
            kube.set_status(NS, "web", availableReplicas=1, **READY)

    clock = FakeClock(controller)
    seen = target.wait_healthy(ENV, "web", 60, clock, interval=5)

    assert seen.healthy
    assert clock.sleeps == [5, 5]


def test_wait_healthy_stops_at_a_degraded_rollout(kube: FakeKube, target: KubernetesTarget) -> None:
    target.apply(_request())
    condition = {"type": "Progressing", "reason": "ProgressDeadlineExceeded", "message": "slow"}
    kube.set_status(NS, "web", observedGeneration="current", conditions=[condition])
    clock = FakeClock()

    seen = target.wait_healthy(ENV, "web", 60, clock)

    assert seen.outputs["health"] == DEGRADED
    assert "slow" in seen.message
    assert clock.sleeps == []


def test_wait_healthy_gives_up_after_the_timeout(target: KubernetesTarget) -> None:
    target.apply(_request())
    clock = FakeClock()

    seen = target.wait_healthy(ENV, "web", 5, clock, interval=2)

    assert not seen.healthy
    assert seen.message.startswith("not healthy after 5s")
    assert clock.sleeps == [2, 2, 1]


# -- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "retryable"), [(500, True), (503, True), (429, True)])
def test_server_errors_are_retryable(
    kube: FakeKube, target: KubernetesTarget, status: int, retryable: bool
) -> None:
    kube.fail_next(status, method="PATCH")
    with pytest.raises(DriverError) as caught:
        target.apply(_request())
    assert caught.value.code is Code.KUBERNETES_API_FAILED
    assert caught.value.retryable is retryable
    assert f"PATCH /api/v1/namespaces/{NS}/services/web: {status}" in caught.value.message


def test_a_forbidden_request_is_not_retryable(kube: FakeKube, target: KubernetesTarget) -> None:
    kube.fail_next(403)
    with pytest.raises(DriverError) as caught:
        target.observe(ENV, "web")
    assert caught.value.code is Code.KUBERNETES_API_FAILED
    assert not caught.value.retryable
    assert "403 injected failure" in caught.value.message


def test_connection_refused_is_retryable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again before the target connects
    config = k8s.Configuration(host=f"http://127.0.0.1:{port}")
    config.retries = 0
    target = KubernetesTarget(k8s.ApiClient(config))

    with pytest.raises(DriverError) as caught:
        target.observe(ENV, "web")

    assert caught.value.code is Code.KUBERNETES_API_FAILED
    assert caught.value.retryable
    assert "cannot reach the API server" in caught.value.message


# -- configuration -------------------------------------------------------------------------------


def test_from_config_reads_the_kubeconfig_and_its_token(tmp_path: Path) -> None:
    with FakeKube(token="s3cret") as kube:
        kubeconfig = tmp_path / "config"
        kubeconfig.write_text(
            f"""apiVersion: v1
kind: Config
clusters: [{{name: fake, cluster: {{server: "{kube.url}"}}}}]
users: [{{name: me, user: {{token: s3cret}}}}]
contexts: [{{name: other, context: {{cluster: fake, user: nobody}}}},
           {{name: fake, context: {{cluster: fake, user: me, namespace: x}}}}]
current-context: other
"""
        )
        target = KubernetesTarget.from_config(str(kubeconfig), "fake", field_manager="ci")
        target.apply(_request())

        assert (
            kube.get("apps/v1", "deployments", "prod", "web")["metadata"]["managedFields"][0][
                "manager"
            ]
            == "ci"
        )


def test_from_config_with_no_kubeconfig_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(DriverError) as caught:
        KubernetesTarget.from_config(str(tmp_path / "missing"), None)
    assert caught.value.code is Code.KUBERNETES_API_FAILED
    assert "kubernetes configuration" in caught.value.message
