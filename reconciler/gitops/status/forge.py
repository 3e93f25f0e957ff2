"""Commit statuses on GitHub, Gitea and GitLab: one status per environment on each commit.

``ForgeStatuses`` is the forge reporter that ``FanOut`` drives: it maps a ``CommitStatus`` to the
forge's state words (docs/status.md has the table), sends one request per call over httpx and
translates every outcome into nothing (sent) or a ``ReportError`` that says whether and when to
try again; the lane does the retrying, so retries and coalescing share one queue. Its
``coalesce_key`` (commit, context) lets a newer status replace an unsent older one, and a token
bucket keeps it under the forge's limit for content-creating requests (GitHub: about 80 a
minute) by answering ``Throttled`` instead of sending.

The token is read from the environment variable the configuration names, at each send (so a
rotated token is picked up by a restart of nothing) and only ever placed in a request header.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Literal, Protocol
from urllib.parse import quote

from reconciler.gitops.status.model import CommitStatus, Health, Phase
from reconciler.gitops.status.reporter import (
    FORGE_REJECTED,
    FORGE_TOKEN_MISSING,
    FORGE_UNAVAILABLE,
    ReportError,
    Throttled,
)

if TYPE_CHECKING:
    import httpx

ForgeKind = Literal["github", "gitea", "gitlab"]
Outcome = Literal["pending", "running", "success", "warning", "failure", "error"]

DESCRIPTION_LIMIT = 140
"""GitHub refuses longer descriptions; the others show about as much, so all get the same."""

STATES: Mapping[str, Mapping[Outcome, str]] = {
    "github": {
        "pending": "pending",
        "running": "pending",
        "success": "success",
        "warning": "success",
        "failure": "failure",
        "error": "error",
    },
    "gitea": {
        "pending": "pending",
        "running": "pending",
        "success": "success",
        "warning": "warning",
        "failure": "failure",
        "error": "error",
    },
    "gitlab": {
        "pending": "pending",
        "running": "running",
        "success": "success",
        "warning": "success",
        "failure": "failed",
        "error": "failed",
    },
}


class ForgeSettings(Protocol):
    """What the forge reporter needs from ``reporters.forge`` in reconciler.yaml."""

    @property
    def kind(self) -> str: ...
    @property
    def url(self) -> str: ...
    @property
    def repository(self) -> str: ...
    @property
    def token_env(self) -> str: ...
    @property
    def target_url(self) -> str | None: ...


# -- what to send ------------------------------------------------------------------------------


def outcome(status: CommitStatus) -> Outcome:
    """The verdict a status gives its commit, before any forge's words for it.

    A failed run is a ``failure`` when the commit itself is wrong (input or planning codes,
    RCN-1xxx and 2xxx) and an ``error`` when applying it broke; a succeeded run whose workloads
    are degraded or missing fails too, and one still rolling out is still running.
    """
    if status.phase in (Phase.PENDING, Phase.WAITING_APPROVAL):
        return "pending"
    if status.phase is Phase.RUNNING:
        return "running"
    errors = [f for f in status.failures if f.severity == "error"]
    if status.phase is Phase.FAILED:
        blames_commit = not errors or any(_code_number(f.code) < 3000 for f in errors)
        return "failure" if blames_commit else "error"
    if status.health in (Health.DEGRADED, Health.MISSING) or errors:
        return "failure"
    if status.health is Health.PROGRESSING:
        return "running"
    return "warning" if status.failures else "success"


def description(status: CommitStatus) -> str:
    """One line of at most ``DESCRIPTION_LIMIT`` characters: the first error when there is
    one (with its file and line), else the status's message, else the plan's counts."""
    errors = [f for f in status.failures if f.severity == "error"]
    if errors:
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        text = f"{errors[0]}{more}"
    elif status.message:
        text = status.message
    elif status.phase is Phase.PENDING:
        text = "Waiting to reconcile"
    elif status.phase is Phase.WAITING_APPROVAL:
        text = f"Waiting for approval: {status.summary}"
    else:
        text = f"{status.sync}, {status.health}: {status.summary}"
    text = " ".join(text.split())
    if len(text) > DESCRIPTION_LIMIT:
        text = text[: DESCRIPTION_LIMIT - 1] + "…"
    return text


@dataclass(frozen=True, slots=True)
class StatusRequest:
    """One status as the forge's API takes it; the token is added only when sending."""

    url: str
    body: Mapping[str, str]


def status_request(
    kind: str, base_url: str, repository: str, status: CommitStatus, target_url: str | None
) -> StatusRequest:
    base = base_url.rstrip("/")
    state = STATES[kind][outcome(status)]
    body = {"state": state, "description": description(status)}
    link = status.target_url or target_url
    if link:
        body["target_url"] = link
    if kind == "gitlab":
        project = repository if repository.isdigit() else quote(repository, safe="")
        return StatusRequest(
            f"{base}/projects/{project}/statuses/{status.commit}", {**body, "name": status.context}
        )
    return StatusRequest(
        f"{base}/repos/{repository}/statuses/{status.commit}", {**body, "context": status.context}
    )


def auth_headers(kind: str, token: str) -> dict[str, str]:
    if kind == "github":
        return {
            "Authorization": f"Bearer {token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
        }
    if kind == "gitea":
        return {"Authorization": f"token {token}", "Accept": "application/json"}
    return {"PRIVATE-TOKEN": token, "Accept": "application/json"}


# -- pacing ------------------------------------------------------------------------------------


class TokenBucket:
    """``rate`` sends a minute on average, bursts of up to ``burst``; thread-safe."""

    def __init__(
        self, rate: float = 80.0, burst: int = 10, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._per_second = rate / 60.0
        self._burst = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._at = clock()
        self._lock = threading.Lock()

    def take(self) -> float:
        """0 when a send may go now (and it is counted); else the seconds until one may."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self._burst, self._tokens + (now - self._at) * self._per_second)
            self._at = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return 0.0
            return (1.0 - self._tokens) / self._per_second


# -- the reporter ------------------------------------------------------------------------------


class ForgeStatuses:
    """The forge reporter (``name = "forge"``) for one repository on one forge."""

    name = "forge"

    def __init__(
        self,
        kind: str,
        url: str,
        repository: str,
        token_env: str,
        *,
        target_url: str | None = None,
        environ: Mapping[str, str] = os.environ,
        bucket: TokenBucket | None = None,
        client: httpx.Client | None = None,
    ) -> None:
        if kind not in STATES:
            raise ValueError(f"forge kind {kind!r}: use one of {', '.join(sorted(STATES))}")
        self.kind = kind
        self._url = url
        self._repository = repository
        self._token_env = token_env
        self._target_url = target_url
        self._environ = environ
        self._bucket = bucket or TokenBucket()
        self._client = client or http_client()

    @classmethod
    def from_settings(cls, settings: ForgeSettings, **kwargs: object) -> ForgeStatuses:
        return cls(
            settings.kind,
            settings.url,
            settings.repository,
            settings.token_env,
            target_url=settings.target_url,
            **kwargs,  # type: ignore[arg-type]
        )

    def __repr__(self) -> str:  # never the token
        return f"ForgeStatuses({self.kind}, {self._url}, {self._repository})"

    def coalesce_key(self, status: CommitStatus) -> Hashable:
        if status.partial:  # sent as nothing: it must not replace the environment's verdict
            return (status.commit, status.context, status.scope)
        return (status.commit, status.context)

    def report(self, status: CommitStatus) -> None:
        if status.partial:
            # One status per environment on a commit: the daemon's runs of some workloads are
            # for notes and the status branch; the environment's verdict follows them.
            return
        token = self._environ.get(self._token_env, "")
        if not token:
            raise ReportError(
                FORGE_TOKEN_MISSING,
                f"environment variable {self._token_env} (reporters.forge.token_env) is not set",
                retryable=False,
            )
        wait = self._bucket.take()
        if wait > 0:
            raise Throttled(FORGE_UNAVAILABLE, wait)
        request = status_request(self.kind, self._url, self._repository, status, self._target_url)
        import httpx  # noqa: PLC0415 - loaded by http_client() or the caller's client

        try:
            response = self._client.post(
                request.url, json=dict(request.body), headers=auth_headers(self.kind, token)
            )
        except httpx.HTTPError as exc:  # connection refused, timeouts, protocol errors
            raise ReportError(
                FORGE_UNAVAILABLE, f"{self.kind} at {self._url}: {type(exc).__name__}: {exc}"
            ) from exc
        _check(self.kind, response, status)

    def close(self) -> None:
        self._client.close()


def http_client() -> httpx.Client:
    """The client a forge reporter sends with when none is given.

    httpx is imported here, not with the module: with click and rich.progress it is about
    3.5 MiB and 60 modules that a daemon without a forge would keep for nothing.
    """
    import httpx  # noqa: PLC0415 - see the docstring

    return httpx.Client(timeout=httpx.Timeout(10.0), follow_redirects=False)


def _check(kind: str, response: httpx.Response, status: CommitStatus) -> None:
    code = response.status_code
    if code < 300:
        return
    text = " ".join(response.text.split())[:200]
    if kind == "gitlab" and code == 400 and "Cannot transition status" in text:
        return  # GitLab already shows this state; sending it again changes nothing
    where = f"{kind} status for {status.commit[:7]} ({status.context})"
    limited = code == 429 or (code == 403 and _rate_limited(response))
    if limited or code >= 500 or code == 408:
        raise ReportError(
            FORGE_UNAVAILABLE, f"{where}: HTTP {code}: {text}", retry_after=retry_after(response)
        )
    raise ReportError(FORGE_REJECTED, f"{where}: HTTP {code}: {text}", retryable=False)


def _rate_limited(response: httpx.Response) -> bool:
    return "retry-after" in response.headers or response.headers.get("x-ratelimit-remaining") == "0"


def retry_after(response: httpx.Response, now: datetime | None = None) -> float | None:
    """Seconds the forge asked us to wait: ``Retry-After`` (seconds or an HTTP date), else
    GitHub's ``x-ratelimit-reset`` (epoch seconds) when no requests remain."""
    now = now or datetime.now(UTC)
    value = response.headers.get("retry-after")
    if value is not None:
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        try:
            return max(0.0, (parsedate_to_datetime(value) - now).total_seconds())
        except (TypeError, ValueError):
            return None
    reset = response.headers.get("x-ratelimit-reset")
    if reset is not None and response.headers.get("x-ratelimit-remaining") == "0":
        try:
            return max(0.0, float(reset) - now.timestamp())
        except ValueError:
            return None
    return None


def _code_number(code: str) -> int:
    digits = code.removeprefix("RCN-")
    return int(digits) if digits.isdigit() else 0
