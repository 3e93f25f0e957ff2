"""Commit statuses on the fake forge: per forge, the endpoint, context, URL, auth and state."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from reconciler.gitops.status import (
    FanOut,
    ForgeStatuses,
    Health,
    Phase,
    RetrySettings,
    TokenBucket,
)
from reconciler.gitops.status.forge import STATES, description, outcome, retry_after
from reconciler.gitops.status.model import Failure
from reconciler.gitops.status.reporter import ReportError, Throttled
from tests.support.fake_forge import FakeForge
from tests.unit.status.support import FAILURE, SHA, status

TOKEN_ENV = "FAKE_FORGE_TOKEN"
FAST = RetrySettings(initial_backoff=0.01, max_backoff=0.05, max_attempts=4)
BASES = {"github": "", "gitea": "/api/v1", "gitlab": "/api/v4"}
REPOSITORIES = {"github": "acme/shop", "gitea": "acme/shop", "gitlab": "acme/shop"}
PATHS = {
    "github": f"/repos/acme/shop/statuses/{SHA}",
    "gitea": f"/api/v1/repos/acme/shop/statuses/{SHA}",
    "gitlab": f"/api/v4/projects/acme%2Fshop/statuses/{SHA}",
}


@pytest.fixture
def forge() -> Iterator[FakeForge]:
    with FakeForge() as fake:
        yield fake


def reporter(kind: str, fake: FakeForge, **kwargs: object) -> ForgeStatuses:
    return ForgeStatuses(
        kind,
        fake.url + BASES[kind],
        REPOSITORIES[kind],
        TOKEN_ENV,
        target_url="https://dash.example.com/prod",
        environ={TOKEN_ENV: fake.token},
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("kind", ["github", "gitea", "gitlab"])
def test_pending_then_success_with_context_url_and_auth(kind: str, forge: FakeForge) -> None:
    fan = FanOut([reporter(kind, forge)], retry=FAST)
    fan.report(status(phase=Phase.RUNNING))
    assert fan.wait_idle(5)  # not coalesced with the next one: already sent
    fan.report(status())
    assert fan.close(5)

    first, second = forge.wait_for(2)
    assert [r.path for r in (first, second)] == [PATHS[kind]] * 2
    assert [r.answered for r in (first, second)] == [201, 201]
    name = "name" if kind == "gitlab" else "context"
    assert first.body[name] == second.body[name] == "reconciler/prod"
    assert first.body["state"] == ("running" if kind == "gitlab" else "pending")
    assert second.body["state"] == "success"
    assert second.body["target_url"] == "https://dash.example.com/prod"
    assert second.body["description"] == "Synced, Healthy: 1 to add, 2 to change, 0 to destroy"
    if kind == "gitlab":
        assert first.headers["private-token"] == forge.token
    else:
        scheme = "Bearer" if kind == "github" else "token"
        assert first.headers["authorization"] == f"{scheme} {forge.token}"


def test_a_500_then_201_is_retried(forge: FakeForge) -> None:
    forge.fail_next(500)
    fan = FanOut([reporter("github", forge)], retry=FAST)
    fan.report(status())
    assert fan.close(5)
    assert [r.answered for r in forge.wait_for(2)] == [500, 201]
    counters = fan.counters()["forge"]
    assert (counters.sent, counters.retried, counters.failed) == (1, 1, 0)
    assert counters.last_error is not None
    assert "HTTP 500" in counters.last_error


def test_a_rejection_is_not_retried_and_is_coded(forge: FakeForge) -> None:
    wrong = ForgeStatuses("github", forge.url, "acme/shop", TOKEN_ENV, environ={TOKEN_ENV: "nope"})
    fan = FanOut([wrong], retry=FAST)
    fan.report(status())
    assert fan.close(5)
    assert [r.answered for r in forge.requests] == [401]
    assert fan.counters()["forge"].failed == 1


def test_429_asks_for_the_wait_the_forge_gave(forge: FakeForge) -> None:
    forge.fail_next(429, retry_after="7")
    with pytest.raises(ReportError) as raised:
        reporter("github", forge).report(status())
    assert raised.value.retryable
    assert raised.value.retry_after == 7.0


def test_retry_after_as_an_http_date_and_github_reset() -> None:
    now = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
    dated = httpx.Response(429, headers={"Retry-After": "Wed, 01 May 2024 12:00:30 GMT"})
    assert retry_after(dated, now) == 30.0
    reset = httpx.Response(
        403,
        headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(now.timestamp()) + 60)},
    )
    assert retry_after(reset, now) == 60.0


def test_a_missing_token_is_a_coded_error_and_no_request(forge: FakeForge) -> None:
    quiet = ForgeStatuses("gitea", forge.url, "acme/shop", "UNSET_VARIABLE", environ={})
    with pytest.raises(ReportError, match="UNSET_VARIABLE") as raised:
        quiet.report(status())
    assert not raised.value.retryable
    assert forge.requests == []


def test_the_token_never_reaches_the_log(
    forge: FakeForge, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    forge.fail_next(502)
    fan = FanOut([reporter("gitlab", forge)], retry=FAST)
    fan.report(status())
    assert fan.close(5)
    assert "HTTP 502" in caplog.text
    assert forge.token not in caplog.text
    assert forge.token not in repr(reporter("gitlab", forge))


def test_coalescing_sends_only_the_latest_of_queued_statuses(forge: FakeForge) -> None:
    fan = FanOut([reporter("github", forge)], retry=FAST)
    forge.hold()
    fan.report(status(phase=Phase.PENDING))
    forge.wait_in_flight()
    fan.report(status(phase=Phase.RUNNING))  # superseded before it was sent
    fan.report(status(environment="staging", phase=Phase.RUNNING))  # another context: kept
    fan.report(status(failures=(FAILURE,), phase=Phase.FAILED))
    forge.release()
    assert fan.close(5)
    sent = [(r.body["context"], r.body["state"]) for r in forge.requests]
    assert sent == [
        ("reconciler/prod", "pending"),
        ("reconciler/prod", "failure"),
        ("reconciler/staging", "pending"),
    ]
    assert fan.counters()["forge"].superseded == 1


def test_the_token_bucket_throttles_without_sending() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=60, burst=2, clock=lambda: now[0])
    assert [bucket.take(), bucket.take()] == [0.0, 0.0]
    assert bucket.take() == pytest.approx(1.0)
    now[0] = 1.0
    assert bucket.take() == 0.0


def test_a_throttled_forge_is_asked_again_not_failed(forge: FakeForge) -> None:
    now = [0.0]
    bucket = TokenBucket(rate=6000, burst=1, clock=lambda: now[0])
    limited = reporter("gitea", forge, bucket=bucket)
    limited.report(status())
    with pytest.raises(Throttled):
        limited.report(status())
    assert len(forge.requests) == 1


@pytest.mark.parametrize(
    ("kwargs", "github", "gitea", "gitlab"),
    [
        ({"phase": Phase.PENDING}, "pending", "pending", "pending"),
        ({"phase": Phase.WAITING_APPROVAL}, "pending", "pending", "pending"),
        ({"phase": Phase.RUNNING}, "pending", "pending", "running"),
        ({}, "success", "success", "success"),
        (
            {"failures": (Failure("RCN-1306", "deprecated", severity="warning"),)},
            "success",
            "warning",
            "success",
        ),
        ({"health": Health.DEGRADED}, "failure", "failure", "failed"),
        ({"health": Health.PROGRESSING}, "pending", "pending", "running"),
        ({"phase": Phase.FAILED, "failures": (FAILURE,)}, "failure", "failure", "failed"),
        (
            {"phase": Phase.FAILED, "failures": (Failure("RCN-3001", "boom"),)},
            "error",
            "error",
            "failed",
        ),
    ],
)
def test_state_words_per_forge(
    kwargs: dict[str, Any], github: str, gitea: str, gitlab: str
) -> None:
    verdict = outcome(status(**kwargs))
    assert (STATES["github"][verdict], STATES["gitea"][verdict], STATES["gitlab"][verdict]) == (
        github,
        gitea,
        gitlab,
    )


def test_description_names_the_first_error_within_140_characters() -> None:
    long = Failure("RCN-1202", "x " * 200, file="apps/web/score.yaml", line=3)
    text = description(status(phase=Phase.FAILED, failures=(long, FAILURE)))
    assert len(text) == 140
    assert text.endswith("…")
    assert text.startswith("RCN-1202 apps/web/score.yaml:3: x x")
    short = description(status(phase=Phase.FAILED, failures=(FAILURE, FAILURE)))
    assert short == f"RCN-1202 apps/web/score.yaml:12: {FAILURE.message} (+1 more)"


def test_a_long_description_is_accepted_by_github(forge: FakeForge) -> None:
    long = Failure("RCN-1202", "y" * 400)
    reporter("github", forge).report(status(phase=Phase.FAILED, failures=(long,)))
    assert forge.requests[0].answered == 201


def test_a_status_of_some_workloads_is_not_sent_and_does_not_replace_the_verdict(
    forge: FakeForge,
) -> None:
    fan = FanOut([reporter("github", forge)], retry=FAST)
    fan.report(status(phase=Phase.RUNNING, scope=(), workloads={}))
    fan.report(status(scope=("web",)))  # one run's workloads: notes and status branch only
    assert fan.close(5)
    (sent,) = forge.wait_for(1)
    assert sent.body["state"] == "pending"
    assert len(forge.requests) == 1
