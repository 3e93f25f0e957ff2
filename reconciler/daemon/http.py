"""The daemon's HTTP server: probes, metrics, forge webhooks and the read-only ``/api/v1``.

``reconciler run`` builds an ``ApiServer`` with ``Handlers`` (what answers) and ``Limits`` (what it
refuses), starts it in a thread next to the workers and stops it on SIGTERM. The standard
library's ``ThreadingHTTPServer`` is enough for a handful of probes and webhooks a minute; the
work a webhook asks for happens on the work queue, never in the request thread.

Every refusal is an RFC 9457 problem document (``problems.py``): no HTML, no traceback, no server
version. Requests speak HTTP/1.0 semantics (one request per connection), which keeps a slow or
idle client from holding a thread past the socket timeout.
"""

from __future__ import annotations

import io
import json
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from typing import Any, cast
from urllib.parse import urlsplit

import structlog
from prometheus_client.exposition import choose_encoder

from reconciler.catalogue import Code
from reconciler.daemon import webhooks
from reconciler.daemon.metrics import DaemonMetrics
from reconciler.daemon.problems import CONTENT_TYPE as PROBLEM_TYPE
from reconciler.daemon.problems import FieldError, Problem
from reconciler.daemon.webhooks import DeliveryCache, ForgeEvent, Ignored, Provider

log = structlog.get_logger("reconciler.daemon.http")

JsonObject = Mapping[str, Any]
CONTENT_LENGTH = re.compile(r"[0-9]{1,15}")
RUNS_PREFIX = "/api/v1/runs/"
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True, slots=True)
class ReadinessCheck:
    """``check`` returns None when ready, or says what is wrong; it bounds its own time."""

    name: str
    check: Callable[[], str | None]


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiReaders:
    """Read-only views for ``/api/v1``; ``run`` returns None for an unknown id."""

    environments: Callable[[], Sequence[JsonObject]]
    workloads: Callable[[], Sequence[JsonObject]]
    run: Callable[[str], JsonObject | None]


@dataclass(frozen=True, slots=True, kw_only=True)
class Webhooks:
    """A forge without a secret has no webhook (404): unsigned deliveries are never accepted.

    ``on_event`` runs in the request thread, so it only enqueues; it returns True when the event
    concerns a watched repository and ref (answered 202) and False otherwise (200, ignored).
    """

    secrets: Mapping[Provider, bytes] = field(repr=False)
    on_event: Callable[[ForgeEvent], bool]
    deliveries: DeliveryCache


@dataclass(frozen=True, slots=True, kw_only=True)
class Handlers:
    metrics: DaemonMetrics
    webhooks: Webhooks
    api: ApiReaders
    readiness: tuple[ReadinessCheck, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    max_body_bytes: int = webhooks.MAX_BODY_BYTES
    max_request_line: int = 8 * 1024
    max_header_bytes: int = 32 * 1024
    socket_timeout: float = 10.0  # per read or write on the socket
    body_timeout: float = 30.0  # for the whole body, against a client that trickles it
    max_connections: int = 64  # more are closed at once rather than queued


@dataclass(frozen=True, slots=True)
class _Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    unread_body: int = 0  # bytes the client still sends; drained before closing (see _linger)


class _Refused(Exception):
    """Raised while reading a request to answer at once; carries the answer."""

    def __init__(self, response: _Response, result: str) -> None:
        super().__init__(response.status)
        self.response = response
        self.result = result


def _json(status: int, value: object) -> _Response:
    return _Response(status, json.dumps(value, sort_keys=True).encode())


def _problem(
    code: Code,
    status: int,
    detail: str,
    instance: str,
    *,
    errors: tuple[FieldError, ...] = (),
    headers: tuple[tuple[str, str], ...] = (),
    unread_body: int = 0,
) -> _Response:
    body = Problem(code, status, detail, instance, errors).body()
    return _Response(status, body, PROBLEM_TYPE, headers, unread_body)


class ApiServer:
    """Bound when built (``port`` is known before ``start``); ``stop`` returns promptly."""

    def __init__(
        self, listen: tuple[str, int], handlers: Handlers, limits: Limits | None = None
    ) -> None:
        self._server = _Server(listen, handlers, limits or Limits())
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="reconciler-http",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting and close the socket; requests in flight finish in their threads."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> ApiServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, listen: tuple[str, int], handlers: Handlers, limits: Limits) -> None:
        self.handlers = handlers
        self.limits = limits
        self._slots = threading.BoundedSemaphore(limits.max_connections)
        if ":" in listen[0]:
            self.address_family = socket.AF_INET6
        super().__init__(listen, _Handler)

    def server_bind(self) -> None:
        """Skip ``HTTPServer``'s reverse DNS lookup of the listen address: it can stall startup."""
        TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            log.warning("http connection refused: too many connections")
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            log.info("http client went away", client=str(client_address[0]))
        else:
            log.exception("http connection failed", client=str(client_address[0]))


class _Handler(BaseHTTPRequestHandler):
    server_version = "reconciler"
    sys_version = ""
    raw_requestline: bytes  # set by the base class before ``parse_request``

    @property
    def _srv(self) -> _Server:
        return cast(_Server, self.server)

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self._srv.limits.socket_timeout)

    def version_string(self) -> str:
        return self.server_version

    # -- reading the request ----------------------------------------------------------------

    def parse_request(self) -> bool:
        limits = self._srv.limits
        if len(self.raw_requestline) > limits.max_request_line:
            self.requestline, self.request_version, self.command = "", "HTTP/1.0", ""
            self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG, "the request line is too long")
            return False
        if not super().parse_request():
            return False
        if self.request_version == "HTTP/0.9":
            self.send_error(HTTPStatus.BAD_REQUEST, "HTTP/0.9 is not supported")
            return False
        size = sum(len(name) + len(value) + 4 for name, value in self.headers.items())
        if size > limits.max_header_bytes:
            self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "the headers are too large")
            return False
        return True

    def _path(self) -> str:
        return urlsplit(getattr(self, "path", "")).path

    def _read_body(self) -> bytes:
        """The body by its Content-Length, under the size limit and the whole-body deadline."""
        instance, limit = self._path(), self._srv.limits.max_body_bytes
        declared = self.headers.get_all("Content-Length") or []
        if self.headers.get("Transfer-Encoding") or not declared:
            raise _Refused(
                _problem(Code.BAD_REQUEST, 411, "a Content-Length header is needed", instance),
                "invalid",
            )
        if len(declared) > 1 or not CONTENT_LENGTH.fullmatch(declared[0].strip()):
            raise _Refused(
                _problem(Code.BAD_REQUEST, 400, "Content-Length is not one number", instance),
                "invalid",
            )
        length = int(declared[0].strip())
        if length > limit:
            detail = f"the body of {length} bytes is over the limit of {limit} bytes"
            response = _problem(Code.REQUEST_TOO_LARGE, 413, detail, instance, unread_body=length)
            raise _Refused(response, "too_large")
        return self._read_exactly(length)

    def _read_exactly(self, length: int) -> bytes:
        deadline = time.monotonic() + self._srv.limits.body_timeout
        chunks: list[bytes] = []
        remaining = length
        while remaining:
            if time.monotonic() > deadline:
                raise TimeoutError("the body took too long to arrive")
            chunk = cast(io.BufferedReader, self.rfile).read1(min(remaining, 64 * 1024))
            if not chunk:
                raise ConnectionError("the client closed the connection mid-body")
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)

    def _forge_headers(self) -> dict[str, str]:
        """Lower-case names; a repeated header is joined, so a doubled signature fails."""
        merged: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            merged[key] = f"{merged[key]}, {value}" if key in merged else value
        return merged

    # -- dispatching ----------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_TRACE = do_GET

    def _dispatch(self) -> None:
        path = self._path()
        try:
            response = self._route(path)
        except (TimeoutError, ConnectionError) as exc:
            log.info("http request abandoned", path=path, reason=str(exc))
            self.close_connection = True
            return
        except Exception:
            log.exception("http request failed", method=self.command, path=path)
            response = _problem(Code.INTERNAL_ERROR, 500, "the request failed", path)
        self._write(response)

    def _route(self, path: str) -> _Response:
        route = _ROUTES.get(path)
        if route is None and path.startswith(RUNS_PREFIX):
            route = ("GET", _Handler._run)
        if route is None:
            return _problem(Code.ENDPOINT_NOT_FOUND, 404, f"no endpoint at {path}", path)
        method, handle = route
        if self.command != method:
            detail = f"{path} answers {method} only"
            return _problem(
                Code.METHOD_NOT_ALLOWED, 405, detail, path, headers=(("Allow", method),)
            )
        return handle(self)

    # -- endpoints ------------------------------------------------------------------------------

    def _healthz(self) -> _Response:
        return _json(200, {"status": "ok"})

    def _readyz(self) -> _Response:
        failures: list[FieldError] = []
        for check in self._srv.handlers.readiness:
            try:
                problem = check.check()
            except Exception as exc:
                log.exception("readiness check raised", check=check.name)
                problem = f"the check raised {type(exc).__name__}"
            if problem is not None:
                failures.append(FieldError(f"{check.name}: {problem}", f"#/checks/{check.name}"))
        if not failures:
            names = [check.name for check in self._srv.handlers.readiness]
            return _json(200, {"status": "ready", "checks": names})
        detail = f"{len(failures)} readiness check(s) failed"
        return _problem(Code.NOT_READY, 503, detail, "/readyz", errors=tuple(failures))

    def _metrics(self) -> _Response:
        encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
        return _Response(200, encoder(self._srv.handlers.metrics.registry), content_type)

    def _environments(self) -> _Response:
        return _json(200, {"items": list(self._srv.handlers.api.environments())})

    def _workloads(self) -> _Response:
        return _json(200, {"items": list(self._srv.handlers.api.workloads())})

    def _run(self) -> _Response:
        path = self._path()
        run_id = path.removeprefix(RUNS_PREFIX)
        run = self._srv.handlers.api.run(run_id) if RUN_ID.fullmatch(run_id) else None
        if run is None:
            return _problem(Code.RUN_NOT_FOUND, 404, f"no run with id {run_id!r}", path)
        return _json(200, run)

    def _webhook(self, provider: Provider) -> _Response:
        try:
            response, result = self._deliver(provider)
        except _Refused as refused:
            response, result = refused.response, refused.result
        self._srv.handlers.metrics.webhook_deliveries.labels(provider.value, result).inc()
        return response

    def _deliver(self, provider: Provider) -> tuple[_Response, str]:
        """Refuse before reading what can be refused unread; change nothing until verified."""
        hooks, path = self._srv.handlers.webhooks, self._path()
        secret = hooks.secrets.get(provider, b"")
        if not secret:
            detail = f"no secret is configured for {provider.value} webhooks"
            response = _problem(Code.WEBHOOK_NOT_CONFIGURED, 404, detail, path)
            raise _Refused(response, "not_configured")
        body = self._read_body()
        try:
            event = webhooks.receive(
                provider, self._forge_headers(), body, secret, self._srv.limits.max_body_bytes
            )
        except webhooks.SignatureError as exc:
            detail = str(exc)
            raise _Refused(
                _problem(Code.WEBHOOK_SIGNATURE_INVALID, 401, detail, path), "unauthorized"
            ) from exc
        except webhooks.PayloadError as exc:
            errors = (FieldError(str(exc), exc.pointer),) if exc.pointer else ()
            response = _problem(Code.WEBHOOK_PAYLOAD_INVALID, 400, str(exc), path, errors=errors)
            raise _Refused(response, "invalid") from exc
        if isinstance(event, Ignored):
            return _json(200, {"status": "ignored", "reason": event.reason}), "ignored"
        return self._hand_over(hooks, event)

    def _hand_over(self, hooks: Webhooks, event: ForgeEvent) -> tuple[_Response, str]:
        if hooks.deliveries.check_and_add(event.provider, event.delivery_id):
            return _json(200, {"status": "duplicate", "delivery": event.delivery_id}), "duplicate"
        try:
            wanted = hooks.on_event(event)
        except Exception:
            hooks.deliveries.forget(event.provider, event.delivery_id)  # let the forge redeliver
            raise
        if not wanted:
            reason = "no environment follows this repository and ref"
            return _json(200, {"status": "ignored", "reason": reason}), "ignored"
        return _json(202, {"status": "accepted", "delivery": event.delivery_id}), "accepted"

    # -- writing the response -------------------------------------------------------------------

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The base class's errors (bad request line, unknown method, ...) as problems too."""
        status = HTTPStatus(code)
        api_code = {
            HTTPStatus.REQUEST_URI_TOO_LONG: Code.REQUEST_TOO_LARGE,
            HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE: Code.REQUEST_TOO_LARGE,
            HTTPStatus.INTERNAL_SERVER_ERROR: Code.INTERNAL_ERROR,
        }.get(status, Code.BAD_REQUEST)
        self.close_connection = True
        if not self.request_version.startswith("HTTP/1."):
            self.request_version = "HTTP/1.0"  # answer with headers, never the HTTP/0.9 way
        self._write(_problem(api_code, status.value, message or status.phrase, self._path()))

    def _write(self, response: _Response) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Cache-Control", "no-store")
        for name, value in response.headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)
        if response.unread_body:
            self._linger(response.unread_body)

    def _linger(self, unread: int) -> None:
        """Read and drop what the client still sends, within a budget of bytes and time, before
        closing: closing with unread data makes the kernel send a reset, which can destroy the
        answer before the client reads it."""
        budget = min(unread, 4 * self._srv.limits.max_body_bytes)
        deadline = time.monotonic() + 2.0
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(0.5)
            while budget > 0 and time.monotonic() < deadline:
                chunk = self.connection.recv(64 * 1024)
                if not chunk:
                    break
                budget -= len(chunk)
        except OSError:
            pass
        self.close_connection = True

    # -- logging ----------------------------------------------------------------------------

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        log.debug("http request", method=self.command, path=self._path(), status=str(code))

    def log_message(self, format: str, *args: Any) -> None:
        log.info("http " + (format % args))


_ROUTES: Mapping[str, tuple[str, Callable[[_Handler], _Response]]] = {
    "/healthz": ("GET", _Handler._healthz),
    "/readyz": ("GET", _Handler._readyz),
    "/metrics": ("GET", _Handler._metrics),
    "/api/v1/environments": ("GET", _Handler._environments),
    "/api/v1/workloads": ("GET", _Handler._workloads),
    **{
        f"/webhooks/{provider}": ("POST", partial(_Handler._webhook, provider=provider))
        for provider in Provider
    },
}
"""Path to (method, handler); runs, under ``RUNS_PREFIX``, are matched by prefix."""
