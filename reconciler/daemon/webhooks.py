"""Forge webhooks: check who sent a delivery, then say what it asks for.

The HTTP server calls ``receive`` with the raw body and the headers of a POST to
``/webhooks/{github,gitea,gitlab}``. The signature is checked over the raw bytes before any JSON
is parsed, so a forged body never reaches the parser. A push becomes a ``PushEvent``, an opened,
reopened or updated pull (merge) request a ``PullRequestEvent``, anything else ``Ignored``.
Deciding whether an event concerns a watched repository and branch is the caller's business.
``DeliveryCache`` remembers delivery ids for a day because forges redeliver on timeouts.

Pure: no I/O, and the cache takes its clock from the caller.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

MAX_BODY_BYTES = 1024 * 1024
MAX_DELIVERY_ID = 200
DELIVERY_TTL = 24 * 60 * 60.0
ZERO_SHA = frozenset({"0" * 40, "0" * 64})


class Provider(enum.StrEnum):
    GITHUB = "github"
    GITEA = "gitea"
    GITLAB = "gitlab"


class PullRequestAction(enum.StrEnum):
    """The actions that mean "there is a head commit to preview", in GitHub's words."""

    OPENED = "opened"
    SYNCHRONIZE = "synchronize"
    REOPENED = "reopened"


@dataclass(frozen=True, slots=True)
class PushEvent:
    """``repository`` is the full name (GitHub, Gitea) or project path (GitLab)."""

    provider: Provider
    delivery_id: str
    repository: str
    ref: str
    after: str
    before: str


@dataclass(frozen=True, slots=True)
class PullRequestEvent:
    """``head_repository`` differs from ``repository`` for a pull request from a fork, and is
    empty when the forge no longer knows it (a deleted fork)."""

    provider: Provider
    delivery_id: str
    repository: str
    action: PullRequestAction
    number: int
    head_sha: str
    head_ref: str
    head_repository: str
    base_ref: str


@dataclass(frozen=True, slots=True)
class Ignored:
    provider: Provider
    delivery_id: str
    reason: str


ForgeEvent = PushEvent | PullRequestEvent
WebhookEvent = PushEvent | PullRequestEvent | Ignored


class SignatureError(Exception):
    """The delivery is not from the forge: no header, a malformed one, or the wrong secret."""


class PayloadError(Exception):
    """The delivery is signed but cannot be understood; ``pointer`` names the member if known."""

    def __init__(self, message: str, pointer: str = "") -> None:
        super().__init__(message)
        self.pointer = pointer


class BodyTooLarge(Exception):
    """The body is over the limit; the server normally refuses it before reading it."""


def receive(
    provider: Provider,
    headers: Mapping[str, str],
    body: bytes,
    secret: bytes,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> WebhookEvent:
    """Verify, then parse. Header names may come in any case."""
    if len(body) > max_body_bytes:
        raise BodyTooLarge(f"body of {len(body)} bytes is over the limit of {max_body_bytes}")
    lowered = {name.lower(): value for name, value in headers.items()}
    verify(provider, lowered, body, secret)
    return parse(provider, lowered, body)


def verify(provider: Provider, headers: Mapping[str, str], body: bytes, secret: bytes) -> None:
    """Raise ``SignatureError`` unless the delivery carries proof of ``secret``.

    An empty secret is refused outright: accepting unsigned deliveries is never a default.
    ``headers`` have lower-case names (``receive`` sees to that).
    """
    if not secret:
        raise SignatureError("no webhook secret is configured")
    if provider is Provider.GITLAB:
        _compare(_header(headers, "x-gitlab-token").encode(), secret)
        return
    expected = hmac.new(secret, body, hashlib.sha256).hexdigest()
    if provider is Provider.GITHUB:
        given = _header(headers, "x-hub-signature-256")
        scheme, _, digest = given.partition("=")
        if scheme != "sha256":
            raise SignatureError("X-Hub-Signature-256 does not start with 'sha256='")
    else:
        digest = _header(headers, "x-gitea-signature")
    _compare(digest.strip().lower().encode(), expected.encode())


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name, "")
    if not value:
        raise SignatureError(f"the {name} header is missing")
    return value


def _compare(given: bytes, expected: bytes) -> None:
    if not hmac.compare_digest(given, expected):
        raise SignatureError("the signature does not match the configured secret")


def parse(provider: Provider, headers: Mapping[str, str], body: bytes) -> WebhookEvent:
    """The event a verified delivery describes; ``headers`` have lower-case names."""
    delivery = _delivery_id(provider, headers, body)
    event = headers.get(_EVENT_HEADER[provider], "").strip()
    payload = _json(body)
    match provider, event:
        case ((Provider.GITHUB | Provider.GITEA), "push"):
            return _push(provider, delivery, payload, _dig(payload, "repository", "full_name"))
        case Provider.GITLAB, "Push Hook":
            project = _dig(payload, "project", "path_with_namespace")
            return _push(provider, delivery, payload, project)
        case ((Provider.GITHUB | Provider.GITEA), "pull_request"):
            return _pull_request(provider, delivery, payload)
        case Provider.GITLAB, "Merge Request Hook":
            return _merge_request(delivery, payload)
    return Ignored(provider, delivery, f"event {event or '(none)'!r} is not handled")


_EVENT_HEADER = {
    Provider.GITHUB: "x-github-event",
    Provider.GITEA: "x-gitea-event",
    Provider.GITLAB: "x-gitlab-event",
}
_DELIVERY_HEADERS = {
    Provider.GITHUB: ("x-github-delivery",),
    Provider.GITEA: ("x-gitea-delivery",),
    Provider.GITLAB: ("idempotency-key", "x-gitlab-event-uuid"),
}


def _delivery_id(provider: Provider, headers: Mapping[str, str], body: bytes) -> str:
    """The forge's delivery id; without one, the body's hash, which redeliveries share too."""
    for name in _DELIVERY_HEADERS[provider]:
        value = headers.get(name, "").strip()
        if value:
            if len(value) > MAX_DELIVERY_ID:
                raise PayloadError(f"the {name} header is longer than {MAX_DELIVERY_ID}")
            return value
    return "sha256:" + hashlib.sha256(body).hexdigest()


def _json(body: bytes) -> Mapping[str, Any]:
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise PayloadError(
            "the body is not JSON; set the webhook's content type to application/json"
        ) from exc
    if not isinstance(payload, dict):
        raise PayloadError("the body is not a JSON object", "#")
    return payload


def _dig(payload: Mapping[str, Any], *path: str) -> str:
    """A non-empty string member, or ``PayloadError`` pointing at where it should be."""
    value: Any = payload
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    if not isinstance(value, str) or not value:
        pointer = "#/" + "/".join(path)
        raise PayloadError(f"{'.'.join(path)}: expected a non-empty string", pointer)
    return value


def _optional(payload: Mapping[str, Any], *path: str) -> str:
    """A string member that forges may leave out (a deleted fork); empty when absent."""
    try:
        return _dig(payload, *path)
    except PayloadError:
        return ""


def _push(
    provider: Provider, delivery: str, payload: Mapping[str, Any], repository: str
) -> WebhookEvent:
    after = _dig(payload, "after")
    if after in ZERO_SHA:
        return Ignored(provider, delivery, "the push deletes the ref")
    ref = _dig(payload, "ref")
    return PushEvent(provider, delivery, repository, ref, after, _dig(payload, "before"))


_PR_ACTIONS = {
    "opened": PullRequestAction.OPENED,
    "reopened": PullRequestAction.REOPENED,
    "synchronize": PullRequestAction.SYNCHRONIZE,
    "synchronized": PullRequestAction.SYNCHRONIZE,  # Gitea's spelling
}


def _pull_request(provider: Provider, delivery: str, payload: Mapping[str, Any]) -> WebhookEvent:
    raw = payload.get("action")
    action = _PR_ACTIONS.get(raw) if isinstance(raw, str) else None
    if action is None:
        return Ignored(provider, delivery, f"pull request action {raw!r} is not handled")
    return PullRequestEvent(
        provider=provider,
        delivery_id=delivery,
        repository=_dig(payload, "repository", "full_name"),
        action=action,
        number=_number(payload, "number"),
        head_sha=_dig(payload, "pull_request", "head", "sha"),
        head_ref=_dig(payload, "pull_request", "head", "ref"),
        head_repository=_optional(payload, "pull_request", "head", "repo", "full_name"),
        base_ref=_dig(payload, "pull_request", "base", "ref"),
    )


def _merge_request(delivery: str, payload: Mapping[str, Any]) -> WebhookEvent:
    """GitLab says ``update`` for any edit; only one carrying ``oldrev`` brought new commits."""
    attributes = payload.get("object_attributes")
    attributes = attributes if isinstance(attributes, dict) else {}
    raw = attributes.get("action")
    if raw == "open":
        action = PullRequestAction.OPENED
    elif raw == "reopen":
        action = PullRequestAction.REOPENED
    elif raw == "update" and attributes.get("oldrev"):
        action = PullRequestAction.SYNCHRONIZE
    else:
        return Ignored(Provider.GITLAB, delivery, f"merge request action {raw!r} is not handled")
    return PullRequestEvent(
        provider=Provider.GITLAB,
        delivery_id=delivery,
        repository=_dig(payload, "project", "path_with_namespace"),
        action=action,
        number=_number(payload, "object_attributes", "iid"),
        head_sha=_dig(payload, "object_attributes", "last_commit", "id"),
        head_ref=_dig(payload, "object_attributes", "source_branch"),
        head_repository=_optional(payload, "object_attributes", "source", "path_with_namespace"),
        base_ref=_dig(payload, "object_attributes", "target_branch"),
    )


def _number(payload: Mapping[str, Any], *path: str) -> int:
    value: Any = payload
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PayloadError(f"{'.'.join(path)}: expected a positive integer", "#/" + "/".join(path))
    return value


Clock = Callable[[], float]
"""Seconds on a monotonic scale; injected so that tests move time by hand."""


class DeliveryCache:
    """Delivery ids seen in the last ``ttl`` seconds, at most ``max_entries`` of them.

    When a flood fills it, the oldest ids go first: the window shrinks rather than memory grow.
    A duplicate only costs a redundant, idempotent reconcile, so that trade is safe.
    """

    def __init__(
        self, clock: Clock, *, ttl: float = DELIVERY_TTL, max_entries: int = 100_000
    ) -> None:
        self._clock = clock
        self._ttl = ttl
        self._max = max_entries
        self._seen: OrderedDict[tuple[Provider, str], float] = OrderedDict()
        self._lock = threading.Lock()

    def check_and_add(self, provider: Provider, delivery_id: str) -> bool:
        """True if the id was seen already; otherwise remember it and return False, atomically."""
        now = self._clock()
        key = (provider, delivery_id)
        with self._lock:
            self._expire(now)
            if key in self._seen:
                return True
            self._seen[key] = now
            while len(self._seen) > self._max:
                self._seen.popitem(last=False)
            return False

    def forget(self, provider: Provider, delivery_id: str) -> None:
        """Drop an id whose handling failed, so that the forge's redelivery is not a duplicate."""
        with self._lock:
            self._seen.pop((provider, delivery_id), None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._seen)

    def _expire(self, now: float) -> None:
        while self._seen:
            oldest = next(iter(self._seen.values()))
            if now - oldest < self._ttl:
                return
            self._seen.popitem(last=False)
