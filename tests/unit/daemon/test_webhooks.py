"""Webhook verification and parsing: signatures over the raw body, events per forge, dedup."""

from __future__ import annotations

import json

import pytest

from reconciler.daemon.webhooks import (
    MAX_BODY_BYTES,
    BodyTooLarge,
    DeliveryCache,
    Ignored,
    PayloadError,
    Provider,
    PullRequestAction,
    PullRequestEvent,
    PushEvent,
    SignatureError,
    receive,
    verify,
)
from tests.unit.daemon.support import (
    PR_EVENT,
    PUSH_EVENT,
    SECRET,
    SHA_A,
    SHA_B,
    FakeClock,
    pull_payload,
    push_payload,
    signed_headers,
)

VECTOR = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
SIGNATURE_HEADER = {
    Provider.GITHUB: "X-Hub-Signature-256",
    Provider.GITEA: "X-Gitea-Signature",
    Provider.GITLAB: "X-Gitlab-Token",
}


def test_github_test_vector_verifies_and_a_changed_body_does_not() -> None:
    headers = {"x-hub-signature-256": VECTOR}
    verify(Provider.GITHUB, headers, b"Hello, World!", SECRET)
    with pytest.raises(SignatureError, match="does not match"):
        verify(Provider.GITHUB, headers, b"Hello, World?", SECRET)


@pytest.mark.parametrize("provider", list(Provider))
def test_a_good_signature_gives_the_push(provider: Provider) -> None:
    body = push_payload(provider)
    event = receive(
        provider, signed_headers(provider, body, PUSH_EVENT[provider], "d-1"), body, SECRET
    )
    assert event == PushEvent(provider, "d-1", "acme/shop", "refs/heads/main", SHA_B, SHA_A)


@pytest.mark.parametrize("provider", list(Provider))
def test_a_signature_made_with_another_secret_is_refused(provider: Provider) -> None:
    body = push_payload(provider)
    headers = signed_headers(provider, body, PUSH_EVENT[provider], "d-1", secret=b"guess")
    with pytest.raises(SignatureError, match="does not match"):
        receive(provider, headers, body, SECRET)


@pytest.mark.parametrize("provider", list(Provider))
def test_a_missing_signature_is_refused_when_a_secret_is_set(provider: Provider) -> None:
    body = push_payload(provider)
    headers = signed_headers(provider, body, PUSH_EVENT[provider], "d-1")
    del headers[SIGNATURE_HEADER[provider]]
    with pytest.raises(SignatureError, match="missing"):
        receive(provider, headers, body, SECRET)


@pytest.mark.parametrize("provider", list(Provider))
def test_no_secret_refuses_even_a_delivery_without_signature(provider: Provider) -> None:
    body = push_payload(provider)
    with pytest.raises(SignatureError, match="no webhook secret"):
        receive(provider, {}, body, b"")


def test_github_signature_needs_the_sha256_scheme() -> None:
    digest = VECTOR.removeprefix("sha256=")
    with pytest.raises(SignatureError, match="sha256="):
        verify(Provider.GITHUB, {"x-hub-signature-256": "sha1=" + digest}, b"Hello, World!", SECRET)


def test_a_signature_over_the_parsed_and_reserialised_body_does_not_verify() -> None:
    body = b'{"ref": "refs/heads/main",  "after": "x"}'
    resigned = json.dumps(json.loads(body)).encode()
    headers = signed_headers(Provider.GITHUB, resigned, "push", "d-1")
    with pytest.raises(SignatureError):
        receive(Provider.GITHUB, headers, body, SECRET)


def test_an_oversized_body_is_refused_before_anything_else() -> None:
    body = b" " * (MAX_BODY_BYTES + 1)
    with pytest.raises(BodyTooLarge):
        receive(Provider.GITHUB, {}, body, SECRET)


def test_a_deleted_branch_and_other_events_are_ignored() -> None:
    body = push_payload(Provider.GITHUB, after="0" * 40)
    deleted = receive(
        Provider.GITHUB, signed_headers(Provider.GITHUB, body, "push", "d"), body, SECRET
    )
    assert deleted == Ignored(Provider.GITHUB, "d", "the push deletes the ref")
    ping = receive(
        Provider.GITHUB, signed_headers(Provider.GITHUB, b"{}", "ping", "p"), b"{}", SECRET
    )
    assert isinstance(ping, Ignored)
    assert "ping" in ping.reason


@pytest.mark.parametrize(
    ("provider", "action", "expected"),
    [
        (Provider.GITHUB, "opened", PullRequestAction.OPENED),
        (Provider.GITHUB, "synchronize", PullRequestAction.SYNCHRONIZE),
        (Provider.GITHUB, "reopened", PullRequestAction.REOPENED),
        (Provider.GITEA, "synchronized", PullRequestAction.SYNCHRONIZE),
        (Provider.GITLAB, "open", PullRequestAction.OPENED),
        (Provider.GITLAB, "reopen", PullRequestAction.REOPENED),
    ],
)
def test_pull_requests_that_bring_a_head_commit(
    provider: Provider, action: str, expected: PullRequestAction
) -> None:
    body = pull_payload(provider, action)
    event = receive(provider, signed_headers(provider, body, PR_EVENT[provider], "d"), body, SECRET)
    assert event == PullRequestEvent(
        provider=provider,
        delivery_id="d",
        repository="acme/shop",
        action=expected,
        number=7,
        head_sha=SHA_B,
        head_ref="feature",
        head_repository="fork/shop",
        base_ref="main",
    )


def test_gitlab_update_is_a_synchronize_only_when_it_brings_commits() -> None:
    with_commits = pull_payload(Provider.GITLAB, "update", oldrev=SHA_A)
    headers = signed_headers(Provider.GITLAB, with_commits, "Merge Request Hook", "d")
    event = receive(Provider.GITLAB, headers, with_commits, SECRET)
    assert isinstance(event, PullRequestEvent)
    assert event.action is PullRequestAction.SYNCHRONIZE
    title_edit = pull_payload(Provider.GITLAB, "update")
    headers = signed_headers(Provider.GITLAB, title_edit, "Merge Request Hook", "e")
    assert isinstance(receive(Provider.GITLAB, headers, title_edit, SECRET), Ignored)


@pytest.mark.parametrize("provider", list(Provider))
def test_a_closed_pull_request_is_ignored(provider: Provider) -> None:
    body = pull_payload(provider, "close" if provider is Provider.GITLAB else "closed")
    event = receive(provider, signed_headers(provider, body, PR_EVENT[provider], "d"), body, SECRET)
    assert isinstance(event, Ignored)
    assert "clos" in event.reason


def test_a_signed_body_that_is_not_json_is_a_payload_error() -> None:
    body = b"payload=%7B%7D"
    with pytest.raises(PayloadError, match="application/json"):
        receive(Provider.GITHUB, signed_headers(Provider.GITHUB, body, "push", "d"), body, SECRET)


def test_a_push_without_ref_points_at_the_missing_member() -> None:
    body = json.dumps(
        {"after": SHA_B, "before": SHA_A, "repository": {"full_name": "a/b"}}
    ).encode()
    with pytest.raises(PayloadError) as error:
        receive(Provider.GITEA, signed_headers(Provider.GITEA, body, "push", "d"), body, SECRET)
    assert error.value.pointer == "#/ref"


def test_gitlab_prefers_the_idempotency_key_which_survives_retries() -> None:
    body = push_payload(Provider.GITLAB)
    headers = signed_headers(Provider.GITLAB, body, "Push Hook", "idem-1")
    headers["X-Gitlab-Event-UUID"] = "uuid-1"
    assert receive(Provider.GITLAB, headers, body, SECRET).delivery_id == "idem-1"
    del headers["Idempotency-Key"]
    assert receive(Provider.GITLAB, headers, body, SECRET).delivery_id == "uuid-1"


def test_without_a_delivery_id_the_body_hash_stands_in() -> None:
    body = push_payload(Provider.GITEA)
    headers = signed_headers(Provider.GITEA, body, "push", "d")
    del headers["X-Gitea-Delivery"]
    first = receive(Provider.GITEA, headers, body, SECRET).delivery_id
    assert first.startswith("sha256:")
    assert receive(Provider.GITEA, headers, body, SECRET).delivery_id == first


def test_delivery_cache_remembers_an_id_for_its_ttl() -> None:
    clock = FakeClock()
    cache = DeliveryCache(clock, ttl=86400.0)
    assert cache.check_and_add(Provider.GITHUB, "d-1") is False
    assert cache.check_and_add(Provider.GITHUB, "d-1") is True
    assert cache.check_and_add(Provider.GITEA, "d-1") is False  # another forge, another id
    clock.advance(86399.0)
    assert cache.check_and_add(Provider.GITHUB, "d-1") is True
    clock.advance(1.0)
    assert cache.check_and_add(Provider.GITHUB, "d-1") is False


def test_delivery_cache_is_bounded_and_forgets_on_request() -> None:
    cache = DeliveryCache(FakeClock(), max_entries=2)
    for delivery in ("a", "b", "c"):
        cache.check_and_add(Provider.GITHUB, delivery)
    assert len(cache) == 2
    assert cache.check_and_add(Provider.GITHUB, "a") is False  # the oldest went first
    cache.forget(Provider.GITHUB, "c")
    assert cache.check_and_add(Provider.GITHUB, "c") is False
