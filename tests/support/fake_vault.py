"""A FAKE Vault for tests: the KV version 2 HTTP API that hvac speaks, and nothing else.

No Vault server can run where the tests run, so this one stands in for it, on 127.0.0.1 at a
random port, in a thread. It answers as Vault does for what the secret stores use:

- ``X-Vault-Token`` must be the token it was made with, else 403 ``permission denied``;
- ``GET /v1/<mount>/data/<path>[?version=n]``: the version's data and metadata, or 404 (with
  the metadata when that version was deleted);
- ``POST`` or ``PUT /v1/<mount>/data/<path>``: a new version, ``{"data": {...}}`` in the body;
- ``DELETE /v1/<mount>/data/<path>``: soft-deletes the latest version;
- ``DELETE /v1/<mount>/metadata/<path>``: forgets every version;
- an unknown mount: 404 ``no handler for route``.

``requests`` records every call (method, path, token) so tests can check what went over the
wire, and ``fail_next(status)`` makes the next call answer with an error status.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tests.support.loopback import close, serve


@dataclass
class _Version:
    data: dict[str, Any]
    created: str
    deleted: str = ""


@dataclass
class FakeVault:
    """The fake's state; ``url`` once started. Use as a context manager."""

    token: str = "fake-root-token"
    mounts: tuple[str, ...] = ("secret",)
    secrets: dict[tuple[str, str], list[_Version]] = field(default_factory=dict)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    _fail: list[int] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        assert self._server is not None, "the fake Vault is not running"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def fail_next(self, status: int) -> None:
        self._fail.append(status)

    def value(self, mount: str, path: str) -> dict[str, Any] | None:
        """The latest live version's data, as a test looks behind the API."""
        versions = self.secrets.get((mount, path))
        if not versions or versions[-1].deleted:
            return None
        return versions[-1].data

    def __enter__(self) -> FakeVault:
        self._server = serve(_handler(self))
        return self

    def __exit__(self, *_: object) -> None:
        close(self._server)

    # -- the API ------------------------------------------------------------------------------

    def handle(
        self, method: str, raw_path: str, token: str | None, body: bytes
    ) -> tuple[int, dict[str, Any] | None]:
        parts = urlsplit(raw_path)
        path = unquote(parts.path)
        with self._lock:
            self.requests.append((method, path, token))
            if self._fail:
                return self._fail.pop(0), {"errors": ["injected failure"]}
            if token != self.token:
                return 403, {"errors": ["permission denied"]}
            route = self._route(path)
            if route is None:
                return 404, {"errors": [f"no handler for route '{path.removeprefix('/v1/')}'"]}
            mount, kind, secret = route
            query = parse_qs(parts.query)
            if kind == "data" and method == "GET":
                return self._read(mount, secret, query.get("version", [""])[0])
            if kind == "data" and method in ("POST", "PUT"):
                return self._write(mount, secret, body)
            if kind == "data" and method == "DELETE":
                return self._soft_delete(mount, secret)
            if kind == "metadata" and method == "DELETE":
                self.secrets.pop((mount, secret), None)
                return 204, None
            return 405, {"errors": [f"unsupported operation {method}"]}

    def _route(self, path: str) -> tuple[str, str, str] | None:
        for mount in self.mounts:
            for kind in ("data", "metadata"):
                prefix = f"/v1/{mount}/{kind}/"
                if path.startswith(prefix) and len(path) > len(prefix):
                    return mount, kind, path[len(prefix) :]
        return None

    def _read(self, mount: str, secret: str, version: str) -> tuple[int, dict[str, Any] | None]:
        versions = self.secrets.get((mount, secret), [])
        number = int(version) if version else len(versions)
        if not 1 <= number <= len(versions):
            return 404, {"errors": []}
        found = versions[number - 1]
        metadata = {
            "created_time": found.created,
            "custom_metadata": None,
            "deletion_time": found.deleted,
            "destroyed": False,
            "version": number,
        }
        if found.deleted:
            return 404, {"data": {"data": None, "metadata": metadata}}
        return 200, {"data": {"data": found.data, "metadata": metadata}, "lease_duration": 0}

    def _write(self, mount: str, secret: str, body: bytes) -> tuple[int, dict[str, Any] | None]:
        try:
            document = json.loads(body or b"{}")
        except json.JSONDecodeError:
            return 400, {"errors": ["failed to parse JSON input"]}
        data = document.get("data") if isinstance(document, dict) else None
        if not isinstance(data, dict):
            return 400, {"errors": ["no data provided"]}
        versions = self.secrets.setdefault((mount, secret), [])
        versions.append(_Version(dict(data), _now()))
        return 200, {
            "data": {
                "created_time": versions[-1].created,
                "custom_metadata": None,
                "deletion_time": "",
                "destroyed": False,
                "version": len(versions),
            }
        }

    def _soft_delete(self, mount: str, secret: str) -> tuple[int, dict[str, Any] | None]:
        versions = self.secrets.get((mount, secret))
        if versions:
            versions[-1].deleted = _now()
        return 204, None


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _handler(vault: FakeVault) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            token = self.headers.get("X-Vault-Token")
            status, answer = vault.handle(self.command, self.path, token, body)
            payload = b"" if answer is None else json.dumps(answer).encode()
            self.send_response(status)
            if answer is not None:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: pytest shows what a failing test needs."""

    return Handler
