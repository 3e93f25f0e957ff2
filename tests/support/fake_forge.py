"""A FAKE forge for tests: commit statuses, pull-request comments and check runs.

No forge can run where the tests run, so this stands in for all three, on 127.0.0.1 at a random
port, in a thread. It answers as the forges do for what the forge reporter sends:

- GitHub ``POST /repos/{o}/{r}/statuses/{sha}`` with ``Authorization: Bearer <token>``;
- Gitea ``POST /api/v1/repos/{o}/{r}/statuses/{sha}`` with ``Authorization: token <token>``;
- GitLab ``POST /api/v4/projects/{id}/statuses/{sha}`` with ``PRIVATE-TOKEN: <token>``;
- a wrong or missing token: 401; a state the forge does not know: 422 (GitLab 400);
  a GitHub description over 140 characters: 422; anything else: 404.

Pull-request comments (``comments`` holds them, by id, with their author ``user``):

- GitHub ``GET|POST /repos/{o}/{r}/issues/{n}/comments`` (``per_page``, ``page``) and
  ``PATCH /repos/{o}/{r}/issues/comments/{id}``; Gitea the same under ``/api/v1`` (``limit``);
- GitLab ``GET|POST /api/v4/projects/{id}/merge_requests/{iid}/notes`` and
  ``PUT .../notes/{note_id}``; a body over 65,536 characters: 422 (GitLab 400).

GitHub check runs (``check_runs`` by id): ``POST /repos/{o}/{r}/check-runs`` and
``PATCH /repos/{o}/{r}/check-runs/{id}``; annotations are appended across requests, more than
50 in one request is 422, as is an unknown status, conclusion or annotation level.

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

from tests.support.loopback import close, serve

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
COMMENT_ROUTES = (
    ("gitea", re.compile(r"^/api/v1/repos/(?P<repo>[^/]+/[^/]+)/issues/(?P<n>\d+)/comments$")),
    ("gitea", re.compile(r"^/api/v1/repos/(?P<repo>[^/]+/[^/]+)/issues/comments/(?P<id>\d+)$")),
    (
        "gitlab",
        re.compile(r"^/api/v4/projects/(?P<repo>[^/]+)/merge_requests/(?P<n>\d+)/notes$"),
    ),
    (
        "gitlab",
        re.compile(
            r"^/api/v4/projects/(?P<repo>[^/]+)/merge_requests/(?P<n>\d+)/notes/(?P<id>\d+)$"
        ),
    ),
    ("github", re.compile(r"^/repos/(?P<repo>[^/]+/[^/]+)/issues/(?P<n>\d+)/comments$")),
    ("github", re.compile(r"^/repos/(?P<repo>[^/]+/[^/]+)/issues/comments/(?P<id>\d+)$")),
)
CHECK_ROUTE = re.compile(r"^/repos/(?P<repo>[^/]+/[^/]+)/check-runs(?:/(?P<id>\d+))?$")
COMMENT_LIMIT = 65_536
ANNOTATIONS_PER_REQUEST = 50
CHECK_STATUSES = {"queued", "in_progress", "completed"}
CHECK_CONCLUSIONS = {
    "success",
    "failure",
    "neutral",
    "cancelled",
    "skipped",
    "timed_out",
    "action_required",
}
ANNOTATION_LEVELS = {"notice", "warning", "failure"}
BOT = "reconciler-bot"
"""The login (GitLab: username) the fake's token belongs to."""
HOLD_LIMIT = 10.0
"""A held request is answered after this many seconds even without ``release()``."""


@dataclass(frozen=True)
class Recorded:
    forge: str
    path: str
    repository: str
    sha: str
    headers: dict[str, str]
    body: Any
    answered: int
    method: str = "POST"
    query: str = ""


@dataclass
class Comment:
    id: int
    forge: str
    repository: str
    number: int
    body: str
    user: str = BOT


@dataclass
class FakeForge:
    """The fake's state; ``url`` once started. Use as a context manager."""

    token: str = "fake-forge-token"
    requests: list[Recorded] = field(default_factory=list)
    comments: dict[int, Comment] = field(default_factory=dict)
    check_runs: dict[int, dict[str, Any]] = field(default_factory=dict)
    _next_id: int = 1000
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
        self._server = serve(_handler(self))
        return self

    def __exit__(self, *_: object) -> None:
        self.release()
        close(self._server)

    # -- the API ------------------------------------------------------------------------------

    def add_comment(
        self, forge: str, repository: str, number: int, body: str, *, user: str = BOT
    ) -> Comment:
        """A comment already on the pull request (someone else's, or ours from before)."""
        with self._arrived:
            comment = Comment(self._new_id(), forge, repository, number, body, user)
            self.comments[comment.id] = comment
            return comment

    def comments_on(self, forge: str, repository: str, number: int) -> list[Comment]:
        with self._arrived:
            return [
                c
                for c in self.comments.values()
                if (c.forge, c.repository, c.number) == (forge, repository, number)
            ]

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def handle(
        self, path: str, headers: dict[str, str], raw: bytes, method: str = "POST"
    ) -> tuple[int, Any, dict[str, str]]:
        path, _, query = path.partition("?")
        with self._arrived:
            self._in_flight += 1
            self._arrived.notify_all()
        self._gate.wait(HOLD_LIMIT)
        with self._arrived:
            self._in_flight -= 1
            answer = self._answer(method, path, query, headers, raw)
            forge, repository, sha = _route(path)
            if not forge:
                forge, repository = _other_route(path)
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                body = {}
            self.requests.append(
                Recorded(forge, path, repository, sha, headers, body, answer[0], method, query)
            )
            self._arrived.notify_all()
            return answer

    def _answer(
        self, method: str, path: str, query: str, headers: dict[str, str], raw: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        if self._fail:
            status, retry_after = self._fail.pop(0)
            extra = {} if retry_after is None else {"Retry-After": retry_after}
            return status, {"message": "fake failure"}, extra
        other, _ = _other_route(path)
        if other:
            if not self._authorised(other, headers):
                return 401, {"message": "Bad credentials"}, {}
            return self._api(method, path, query, raw)
        if method != "POST":
            return 404, {"message": "Not Found"}, {}
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

    def _api(
        self, method: str, path: str, query: str, raw: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        """Comments and check runs (the lock is held)."""
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            return 400, {"message": "Problems parsing JSON"}, {}
        check = CHECK_ROUTE.match(path)
        if check:
            return self._check_run(method, check["repo"], check["id"], body)
        for forge, pattern in COMMENT_ROUTES:
            match = pattern.match(path)
            if match is None:
                continue
            groups = match.groupdict()
            if groups.get("id") is not None:
                return self._edit(forge, method, int(groups["id"]), body)
            return self._thread(forge, method, match["repo"], int(groups["n"]), query, body)
        return 404, {"message": "Not Found"}, {}

    def _thread(
        self, forge: str, method: str, repository: str, number: int, query: str, body: Any
    ) -> tuple[int, Any, dict[str, str]]:
        if method == "GET":
            params = dict(p.partition("=")[::2] for p in query.split("&") if p)
            size = int(params.get("per_page") or params.get("limit") or 30)
            page = int(params.get("page") or 1)
            found = [
                c
                for c in self.comments.values()
                if (c.forge, c.repository, c.number) == (forge, repository, number)
            ]
            chunk = found[(page - 1) * size : page * size]
            return 200, [_comment_json(c) for c in chunk], {}
        if method != "POST":
            return 405, {"message": "Method Not Allowed"}, {}
        text = body.get("body") if isinstance(body, dict) else None
        if not isinstance(text, str) or len(text) > COMMENT_LIMIT:
            return (400 if forge == "gitlab" else 422), {"message": "body is invalid"}, {}
        comment = Comment(self._new_id(), forge, repository, number, text)
        self.comments[comment.id] = comment
        return 201, _comment_json(comment), {}

    def _edit(
        self, forge: str, method: str, comment_id: int, body: Any
    ) -> tuple[int, Any, dict[str, str]]:
        if method != ("PUT" if forge == "gitlab" else "PATCH"):
            return 405, {"message": "Method Not Allowed"}, {}
        comment = self.comments.get(comment_id)
        if comment is None or comment.forge != forge:
            return 404, {"message": "Not Found"}, {}
        if comment.user != BOT:
            return 403, {"message": "only the author may edit a comment"}, {}
        text = body.get("body") if isinstance(body, dict) else None
        if not isinstance(text, str) or len(text) > COMMENT_LIMIT:
            return (400 if forge == "gitlab" else 422), {"message": "body is invalid"}, {}
        comment.body = text
        return 200, _comment_json(comment), {}

    def _check_run(
        self, method: str, repository: str, run_id: str | None, body: Any
    ) -> tuple[int, Any, dict[str, str]]:
        if not isinstance(body, dict):
            return 422, {"message": "Invalid request"}, {}
        problem = _check_problem(body)
        if problem:
            return 422, {"message": problem}, {}
        annotations = list((body.get("output") or {}).get("annotations") or [])
        if run_id is None:
            if method != "POST" or not body.get("name") or not body.get("head_sha"):
                return 422, {"message": "name and head_sha are required"}, {}
            new_id = self._new_id()
            run: dict[str, Any] = {"id": new_id, "repository": repository, "annotations": []}
            self.check_runs[new_id] = run
        else:
            if method != "PATCH":
                return 405, {"message": "Method Not Allowed"}, {}
            found = self.check_runs.get(int(run_id))
            if found is None:
                return 404, {"message": "Not Found"}, {}
            run = found
        for key, value in body.items():
            if key == "output":
                run["output"] = {k: v for k, v in value.items() if k != "annotations"}
            else:
                run[key] = value
        run["annotations"] = list(run["annotations"]) + annotations
        return (201 if run_id is None else 200), {"id": run["id"], "status": run.get("status")}, {}

    def _authorised(self, forge: str, headers: dict[str, str]) -> bool:
        if forge == "gitlab":
            return headers.get("private-token") == self.token
        scheme = "Bearer" if forge == "github" else "token"
        return headers.get("authorization") == f"{scheme} {self.token}"


def _comment_json(comment: Comment) -> dict[str, Any]:
    if comment.forge == "gitlab":
        author = {"username": comment.user}
        return {"id": comment.id, "body": comment.body, "author": author, "system": False}
    return {"id": comment.id, "body": comment.body, "user": {"login": comment.user}}


def _check_problem(body: dict[str, Any]) -> str:
    if "status" in body and body["status"] not in CHECK_STATUSES:
        return f"status {body['status']!r} is not valid"
    if "conclusion" in body and body["conclusion"] not in CHECK_CONCLUSIONS:
        return f"conclusion {body['conclusion']!r} is not valid"
    if body.get("status") == "completed" and "conclusion" not in body:
        return "a completed check run needs a conclusion"
    output = body.get("output") or {}
    if output and (not output.get("title") or not output.get("summary")):
        return "output needs a title and a summary"
    if len(output.get("summary") or "") > COMMENT_LIMIT - 1:
        return "output.summary is too long (maximum is 65535 characters)"
    annotations = output.get("annotations") or []
    if len(annotations) > ANNOTATIONS_PER_REQUEST:
        return f"at most {ANNOTATIONS_PER_REQUEST} annotations per request"
    wanted = {"path", "start_line", "end_line", "annotation_level", "message"}
    for a in annotations:
        if not wanted <= set(a) or a["annotation_level"] not in ANNOTATION_LEVELS:
            return f"annotation is not valid: {a!r}"
    return ""


def _other_route(path: str) -> tuple[str, str]:
    check = CHECK_ROUTE.match(path)
    if check:
        return "github", check["repo"]
    for forge, pattern in COMMENT_ROUTES:
        match = pattern.match(path)
        if match:
            return forge, match["repo"]
    return "", ""


def _route(path: str) -> tuple[str, str, str]:
    for forge, pattern in ROUTES:
        match = pattern.match(path)
        if match:
            return forge, match["repo"], match["sha"]
    return "", "", ""


def _handler(fake: FakeForge) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.do_POST()

        def do_PATCH(self) -> None:
            self.do_POST()

        def do_PUT(self) -> None:
            self.do_POST()

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            headers = {key.lower(): value for key, value in self.headers.items()}
            status, body, extra = fake.handle(self.path, headers, raw, self.command)
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
