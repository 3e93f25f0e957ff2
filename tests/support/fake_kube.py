"""A FAKE Kubernetes API server for tests: the HTTP API the official client speaks, and only
what the ``kubernetes`` workload target uses.

No API server can run where the tests run, so this one stands in for it, on 127.0.0.1 at a
random port, plain HTTP, in a thread. It answers as the real one does for:

- discovery: ``GET /api``, ``/apis``, ``/api/v1`` and ``/apis/<group>/<version>`` list the
  kinds of ``SERVED`` (a test can drop a group with ``unserve``, as if its CRD were missing);
- server-side apply: ``PATCH`` of an object with ``Content-Type: application/apply-patch+yaml``
  (415 otherwise), ``fieldManager`` required (422), ``force=true`` needed to take an object over
  from another manager (409). It creates the object (``generation`` 1) or replaces what that
  manager applied; an apply identical to the manager's last one changes nothing, not even
  ``resourceVersion``; a change bumps ``resourceVersion``, and ``generation`` when anything
  outside ``metadata`` and ``status`` changed. ``status`` is kept across applies;
- ``GET`` of one object (404 ``Status`` when missing), ``GET`` of a collection filtered by
  ``labelSelector`` (``k=v``, ``k==v``, ``k!=v``, ``k``; items without kind, as the real lists),
  ``DELETE`` of one object;
- a bearer token, when the fake is made with one (401 otherwise).

``set_status`` plays the Deployment controller; ``fail_next(status)`` makes the next matching
request fail; ``requests`` records every call (method, path, query, content type).
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.support.loopback import close, serve

APPLY = "application/apply-patch+yaml"

SERVED: dict[str, list[tuple[str, str, bool]]] = {
    "v1": [
        ("configmaps", "ConfigMap", True),
        ("services", "Service", True),
        ("secrets", "Secret", True),
        ("persistentvolumeclaims", "PersistentVolumeClaim", True),
        ("serviceaccounts", "ServiceAccount", True),
        ("namespaces", "Namespace", False),
    ],
    "apps/v1": [("deployments", "Deployment", True), ("statefulsets", "StatefulSet", True)],
    "external-secrets.io/v1": [("externalsecrets", "ExternalSecret", True)],
    "gateway.networking.k8s.io/v1": [("httproutes", "HTTPRoute", True)],
}
"""apiVersion → (plural, kind, namespaced) the fake serves."""

Key = tuple[str, str, str, str]
"""(apiVersion, plural, namespace, name)"""


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    content_type: str


@dataclass
class FakeKube:
    """The fake's state; ``url`` once started. Use as a context manager."""

    token: str | None = None
    objects: dict[Key, dict[str, Any]] = field(default_factory=dict)
    applied: dict[tuple[Key, str], dict[str, Any]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    served: dict[str, list[tuple[str, str, bool]]] = field(
        default_factory=lambda: {k: list(v) for k, v in SERVED.items()}
    )
    _fail: list[tuple[int, str | None]] = field(default_factory=list)
    _version: int = 100
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        assert self._server is not None, "the fake API server is not running"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> FakeKube:
        self._server = serve(_handler(self))
        return self

    def __exit__(self, *_: object) -> None:
        close(self._server)

    # -- for tests, behind the API ------------------------------------------------------------

    def fail_next(self, status: int, *, method: str | None = None) -> None:
        """The next request (of ``method``, if given) answers ``status`` with a ``Status``."""
        self._fail.append((status, method))

    def unserve(self, api_version: str) -> None:
        """Forget a group version, as a cluster without that CRD."""
        self.served.pop(api_version, None)

    def get(self, api_version: str, plural: str, namespace: str, name: str) -> dict[str, Any]:
        return self.objects[(api_version, plural, namespace, name)]

    def names(self, api_version: str, plural: str, namespace: str) -> list[str]:
        return sorted(k[3] for k in self.objects if k[:3] == (api_version, plural, namespace))

    def put(self, api_version: str, plural: str, namespace: str, obj: dict[str, Any]) -> None:
        """Store an object as someone else made it (no apply, no manager of ours)."""
        with self._lock:
            meta = obj.setdefault("metadata", {})
            meta.update(namespace=namespace, resourceVersion=self._next_version(), generation=1)
            self.objects[(api_version, plural, namespace, meta["name"])] = obj

    def set_status(self, namespace: str, name: str, **status: Any) -> None:
        """Play the Deployment controller: replace its status (``observedGeneration`` may be
        ``"current"`` for the object's generation). Status never bumps ``generation``."""
        with self._lock:
            obj = self.objects[("apps/v1", "deployments", namespace, name)]
            if status.get("observedGeneration") == "current":
                status["observedGeneration"] = obj["metadata"]["generation"]
            obj["status"] = status
            obj["metadata"]["resourceVersion"] = self._next_version()

    # -- the API --------------------------------------------------------------------------------

    def handle(
        self, method: str, raw: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, Any]]:
        split = urlsplit(raw)
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        content_type = headers.get("content-type", "").split(";")[0].strip()
        with self._lock:
            self.requests.append(Request(method, split.path, query, content_type))
            failure = next((f for f in self._fail if f[1] in (None, method)), None)
            if failure is not None:
                self._fail.remove(failure)
                return _status(failure[0], "injected failure", "InternalError")
            if self.token is not None and headers.get("authorization") != f"Bearer {self.token}":
                return _status(401, "Unauthorized", "Unauthorized")
            return self._route(method, split.path, query, content_type, body)

    def _route(
        self, method: str, path: str, query: dict[str, str], content_type: str, body: bytes
    ) -> tuple[int, dict[str, Any]]:
        parts = [p for p in path.split("/") if p]
        discovery = self._discovery(parts)
        if discovery is not None:
            return (200, discovery) if method == "GET" else _status(405, "method not allowed")
        target = self._target(parts)
        if target is None:
            return _status(404, "the server could not find the requested resource", "NotFound")
        api_version, plural, kind, namespace, name = target
        if name is None:
            if method != "GET":
                return _status(405, "method not allowed", "MethodNotAllowed")
            return 200, self._list(api_version, plural, kind, namespace, query)
        key = (api_version, plural, namespace, name)
        if method == "GET":
            return self._read(key, plural)
        if method == "DELETE":
            if self.objects.pop(key, None) is None:
                return _not_found(plural, name)
            for k in [k for k in self.applied if k[0] == key]:
                del self.applied[k]
            return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success"}
        if method == "PATCH":
            return self._apply(key, kind, query, content_type, body)
        return _status(405, "method not allowed", "MethodNotAllowed")

    def _discovery(self, parts: list[str]) -> dict[str, Any] | None:
        if parts == ["api"]:
            return {"kind": "APIVersions", "versions": ["v1"]}
        if parts == ["apis"]:
            groups = sorted({v.split("/")[0] for v in self.served if "/" in v})
            return {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [
                    {
                        "name": g,
                        "versions": [{"groupVersion": v, "version": v.split("/")[1]}],
                        "preferredVersion": {"groupVersion": v, "version": v.split("/")[1]},
                    }
                    for g in groups
                    for v in self.served
                    if v.startswith(g + "/")
                ],
            }
        if parts == ["api", "v1"] or (len(parts) == 3 and parts[0] == "apis"):
            api_version = "/".join(parts[1:])
            if api_version not in self.served:
                return None
            return {
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": api_version,
                "resources": [
                    {"name": name, "kind": kind, "namespaced": namespaced, "verbs": ["get"]}
                    for plural, kind, namespaced in self.served[api_version]
                    # a subresource is listed beside its resource, with the same kind
                    for name in (plural, f"{plural}/status")
                ],
            }
        return None

    def _target(self, parts: list[str]) -> tuple[str, str, str, str, str | None] | None:
        """(apiVersion, plural, kind, namespace, name or None) of an object or collection path."""
        if parts[:1] == ["api"]:
            api_version, rest = "/".join(parts[1:2]), parts[2:]
        elif parts[:1] == ["apis"]:
            api_version, rest = "/".join(parts[1:3]), parts[3:]
        else:
            return None
        namespace = ""
        if rest[:1] == ["namespaces"] and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        if not 1 <= len(rest) <= 2:
            return None
        for plural, kind, namespaced in self.served.get(api_version, []):
            if plural == rest[0] and namespaced == bool(namespace):
                return api_version, plural, kind, namespace, rest[1] if len(rest) == 2 else None
        return None

    def _read(self, key: Key, plural: str) -> tuple[int, dict[str, Any]]:
        obj = self.objects.get(key)
        return (200, obj) if obj is not None else _not_found(plural, key[3])

    def _list(
        self, api_version: str, plural: str, kind: str, namespace: str, query: dict[str, str]
    ) -> dict[str, Any]:
        selector = query.get("labelSelector", "")
        items = []
        for key, obj in sorted(self.objects.items()):
            if key[:2] != (api_version, plural) or (namespace and key[2] != namespace):
                continue
            if _matches(obj["metadata"].get("labels") or {}, selector):
                items.append({k: v for k, v in obj.items() if k not in ("kind", "apiVersion")})
        return {
            "kind": f"{kind}List",
            "apiVersion": api_version,
            "metadata": {"resourceVersion": str(self._version)},
            "items": items,
        }

    def _apply(
        self, key: Key, kind: str, query: dict[str, str], content_type: str, body: bytes
    ) -> tuple[int, dict[str, Any]]:
        if content_type != APPLY:
            return _status(415, f"only {APPLY} is served by this fake", "UnsupportedMediaType")
        manager = query.get("fieldManager")
        if not manager:
            return _status(422, "fieldManager: Required value: is required for apply patch")
        try:
            given = json.loads(body)
        except ValueError:
            return _status(400, "the body is not JSON (a subset of YAML)", "BadRequest")
        meta = given.get("metadata") or {}
        api_version, _, namespace, name = key
        if (given.get("apiVersion"), given.get("kind"), meta.get("name")) != (
            api_version,
            kind,
            name,
        ) or meta.get("namespace", namespace) != namespace:
            return _status(400, "apiVersion, kind, name or namespace do not match the path")
        live = self.objects.get(key)
        managers = {m["manager"] for m in (live or {}).get("metadata", {}).get("managedFields", [])}
        if live is not None and managers - {manager} and query.get("force") != "true":
            return _status(409, f"Apply failed with conflicts with {sorted(managers)}", "Conflict")
        if live is not None and self.applied.get((key, manager)) == given:
            return 200, live  # identical apply: no change at all
        self.applied[(key, manager)] = given
        return (200 if live else 201), self._store(key, given, live, manager)

    def _store(
        self, key: Key, given: dict[str, Any], live: dict[str, Any] | None, manager: str
    ) -> dict[str, Any]:
        meta = dict(given["metadata"])
        content = {k: v for k, v in given.items() if k not in ("metadata", "status")}
        old = {k: v for k, v in (live or {}).items() if k not in ("metadata", "status")}
        if given["kind"] == "Deployment":  # the API server's defaulting
            content["spec"] = {"replicas": 1, **content.get("spec", {})}
        generation = 1
        if live is not None:
            generation = live["metadata"]["generation"] + (content != old)
        meta.update(
            namespace=key[2],
            uid=(live or {}).get("metadata", {}).get("uid", str(uuid.uuid4())),
            generation=generation,
            resourceVersion=self._next_version(),
            managedFields=[{"manager": manager, "operation": "Apply", "fieldsType": "FieldsV1"}],
        )
        obj = {**content, "metadata": meta}
        if live is not None and "status" in live:
            obj["status"] = live["status"]
        self.objects[key] = obj
        return obj

    def _next_version(self) -> str:
        self._version += 1
        return str(self._version)


def _matches(labels: dict[str, str], selector: str) -> bool:
    """Equality-based label selectors: ``k=v``, ``k==v``, ``k!=v`` and ``k`` (exists)."""
    for term in filter(None, selector.split(",")):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key) != value:
                return False
        elif term not in labels:
            return False
    return True


def _status(code: int, message: str, reason: str = "Invalid") -> tuple[int, dict[str, Any]]:
    return code, {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _not_found(plural: str, name: str) -> tuple[int, dict[str, Any]]:
    return _status(404, f'{plural} "{name}" not found', "NotFound")


def _handler(fake: FakeKube) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # else each answer waits ~40 ms for a delayed ACK

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, doc = fake.handle(self.command, self.path, headers, body)
            data = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PATCH = do_DELETE = do_POST = do_PUT = _serve

        def log_message(self, *_: object) -> None:  # keep test output clean
            pass

    return Handler
