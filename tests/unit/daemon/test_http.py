"""The HTTP server, over real sockets: probes, metrics, webhooks, /api/v1 and its refusals."""

from __future__ import annotations

import socket

import httpx
import pytest

from reconciler.daemon.http import Limits
from reconciler.daemon.webhooks import MAX_BODY_BYTES, Provider, PushEvent
from tests.unit.daemon.conftest import Served, serve
from tests.unit.daemon.support import (
    DEADLINE,
    PUSH_EVENT,
    SHA_A,
    SHA_B,
    push_payload,
    signed_headers,
)

PROBLEM = "application/problem+json"


def post_push(
    served: Served, provider: Provider, delivery: str = "d-1", **overrides: str
) -> httpx.Response:
    body = push_payload(provider)
    headers = signed_headers(provider, body, PUSH_EVENT[provider], delivery) | overrides
    return served.client.post(f"/webhooks/{provider}", content=body, headers=headers)


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status
    assert response.headers["content-type"] == PROBLEM
    document = response.json()
    assert document["status"] == status
    assert document["code"] == code
    assert str(document["type"]).endswith("#" + code.lower())
    assert document["instance"] == response.request.url.raw_path.decode()
    return dict(document)


def test_healthz_answers_ok_without_revealing_versions(served: Served) -> None:
    response = served.client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response.headers["server"] == "reconciler"


def test_readyz_is_ready_when_every_check_passes(served: Served) -> None:
    response = served.client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": ["store", "repository"]}


def test_readyz_lists_each_failing_check_in_a_problem(served: Served) -> None:
    served.backend.not_ready["store"] = "cannot connect"
    document = assert_problem(served.client.get("/readyz"), 503, "RCN-6008")
    assert document["errors"] == [{"detail": "store: cannot connect", "pointer": "#/checks/store"}]


def test_metrics_are_exposed_in_the_prometheus_text_format(served: Served) -> None:
    post_push(served, Provider.GITHUB)
    response = served.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    assert "# TYPE reconciler_queue_depth gauge" in response.text
    assert (
        'reconciler_webhook_deliveries_total{provider="github",result="accepted"} 1.0'
        in response.text
    )


@pytest.mark.parametrize("provider", list(Provider))
def test_a_signed_push_is_accepted_and_handed_over(served: Served, provider: Provider) -> None:
    response = post_push(served, provider)
    assert response.status_code == 202
    assert response.json() == {"status": "accepted", "delivery": "d-1"}
    assert served.backend.events == [
        PushEvent(provider, "d-1", "acme/shop", "refs/heads/main", SHA_B, SHA_A)
    ]


def test_a_replayed_delivery_is_acknowledged_once_and_not_handed_over_again(served: Served) -> None:
    assert post_push(served, Provider.GITHUB).status_code == 202
    again = post_push(served, Provider.GITHUB)
    assert again.status_code == 200
    assert again.json()["status"] == "duplicate"
    assert len(served.backend.events) == 1


@pytest.mark.parametrize("provider", list(Provider))
def test_a_bad_signature_is_401_and_changes_nothing(served: Served, provider: Provider) -> None:
    wrong = {
        Provider.GITHUB: {"X-Hub-Signature-256": "sha256=" + "0" * 64},
        Provider.GITEA: {"X-Gitea-Signature": "0" * 64},
        Provider.GITLAB: {"X-Gitlab-Token": "guess"},
    }[provider]
    assert_problem(post_push(served, provider, **wrong), 401, "RCN-6001")
    assert served.backend.events == []
    assert post_push(served, provider).status_code == 202  # the id was not remembered


def test_a_missing_signature_is_401(served: Served) -> None:
    body = push_payload(Provider.GITHUB)
    response = served.client.post(
        "/webhooks/github", content=body, headers={"X-GitHub-Event": "push"}
    )
    document = assert_problem(response, 401, "RCN-6001")
    assert "missing" in str(document["detail"])


def test_an_oversized_body_is_413_and_never_handed_over(small_served: Served) -> None:
    body = b"{" + b" " * 4096 + b"}"
    headers = signed_headers(Provider.GITHUB, body, "push", "d-1")
    response = small_served.client.post("/webhooks/github", content=body, headers=headers)
    assert_problem(response, 413, "RCN-6004")
    assert small_served.backend.events == []


def test_webhooks_answer_post_only(served: Served) -> None:
    response = served.client.get("/webhooks/github")
    assert_problem(response, 405, "RCN-6006")
    assert response.headers["allow"] == "POST"


def test_a_push_the_callback_does_not_want_is_acknowledged_as_ignored(served: Served) -> None:
    served.backend.wanted = False
    response = post_push(served, Provider.GITEA)
    assert response.status_code == 200
    assert response.json()["status"] == "ignored"


def test_an_unhandled_event_is_acknowledged_without_a_callback(served: Served) -> None:
    body = b'{"zen": "Keep it logically awesome."}'
    headers = signed_headers(Provider.GITHUB, body, "ping", "p-1")
    response = served.client.post("/webhooks/github", content=body, headers=headers)
    assert response.status_code == 200
    assert response.json()["status"] == "ignored"
    assert served.backend.events == []


def test_a_signed_body_that_is_not_json_is_a_400_problem(served: Served) -> None:
    body = b"not json"
    headers = signed_headers(Provider.GITHUB, body, "push", "d-1")
    response = served.client.post("/webhooks/github", content=body, headers=headers)
    assert_problem(response, 400, "RCN-6002")


def test_a_failing_callback_is_a_500_without_traceback_and_the_forge_may_redeliver(
    served: Served,
) -> None:
    served.backend.raise_on_event = True
    response = post_push(served, Provider.GITHUB)
    document = assert_problem(response, 500, "RCN-6009")
    assert "queue is gone" not in response.text
    assert "Traceback" not in response.text
    assert document["detail"] == "the request failed"
    served.backend.raise_on_event = False
    assert post_push(served, Provider.GITHUB).status_code == 202


def test_a_forge_without_a_secret_has_no_webhook() -> None:
    with serve(providers=(Provider.GITHUB,)) as served:
        assert_problem(post_push(served, Provider.GITLAB), 404, "RCN-6003")
        assert served.backend.events == []
        assert post_push(served, Provider.GITHUB).status_code == 202


def test_a_repeated_content_length_is_refused(served: Served) -> None:
    answer = raw_exchange(
        served,
        b"POST /webhooks/github HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
        b"Content-Length: 3\r\n\r\n{}",
    )
    assert answer.startswith(b"HTTP/1.0 400 ")
    assert b"Content-Length is not one number" in answer


def test_api_lists_environments_and_workloads(served: Served) -> None:
    environments = served.client.get("/api/v1/environments")
    assert environments.status_code == 200
    assert environments.headers["content-type"] == "application/json"
    assert environments.json() == {"items": [{"name": "prod", "branch": "main"}]}
    workloads = served.client.get("/api/v1/workloads").json()
    assert workloads["items"][0]["name"] == "shop"


def test_api_shows_a_run_and_an_unknown_run_is_a_404_problem(served: Served) -> None:
    assert served.client.get("/api/v1/runs/r-1").json()["status"] == "Succeeded"
    document = assert_problem(served.client.get("/api/v1/runs/r-404"), 404, "RCN-3015")
    assert "r-404" in str(document["detail"])
    assert_problem(served.client.get("/api/v1/runs/..%2F"), 404, "RCN-3015")


def test_an_unknown_path_is_a_404_problem_and_a_wrong_method_a_405(served: Served) -> None:
    assert_problem(served.client.get("/admin"), 404, "RCN-6005")
    response = served.client.delete("/api/v1/runs/r-1")
    assert_problem(response, 405, "RCN-6006")
    assert response.headers["allow"] == "GET"


def raw_exchange(served: Served, request: bytes) -> bytes:
    """Send bytes as they are and read the answer until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", served.server.port), timeout=DEADLINE) as conn:
        conn.sendall(request)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_a_body_without_content_length_is_refused(served: Served) -> None:
    answer = raw_exchange(
        served,
        b"POST /webhooks/github HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.0 411 ")
    assert b"application/problem+json" in answer


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /" + b"a" * 300 + b" HTTP/1.1\r\n\r\n", b"414"),
        (b"GET /healthz HTTP/1.1\r\nX-Big: " + b"b" * 2000 + b"\r\n\r\n", b"431"),
        (b"GARBAGE\r\n\r\n", b"400"),
        (b"GET /healthz\r\n\r\n", b"400"),  # HTTP/0.9
    ],
)
def test_malformed_and_oversized_requests_get_json_problems(
    small_served: Served, request_bytes: bytes, status: bytes
) -> None:
    answer = raw_exchange(small_served, request_bytes)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 " + status)
    assert b"Content-Type: application/problem+json" in head
    assert body.startswith(b"{")
    assert b'"code": "RCN-60' in body


def test_an_idle_client_is_disconnected_after_the_socket_timeout(small_served: Served) -> None:
    assert raw_exchange(small_served, b"GET /healthz HTTP/1.1\r\n") == b""


def test_connections_over_the_limit_are_closed_at_once() -> None:
    with serve(Limits(max_connections=1, socket_timeout=DEADLINE)) as served:
        address = ("127.0.0.1", served.server.port)
        with socket.create_connection(address, timeout=DEADLINE) as idle:
            idle.sendall(b"GET /healthz HTTP/1.1\r\n")  # holds the only slot: headers unfinished
            with pytest.raises(httpx.TransportError):
                served.client.get("/healthz")


def test_a_body_over_the_default_limit_gets_its_413_rather_than_a_reset(served: Served) -> None:
    body = b" " * (2 * MAX_BODY_BYTES)
    headers = signed_headers(Provider.GITHUB, body, "push", "d-1")
    response = served.client.post("/webhooks/github", content=body, headers=headers)
    assert_problem(response, 413, "RCN-6004")


def test_stop_closes_the_listening_socket(served: Served) -> None:
    port = served.server.port
    served.server.stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=DEADLINE).close()
