"""Helpers for the daemon tests: a clock moved by hand, signed forge deliveries and payloads."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from typing import Any

from reconciler.daemon.webhooks import Provider

DEADLINE = 10.0  # seconds a test waits for a thread before it fails rather than hangs
SECRET = b"It's a Secret to Everybody"
SHA_A = "a" * 40
SHA_B = "b" * 40


class FakeClock:
    """Time that moves only on ``advance``; waiters on the queue's condition wake when it does.

    ``waiting`` is set whenever a thread starts to wait, so a test knows a worker is blocked
    before it moves time.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._lock = threading.Lock()
        self._conditions: list[threading.Condition] = []
        self.waiting = threading.Event()

    def __call__(self) -> float:
        return self.now()

    def now(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds
            conditions = list(self._conditions)
        for condition in conditions:
            with condition:
                condition.notify_all()

    def wait(self, condition: threading.Condition, timeout: float | None) -> None:
        with self._lock:
            if condition not in self._conditions:
                self._conditions.append(condition)
        self.waiting.set()
        # Fake time passes only in advance(), which notifies; the real bound is a safety net.
        condition.wait(DEADLINE)


def github_signature(body: bytes, secret: bytes = SECRET) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def signed_headers(
    provider: Provider, body: bytes, event: str, delivery: str, secret: bytes = SECRET
) -> dict[str, str]:
    """The headers a forge sends with ``body``, signed with ``secret``."""
    digest = hmac.new(secret, body, hashlib.sha256).hexdigest()
    if provider is Provider.GITHUB:
        return {
            "X-Hub-Signature-256": "sha256=" + digest,
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery,
        }
    if provider is Provider.GITEA:
        return {"X-Gitea-Signature": digest, "X-Gitea-Event": event, "X-Gitea-Delivery": delivery}
    return {
        "X-Gitlab-Token": secret.decode(),
        "X-Gitlab-Event": event,
        "Idempotency-Key": delivery,
    }


PUSH_EVENT = {Provider.GITHUB: "push", Provider.GITEA: "push", Provider.GITLAB: "Push Hook"}
PR_EVENT = {
    Provider.GITHUB: "pull_request",
    Provider.GITEA: "pull_request",
    Provider.GITLAB: "Merge Request Hook",
}


def push_payload(provider: Provider, *, after: str = SHA_B, ref: str = "refs/heads/main") -> bytes:
    payload: dict[str, Any] = {"ref": ref, "before": SHA_A, "after": after}
    if provider is Provider.GITLAB:
        payload |= {"object_kind": "push", "project": {"path_with_namespace": "acme/shop"}}
    else:
        payload["repository"] = {"full_name": "acme/shop"}
    return json.dumps(payload).encode()


def pull_payload(provider: Provider, action: str, **extra: Any) -> bytes:
    """A pull (merge) request from the fork ``fork/shop``, branch ``feature`` into ``main``."""
    if provider is Provider.GITLAB:
        attributes = {
            "action": action,
            "iid": 7,
            "last_commit": {"id": SHA_B},
            "source_branch": "feature",
            "target_branch": "main",
            "source": {"path_with_namespace": "fork/shop"},
        } | extra
        payload: dict[str, Any] = {
            "object_kind": "merge_request",
            "project": {"path_with_namespace": "acme/shop"},
            "object_attributes": attributes,
        }
    else:
        payload = {
            "action": action,
            "number": 7,
            "repository": {"full_name": "acme/shop"},
            "pull_request": {
                "head": {"sha": SHA_B, "ref": "feature", "repo": {"full_name": "fork/shop"}},
                "base": {"ref": "main", "sha": SHA_A},
            },
        } | extra
    return json.dumps(payload).encode()
