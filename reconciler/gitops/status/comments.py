"""One sticky comment per pull request: created once, then edited in place on every push.

Reviewers want the latest preview where the last one was, not a new comment per push (the
Atlantis habit). The comment is found again by the hidden marker on its last line (and, when
known, by its author, so a reviewer quoting our comment is never edited): GitHub and Gitea
``/repos/{o}/{r}/issues/{n}/comments`` and ``PATCH /repos/{o}/{r}/issues/comments/{id}``,
GitLab ``/projects/:id/merge_requests/:iid/notes`` and ``PUT .../notes/:id``. An unchanged body
is not sent again, and only a missing comment is created, so nothing is ever duplicated.

``ForgeApi`` (token, headers, error translation) is shared with ``checks``; errors are the
forge reporter's ``ReportError``, so callers retry them the same way.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

from reconciler.gitops.status.forge import STATES, auth_headers, http_client, retry_after
from reconciler.gitops.status.reporter import (
    FORGE_REJECTED,
    FORGE_TOKEN_MISSING,
    FORGE_UNAVAILABLE,
    ReportError,
)

if TYPE_CHECKING:
    import httpx

PAGE_SIZE = 100
MAX_PAGES = 50
"""5,000 comments: past that, a pull request is not one we can read to the end anyway."""


class ForgeApi:
    """Authenticated JSON requests to one repository on one forge."""

    def __init__(
        self,
        kind: str,
        url: str,
        repository: str,
        token_env: str,
        *,
        environ: Mapping[str, str] = os.environ,
        client: httpx.Client | None = None,
    ) -> None:
        if kind not in STATES:
            raise ValueError(f"forge kind {kind!r}: use one of {', '.join(sorted(STATES))}")
        self.kind = kind
        self.base = url.rstrip("/")
        self.repository = repository
        self._token_env = token_env
        self._environ = environ
        self._client = client or http_client()

    def __repr__(self) -> str:  # never the token
        return f"ForgeApi({self.kind}, {self.base}, {self.repository})"

    @property
    def repo_path(self) -> str:
        """``/repos/o/r`` on GitHub and Gitea, ``/projects/<id or url-encoded path>`` on GitLab."""
        if self.kind == "gitlab":
            project = self.repository
            return f"/projects/{project if project.isdigit() else quote(project, safe='')}"
        return f"/repos/{self.repository}"

    def request(
        self, method: str, path: str, *, body: Any = None, params: Mapping[str, Any] | None = None
    ) -> Any:
        token = self._environ.get(self._token_env, "")
        if not token:
            raise ReportError(
                FORGE_TOKEN_MISSING,
                f"environment variable {self._token_env} is not set",
                retryable=False,
            )
        url = self.base + path
        import httpx  # noqa: PLC0415 - loaded by http_client() or the caller's client

        try:
            response = self._client.request(
                method, url, json=body, params=params, headers=auth_headers(self.kind, token)
            )
        except httpx.HTTPError as exc:
            raise ReportError(
                FORGE_UNAVAILABLE, f"{self.kind} at {self.base}: {type(exc).__name__}: {exc}"
            ) from exc
        code = response.status_code
        if code < 300:
            return response.json() if response.content else None
        text = " ".join(response.text.split())[:200]
        where = f"{self.kind} {method} {path}: HTTP {code}: {text}"
        limited = code == 429 or (code == 403 and response.headers.get("retry-after"))
        if limited or code >= 500 or code == 408:
            raise ReportError(FORGE_UNAVAILABLE, where, retry_after=retry_after(response))
        raise ReportError(FORGE_REJECTED, where, retryable=False)

    def pages(self, path: str) -> Iterator[Any]:
        """Every item of a paginated list (GitHub ``per_page``, Gitea ``limit``, GitLab both)."""
        for page in range(1, MAX_PAGES + 1):
            params: dict[str, Any] = {"per_page": PAGE_SIZE, "limit": PAGE_SIZE, "page": page}
            if self.kind == "gitlab":
                params["sort"] = "asc"
            items = self.request("GET", path, params=params)
            if not isinstance(items, list):
                return
            yield from items
            if len(items) < PAGE_SIZE:
                return

    def close(self) -> None:
        self._client.close()


@dataclass(frozen=True, slots=True)
class CommentResult:
    action: Literal["created", "updated", "unchanged"]
    id: int


class PullRequestComments:
    """The sticky comment on pull (merge) requests of one repository."""

    def __init__(self, api: ForgeApi, *, author: str | None = None) -> None:
        self._api = api
        self._author = author

    def _thread(self, number: int) -> str:
        if self._api.kind == "gitlab":
            return f"{self._api.repo_path}/merge_requests/{number}/notes"
        return f"{self._api.repo_path}/issues/{number}/comments"

    def _one(self, number: int, comment_id: int) -> tuple[str, str]:
        if self._api.kind == "gitlab":
            return "PUT", f"{self._api.repo_path}/merge_requests/{number}/notes/{comment_id}"
        return "PATCH", f"{self._api.repo_path}/issues/comments/{comment_id}"

    def find(self, number: int, marker: str) -> tuple[int, str] | None:
        """Our comment (id, body): the oldest whose last line is ``marker`` and, when an author
        is configured, written by it."""
        for item in self._api.pages(self._thread(number)):
            if not isinstance(item, dict) or item.get("system"):
                continue
            body = item.get("body")
            if not isinstance(body, str) or body.rstrip().splitlines()[-1:] != [marker]:
                continue
            if self._author is not None and _author(item) != self._author:
                continue
            return int(item["id"]), body
        return None

    def upsert(self, number: int, body: str, marker: str) -> CommentResult:
        """Create the comment, or edit ours in place; nothing is sent for an unchanged body."""
        if body.rstrip().splitlines()[-1:] != [marker]:
            raise ValueError("the comment's last line must be its marker")
        found = self.find(number, marker)
        if found is None:
            created = self._api.request("POST", self._thread(number), body={"body": body})
            return CommentResult("created", int(created["id"]))
        comment_id, current = found
        if current.rstrip() == body.rstrip():
            return CommentResult("unchanged", comment_id)
        method, path = self._one(number, comment_id)
        self._api.request(method, path, body={"body": body})
        return CommentResult("updated", comment_id)


def _author(item: Mapping[str, Any]) -> str | None:
    who = item.get("user") or item.get("author") or {}
    if not isinstance(who, Mapping):
        return None
    name = who.get("login") or who.get("username")
    return name if isinstance(name, str) else None
