"""The ``kubernetes`` workload target: server-side apply to a live cluster, prune, rollout health.

The engine calls ``apply``, ``delete`` and ``observe`` per workload (from several threads) and
``flush`` per environment, exactly as for the ``manifests`` target; the objects are the same ones
(``render_workload`` + ``render_resources``), so switching targets changes where they go, not
what they are. docs/kubernetes.md is the user's side of this module.

How it talks to the API server: plain REST calls through the official client's ``ApiClient``
(its configuration, authentication, TLS and connection pool), not ``DynamicClient``, whose
constructor queries the whole discovery tree and writes a cache file to /tmp. Instead each
``apiVersion`` is discovered on first use (``GET /api/v1``, ``GET /apis/<group>/<version>``) to
learn a kind's plural and scope, as kubectl does. Objects are applied one by one with
server-side apply (``PATCH`` with ``application/apply-patch+yaml``, ``fieldManager``,
``force=true``): the API server merges, an identical apply changes nothing, and our fields are
ours even if someone edited them by hand.

Every object carries three labels (managed-by, environment, workload); pruning lists each kind
by those labels and deletes what the render no longer holds. The kinds listed are the ones the
renderer produces, the ones rendered now, and the ones the previous apply recorded in an
annotation on the Deployment, so a kind a provisioner stopped rendering is pruned too.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Final, Protocol

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from reconciler.catalogue import Code
from reconciler.providers.base import DriverError, Observation, WorkloadRequest
from reconciler.providers.kubernetes_objects import (
    LABEL_ENVIRONMENT,
    LABEL_MANAGED_BY,
    MANAGER,
    render_resources,
    render_workload,
    sort_key,
)

LABEL_WORKLOAD: Final = "reconciler.score.dev/workload"
ANNOTATION_KINDS: Final = "reconciler.score.dev/applied-kinds"
"""On the Deployment: every ``apiVersion/Kind`` applied last time, so pruning finds them all."""

HEALTHY: Final = "Healthy"
PROGRESSING: Final = "Progressing"
DEGRADED: Final = "Degraded"
MISSING: Final = "Missing"

PRUNE_KINDS: Final = (
    "apps/v1/Deployment",
    "apps/v1/StatefulSet",
    "v1/Service",
    "v1/ConfigMap",
    "v1/PersistentVolumeClaim",
    "v1/Secret",
    "external-secrets.io/v1/ExternalSecret",
    "gateway.networking.k8s.io/v1/HTTPRoute",
)
"""Kinds always searched when pruning and deleting (``apiVersion/Kind``); unserved ones are
skipped, so a cluster without the Gateway API or External Secrets still works."""

_APPLY: Final = "application/apply-patch+yaml"


class WaitClock(Protocol):
    """Monotonic seconds and a way to let them pass; tests pass a clock that moves by hand."""

    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemWaitClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


@dataclass(frozen=True, slots=True)
class ServedKind:
    """Where the API server serves a kind: its plural and whether objects live in a namespace."""

    api_version: str
    kind: str
    plural: str
    namespaced: bool

    def path(self, namespace: str, name: str = "") -> str:
        root = f"/apis/{self.api_version}" if "/" in self.api_version else "/api/v1"
        scope = f"/namespaces/{namespace}" if self.namespaced else ""
        return f"{root}{scope}/{self.plural}" + (f"/{name}" if name else "")


class KubernetesTarget:
    """A ``WorkloadTarget`` applying each environment's workloads to the namespace
    ``namespace_template.format(environment=...)``, which must exist."""

    local = False  # requests to the API server

    def __init__(
        self,
        api_client: k8s.ApiClient,
        *,
        namespace_template: str = "{environment}",
        field_manager: str = "reconciler",
        request_timeout: float = 30.0,
    ) -> None:
        self.api_client = api_client
        self.namespace_template = namespace_template
        self.field_manager = field_manager
        self.request_timeout = request_timeout
        self._lock = threading.Lock()
        self._served: dict[str, dict[str, ServedKind]] = {}

    @classmethod
    def from_config(
        cls,
        kubeconfig: str | None = None,
        context: str | None = None,
        *,
        namespace_template: str = "{environment}",
        field_manager: str = "reconciler",
        request_timeout: float = 30.0,
    ) -> KubernetesTarget:
        """The pod's service account when running in a cluster and no kubeconfig or context is
        named; else the kubeconfig (``kubeconfig``, or ``$KUBECONFIG``, or ``~/.kube/config``)."""
        configuration = k8s.Configuration()
        try:
            if kubeconfig is None and context is None and "KUBERNETES_SERVICE_HOST" in os.environ:
                k8s_config.load_incluster_config(client_configuration=configuration)
            else:
                k8s_config.load_kube_config(
                    config_file=kubeconfig, context=context, client_configuration=configuration
                )
        except (ConfigException, OSError) as exc:
            raise DriverError(
                Code.KUBERNETES_API_FAILED, f"kubernetes configuration: {exc}"
            ) from exc
        return cls(
            k8s.ApiClient(configuration),
            namespace_template=namespace_template,
            field_manager=field_manager,
            request_timeout=request_timeout,
        )

    def namespace(self, environment: str) -> str:
        return self.namespace_template.format(environment=environment)

    # -- the WorkloadTarget protocol -----------------------------------------------------------

    def apply(self, request: WorkloadRequest) -> Observation:
        """Apply every rendered object, then prune this workload's objects the render dropped."""
        env, name = request.environment, request.name
        namespace = self.namespace(env)
        objects = sorted(render_workload(request) + render_resources(request), key=sort_key)
        kinds = sorted({_kind_id(obj) for obj in objects})
        previous = self._get_deployment(namespace, name)
        prune_kinds = {*PRUNE_KINDS, *kinds, *_recorded_kinds(previous)}
        deployment: Mapping[str, Any] | None = None
        for obj in objects:
            body = self._labelled(obj, env, name, kinds)
            applied = self._apply_one(body, namespace)
            if obj.get("kind") == "Deployment":
                deployment = applied
        keep = {_identity(_kind_id(obj), _name(obj)) for obj in objects}
        pruned = self._delete_labelled(namespace, env, name, prune_kinds, keep=keep)
        health, message = rollout_health(deployment) if deployment else (MISSING, "")
        return Observation(
            exists=True,
            healthy=health == HEALTHY,
            message=f"applied {len(objects)} objects to namespace '{namespace}'"
            + (f", pruned {len(pruned)}" if pruned else "")
            + (f"; {health}: {message}" if message else ""),
            outputs={
                "namespace": namespace,
                "health": health,
                "applied": [f"{obj['kind']}/{_name(obj)}" for obj in objects],
                "pruned": pruned,
            },
        )

    def delete(self, environment: str, name: str) -> None:
        """Delete every object labelled as this workload's, in every kind it may have made."""
        namespace = self.namespace(environment)
        kinds = {*PRUNE_KINDS, *_recorded_kinds(self._get_deployment(namespace, name))}
        self._delete_labelled(namespace, environment, name, kinds, keep=set())

    def observe(self, environment: str, name: str) -> Observation:
        """The Deployment's rollout, judged as ``kubectl rollout status`` judges it."""
        namespace = self.namespace(environment)
        deployment = self._get_deployment(namespace, name)
        if deployment is None:
            return Observation(
                exists=False,
                healthy=False,
                message=f"no Deployment '{name}' in namespace '{namespace}'",
                outputs={"namespace": namespace, "health": MISSING},
            )
        health, message = rollout_health(deployment)
        return Observation(
            exists=True,
            healthy=health == HEALTHY,
            message=f"{health}: {message}",
            outputs={"namespace": namespace, "health": health},
        )

    def flush(self, environment: str, message: str) -> str | None:
        """Changes are live as soon as they are applied: nothing is staged, nothing to publish."""
        return None

    def wait_healthy(
        self,
        environment: str,
        name: str,
        timeout: float,
        clock: WaitClock | None = None,
        *,
        interval: float = 2.0,
    ) -> Observation:
        """Poll ``observe`` until the rollout is Healthy or Degraded, or ``timeout`` seconds
        pass; then the last observation is returned with a message saying it timed out."""
        clock = clock or SystemWaitClock()
        deadline = clock.monotonic() + timeout
        while True:
            seen = self.observe(environment, name)
            if seen.outputs.get("health") in (HEALTHY, DEGRADED):
                return seen
            remaining = deadline - clock.monotonic()
            if remaining <= 0:
                return Observation(
                    exists=seen.exists,
                    healthy=False,
                    message=f"not healthy after {timeout:g}s: {seen.message}",
                    outputs=seen.outputs,
                )
            clock.sleep(min(interval, remaining))

    # -- objects -------------------------------------------------------------------------------

    def _labelled(
        self, obj: Mapping[str, Any], environment: str, name: str, kinds: Sequence[str]
    ) -> dict[str, Any]:
        """The object with the three ownership labels (and, on the Deployment, the kinds)."""
        meta = dict(obj.get("metadata") or {})
        meta["labels"] = {**(meta.get("labels") or {}), **ownership_labels(environment, name)}
        if obj.get("kind") == "Deployment":
            meta["annotations"] = {
                **(meta.get("annotations") or {}),
                ANNOTATION_KINDS: ",".join(kinds),
            }
        return {**obj, "metadata": meta}

    def _apply_one(self, obj: dict[str, Any], namespace: str) -> dict[str, Any]:
        served = self._require(_kind_id(obj))
        body = obj
        if served.namespaced:
            body = {**obj, "metadata": {**obj["metadata"], "namespace": namespace}}
        query = [("fieldManager", self.field_manager), ("force", "true")]
        result = self._call("PATCH", served.path(namespace, _name(obj)), query, body, _APPLY)
        assert result is not None  # missing_ok is off: a 404 raised
        return result

    def _get_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        served = self._require("apps/v1/Deployment")
        return self._call("GET", served.path(namespace, name), missing_ok=True)

    def _delete_labelled(
        self,
        namespace: str,
        environment: str,
        name: str,
        kinds: Iterable[str],
        *,
        keep: set[tuple[str, str, str]],
    ) -> list[str]:
        """Delete this workload's objects of ``kinds`` except ``keep``; what went, sorted.

        Objects another controller owns (an ExternalSecret's Secret) are left to the garbage
        collector, which removes them with their owner."""
        selector = ",".join(f"{k}={v}" for k, v in ownership_labels(environment, name).items())
        deleted = []
        for kind_id in _by_group_kind(kinds):
            served = self._served_kind(kind_id)
            if served is None:
                continue
            listing = self._call("GET", served.path(namespace), [("labelSelector", selector)])
            for item in (listing or {}).get("items") or []:
                meta = item.get("metadata") or {}
                if _identity(kind_id, meta.get("name", "")) in keep or _controlled(meta):
                    continue
                path = served.path(namespace, meta["name"])
                query = [("propagationPolicy", "Background")]
                self._call("DELETE", path, query, missing_ok=True)
                deleted.append(f"{served.kind}/{meta['name']}")
        return sorted(deleted)

    # -- discovery -----------------------------------------------------------------------------

    def _require(self, kind_id: str) -> ServedKind:
        served = self._served_kind(kind_id)
        if served is None:
            api_version, kind = kind_id.rsplit("/", 1)
            raise DriverError(
                Code.KUBERNETES_API_FAILED,
                f"{kind} ({api_version}): the cluster does not serve this kind; "
                "install its CustomResourceDefinition or change the provisioner",
            )
        return served

    def _served_kind(self, kind_id: str) -> ServedKind | None:
        """Found kinds are cached; a miss asks again, so a CRD installed later is seen."""
        api_version, kind = kind_id.rsplit("/", 1)
        with self._lock:
            known = self._served.get(api_version, {}).get(kind)
        if known is not None:
            return known
        root = f"/apis/{api_version}" if "/" in api_version else f"/api/{api_version}"
        listing = self._call("GET", root, missing_ok=True) or {}
        found = {
            str(r["kind"]): ServedKind(
                api_version, str(r["kind"]), str(r["name"]), bool(r.get("namespaced"))
            )
            for r in listing.get("resources") or []
            if "/" not in str(r.get("name", ""))  # subresources (deployments/status)
        }
        with self._lock:
            self._served[api_version] = found
        return found.get(kind)

    # -- the boundary: every HTTP call, and its errors -----------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        query: Sequence[tuple[str, str]] = (),
        body: Mapping[str, Any] | None = None,
        content_type: str = "application/json",
        *,
        missing_ok: bool = False,
    ) -> dict[str, Any] | None:
        """One request; its JSON answer, None for a 404 when ``missing_ok``, else DriverError."""
        what = f"{method} {path}"
        headers = {"Accept": "application/json", "Content-Type": content_type}
        try:
            serialized = self.api_client.param_serialize(
                method,
                path,
                query_params=list(query),
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
            )
            response = self.api_client.call_api(*serialized, _request_timeout=self.request_timeout)
            data: bytes = response.read()
        except urllib3.exceptions.HTTPError as exc:
            raise _unreachable(what, exc) from exc
        except ApiException as exc:  # the client's own wrapping of TLS failures
            raise _failed(what, f"{exc.reason}", retryable=False) from exc
        status = int(response.status)
        if status == HTTPStatus.NOT_FOUND and missing_ok:
            return None
        if not 200 <= status < 300:
            raise _failed(
                what,
                f"{status} {_status_message(status, data)}",
                retryable=status >= 500 or status == HTTPStatus.TOO_MANY_REQUESTS,
            )
        doc = json.loads(data) if data else {}
        return doc if isinstance(doc, dict) else {}


# -- rollout health ----------------------------------------------------------------------------


def rollout_health(deployment: Mapping[str, Any]) -> tuple[str, str]:
    """(health, why) of a Deployment, by the rules of ``kubectl rollout status``: the controller
    saw the latest spec, no progress deadline passed, every replica is updated, no old replica
    is left and every updated one is available."""
    meta = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    if int(status.get("observedGeneration", 0)) < int(meta.get("generation", 0)):
        return PROGRESSING, "waiting for the deployment controller to observe the new spec"
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Progressing" and (
            condition.get("reason") == "ProgressDeadlineExceeded"
        ):
            return DEGRADED, f"progress deadline exceeded: {condition.get('message', '')}".strip()
    want = int(spec.get("replicas", 1))
    updated = int(status.get("updatedReplicas", 0))
    total = int(status.get("replicas", 0))
    available = int(status.get("availableReplicas", 0))
    if updated < want:
        return PROGRESSING, f"{updated} of {want} replicas updated"
    if total > updated:
        return PROGRESSING, f"{total - updated} old replicas pending termination"
    if available < updated:
        return PROGRESSING, f"{available} of {updated} updated replicas available"
    return HEALTHY, f"{available} of {want} replicas available"


# -- helpers -----------------------------------------------------------------------------------


def ownership_labels(environment: str, name: str) -> dict[str, str]:
    """The labels that make an object this workload's: what pruning and deleting select on."""
    return {LABEL_MANAGED_BY: MANAGER, LABEL_ENVIRONMENT: environment, LABEL_WORKLOAD: name}


def _kind_id(obj: Mapping[str, Any]) -> str:
    return f"{obj.get('apiVersion', '')}/{obj.get('kind', '')}"


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


def _identity(kind_id: str, name: str) -> tuple[str, str, str]:
    """(group, kind, name): one object whichever version of its group it is read through."""
    api_version, kind = kind_id.rsplit("/", 1)
    group = api_version.rsplit("/", 1)[0] if "/" in api_version else ""
    return group, kind, name


def _by_group_kind(kinds: Iterable[str]) -> list[str]:
    """One ``apiVersion/Kind`` per group and kind (the last of the sorted ones), sorted."""
    chosen: dict[tuple[str, str], str] = {}
    for kind_id in sorted(kinds):
        group, kind, _ = _identity(kind_id, "")
        chosen[(group, kind)] = kind_id
    return sorted(chosen.values())


def _recorded_kinds(deployment: Mapping[str, Any] | None) -> list[str]:
    annotations = ((deployment or {}).get("metadata") or {}).get("annotations") or {}
    text = str(annotations.get(ANNOTATION_KINDS, ""))
    return [part for part in text.split(",") if part.count("/") in (1, 2)]


def _controlled(meta: Mapping[str, Any]) -> bool:
    return any(ref.get("controller") for ref in meta.get("ownerReferences") or [])


def _status_message(status: int, data: bytes) -> str:
    """The ``message`` of the API server's ``Status`` answer, else the start of the body."""
    try:
        doc = json.loads(data)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and doc.get("message"):
        return str(doc["message"])
    text = data.decode("utf-8", errors="replace").strip()[:200]
    if text:
        return text
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "no message"


def _failed(what: str, reason: str, *, retryable: bool) -> DriverError:
    return DriverError(Code.KUBERNETES_API_FAILED, f"{what}: {reason}", retryable=retryable)


def _unreachable(what: str, exc: urllib3.exceptions.HTTPError) -> DriverError:
    """Connection refused, reset or timed out: retry. A TLS failure will not heal by itself."""
    reason = getattr(exc, "reason", None) or exc
    tls = isinstance(reason, urllib3.exceptions.SSLError)
    return _failed(what, f"cannot reach the API server: {reason}", retryable=not tls)
