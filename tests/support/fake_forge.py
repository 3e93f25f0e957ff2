"""A FAKE forge for tests: the commit-status endpoints of GitHub, Gitea and GitLab, nothing else.

No forge can run where the tests run, so this stands in for all three, on 127.0.0.1 at a random
port, in a thread. It answers as the forges do for what the forge reporter sends:

- GitHub ``POST /repos/{o}/{r}/statuses/{sha}`` with ``Authorization: Bearer <token>``;
- Gitea ``POST /api/v1/repos/{o}/{r}/statuses/{sha}`` with ``Authorization: token <token>``;
- GitLab ``POST /api/v4/projects/{id}/statuses/{sha}`` with ``PRIVATE-TOKEN: <token>``;
- a wrong or missing token: 401; a state the forge does not know: 422 (GitLab 400);
  a GitHub description over 140 characters: 422; anything else: 404.

``requests`` records every call; ``fail_next(status, retry_after=...)`` makes the next call
answer with an error; ``hold()`` keeps requests waiting until ``release()``, so tests can queue
statuses behind one in flight without sleeping.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

STATES = {
    "github": {"pending", "success", "failure", "error"},
    "gitea": {"pending", "success", "error", "failure", "warning"},
    "gitlab": {"pending", "running", "success", "failed", "canceled"},
}
ROUTES = (
    ("gitea", re.compile(r"^/api/v1/repos/(?P<repo>[^/]+/[^/]+)/statuses/(?P<sha>[0-9a-f]+)$")),
    ("gitlab", re.compile(r"^/api/v4/projects/(?P<repo>[^/]+)/statuses/(?P<sha>[0-9a-f]+)$")),
    ("github", re.compile(r"^/repos/(?P<repo>[^/]+/[^/]+)/statuses/(?P<sha>[0-9a-f]+)$")),
)
HOLD_LIMIT = 10.0
"""A held request is answered after this many seconds even without ``release()``."""


@dataclass(frozen=True)
class Recorded:
    forge: str
    path: str
    repository: str
    sha: str
    headers: dict[str, str]
    body: dict[str, Any]
    answered: int


@dataclass
class FakeForge:
    """The fake's state; ``url`` once started. Use as a context manager."""

    token: str = "fake-forge-token"
    requests: list[Recorded] = field(default_factory=list)
    _fail: list[tuple[int, str | None]] = field(default_factory=list)
    _gate: threading.Event = field(default_factory=threading.Event)
    _arrived: threading.Condition = field(default_factory=threading.Condition)
    _in_flight: int = 0
    _server: ThreadingHTTPServer | None = None

    def __post_init__(self) -> None:
        self._gate.set()

    @property
    def url(self) -> str:
        assert self._server is not None, "the fake forge is not running"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def fail_next(self, status: int, *, retry_after: str | None = None) -> None:
        with self._arrived:
            self._fail.append((status, retry_after))

    def hold(self) -> None:
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Recorded]:
        """The recorded requests once there are ``count`` (or more) of them."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self.requests) >= count, timeout):
                raise AssertionError(f"{len(self.requests)} requests arrived, not {count}")
            return list(self.requests)

    def wait_in_flight(self, count: int = 1, timeout: float = 5.0) -> None:
        with self._arrived:
            if not self._arrived.wait_for(lambda: self._in_flight >= count, timeout):
                raise AssertionError("no request arrived at the held fake forge")

    def __enter__(self) -> FakeForge:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        server = self._server
        threading.Thread(
            target=lambda: server.serve_forever(poll_interval=0.01), daemon=True
        ).start()
        return self

    def __exit__(self, *_: object) -> None:
        self.release()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # -- the API ------------------------------------------------------------------------------

    def handle(
        self, path: str, headers: dict[str, str], raw: bytes
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        with self._arrived:
            self._in_flight += 1
            self._arrived.notify_all()
        self._gate.wait(HOLD_LIMIT)
        with self._arrived:
            self._in_flight -= 1
            answer = self._answer(path, headers, raw)
            forge, repository, sha = _route(path)
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                body = {}
            self.requests.append(Recorded(forge, path, repository, sha, headers, body, answer[0]))
            self._arrived.notify_all()
            return answer

    def _answer(
        self, path: str, headers: dict[str, str], raw: bytes
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        if self._fail:
            status, retry_after = self._fail.pop(0)
            extra = {} if retry_after is None else {"Retry-After": retry_after}
            return status, {"message": "fake failure"}, extra
        forge, _, _ = _route(path)
        if not forge:
            return 404, {"message": "Not Found"}, {}
        if not self._authorised(forge, headers):
            return 401, {"message": "Bad credentials"}, {}
        try:
            body = json.loads(raw)
        except ValueError:
            return 400, {"message": "Problems parsing JSON"}, {}
        if body.get("state") not in STATES[forge]:
            return (400 if forge == "gitlab" else 422), {"message": "invalid state"}, {}
        if forge == "github" and len(body.get("description", "")) > 140:
            return 422, {"message": "description is too long (maximum is 140 characters)"}, {}
        return 201, {"id": len(self.requests) + 1, **body}, {}

    def _authorised(self, forge: str, headers: dict[str, str]) -> bool:
        if forge == "gitlab":
            return headers.get("private-token") == self.token
        scheme = "Bearer" if forge == "github" else "token"
        return headers.get("authorization") == f"{scheme} {self.token}"


def _route(path: str) -> tuple[str, str, str]:
    for forge, pattern in ROUTES:
        match = pattern.match(path)
        if match:
            return forge, match["repo"], match["sha"]
    return "", "", ""


def _handler(fake: FakeForge) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            headers = {key.lower(): value for key, value in self.headers.items()}
            status, body, extra = fake.handle(self.path, headers, raw)
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in extra.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_: object) -> None:
            pass

    return Handler
