"""Posting previews to a forge (the fake one, over real HTTP): one sticky comment per pull
request, edited in place on the next push, check-run annotations in batches, a status."""

from __future__ import annotations

import pytest

from reconciler.daemon.webhooks import PullRequestEvent
from reconciler.gitops.repository import Repository
from reconciler.gitops.status.checks import publish_check_run
from reconciler.gitops.status.comments import ForgeApi, PullRequestComments
from reconciler.gitops.status.preview_notes import read_preview_note
from reconciler.gitops.status.reporter import ReportError
from reconciler.preview.annotations import Annotation
from reconciler.preview.daemon import CONTEXT, PreviewTarget, preview_pull_request
from reconciler.preview.markdown import MARKER, marker
from tests.support.fake_forge import BOT, FakeForge
from tests.unit.preview.support import PullRequest, score

TOKEN_ENV = "FORGE_TOKEN"
API = {"github": "", "gitea": "/api/v1", "gitlab": "/api/v4"}
REPO = {"github": "acme/shop", "gitea": "acme/shop", "gitlab": "42"}


def _event(head: str, number: int = 7) -> PullRequestEvent:
    return PullRequestEvent(
        provider="github",  # type: ignore[arg-type]
        delivery_id="d1",
        repository="acme/shop",
        action="synchronize",  # type: ignore[arg-type]
        number=number,
        head_sha=head,
        head_ref="feature",
        head_repository="acme/shop",
        base_ref="main",
    )


def _target(forge: FakeForge, kind: str = "github", **kwargs: object) -> PreviewTarget:
    return PreviewTarget(
        kind,
        forge.url + API[kind],
        REPO[kind],
        TOKEN_ENV,
        **kwargs,  # type: ignore[arg-type]
    )


def test_one_comment_updated_on_the_next_push_with_annotations(
    pull_request: PullRequest,
) -> None:
    repo = Repository.open(pull_request.repo.root)
    environ = {TOKEN_ENV: "fake-forge-token"}
    with FakeForge() as forge:
        someone = forge.add_comment("github", "acme/shop", 7, f"quoting you\n{MARKER}", user="eve")
        target = _target(forge, checks=True, author=BOT, link_base="https://gh/acme/shop/blob")
        first = preview_pull_request(
            repo, _event(pull_request.head), target=target, environ=environ
        )
        assert [c.action for c in first.comments] == ["created"]
        ours = forge.comments_on("github", "acme/shop", 7)
        assert len(ours) == 2
        assert someone.body == f"quoting you\n{MARKER}"
        body = forge.comments[first.comments[0].id].body
        assert "worker/score.yaml:6" in body
        assert body.rstrip().endswith(MARKER)

        run = forge.check_runs[first.check_run or 0]
        assert (run["status"], run["conclusion"], run["name"]) == ("completed", "failure", CONTEXT)
        typo = [a for a in run["annotations"] if a["title"] == "RCN-1101"]
        assert typo[0]["path"] == "worker/score.yaml"
        assert typo[0]["start_line"] == 6
        statuses = [r.body for r in forge.requests if "/statuses/" in r.path]
        assert statuses[-1]["context"] == CONTEXT
        assert statuses[-1]["state"] == "failure"
        assert statuses[-1]["description"].startswith("worker/score.yaml:5:3 RCN-1102")

        head = pull_request.repo.commit({"worker/score.yaml": score("worker", "worker:2")})
        second = preview_pull_request(repo, _event(head), target=target, environ=environ)
        assert second.comments[0].action == "updated"
        assert second.comments[0].id == first.comments[0].id
        assert len(forge.comments_on("github", "acme/shop", 7)) == 2
        assert "worker/score.yaml:6" not in forge.comments[second.comments[0].id].body
        assert forge.check_runs[second.check_run or 0]["conclusion"] == "success"

        edits = sum(r.method == "PATCH" and "/issues/comments/" in r.path for r in forge.requests)
        third = preview_pull_request(repo, _event(head), target=target, environ=environ)
        assert third.comments[0].action == "unchanged"
        after = sum(r.method == "PATCH" and "/issues/comments/" in r.path for r in forge.requests)
        assert after == edits


@pytest.mark.parametrize("kind", ["gitea", "gitlab"])
def test_gitea_and_gitlab_comments_and_statuses(pull_request: PullRequest, kind: str) -> None:
    repo = Repository.open(pull_request.repo.root)
    environ = {TOKEN_ENV: "fake-forge-token"}
    with FakeForge() as forge:
        target = _target(forge, kind, split=True)
        first = preview_pull_request(
            repo, _event(pull_request.head), target=target, environ=environ
        )
        assert [c.action for c in first.comments] == ["created", "created"]
        head = pull_request.repo.commit({"worker/score.yaml": score("worker", "worker:2")})
        second = preview_pull_request(repo, _event(head), target=target, environ=environ)
        assert [c.action for c in second.comments] == ["updated", "updated"]
        comments = forge.comments_on(kind, REPO[kind], 7)
        assert sorted(c.body.rstrip().splitlines()[-1] for c in comments) == [
            marker("production"),
            marker("staging"),
        ]
        edit = "PUT" if kind == "gitlab" else "PATCH"
        assert any(r.method == edit for r in forge.requests)
        states = [r.body["state"] for r in forge.requests if "/statuses/" in r.path]
        assert states == (["failed", "success"] if kind == "gitlab" else ["failure", "success"])
        assert forge.check_runs == {}


def test_annotations_go_fifty_per_request() -> None:
    notes = [Annotation("a/score.yaml", i, i, "warning", "RCN-1101", "m") for i in range(1, 121)]
    with FakeForge() as forge:
        api = ForgeApi(
            "github", forge.url, "acme/shop", TOKEN_ENV, environ={TOKEN_ENV: forge.token}
        )
        run_id = publish_check_run(
            api,
            name=CONTEXT,
            head_sha="a" * 40,
            title="Preview",
            summary="x" * 70_000,
            annotations=notes,
            conclusion="success",
        )
    patches = [r for r in forge.requests if r.method == "PATCH"]
    assert [len(r.body["output"]["annotations"]) for r in patches] == [50, 50, 20]
    assert "conclusion" not in patches[0].body
    assert patches[-1].body["conclusion"] == "success"
    assert len(forge.check_runs[run_id]["annotations"]) == 120
    assert len(patches[0].body["output"]["summary"]) == 65_535


def test_forge_errors_are_coded_and_the_token_stays_in_headers() -> None:
    with FakeForge() as forge:
        wrong = ForgeApi("github", forge.url, "acme/shop", TOKEN_ENV, environ={TOKEN_ENV: "nope"})
        with pytest.raises(ReportError) as rejected:
            PullRequestComments(wrong).upsert(1, f"x\n{MARKER}", MARKER)
        assert rejected.value.code.id == "RCN-4009"
        assert "nope" not in str(rejected.value)
        missing = ForgeApi("github", forge.url, "acme/shop", TOKEN_ENV, environ={})
        with pytest.raises(ReportError) as unset:
            PullRequestComments(missing).upsert(1, f"x\n{MARKER}", MARKER)
        assert unset.value.code.id == "RCN-4011"
        forge.fail_next(503)
        down = ForgeApi("github", forge.url, "acme/shop", TOKEN_ENV, environ={TOKEN_ENV: "t"})
        with pytest.raises(ReportError) as unavailable:
            PullRequestComments(down).upsert(1, f"x\n{MARKER}", MARKER)
        assert unavailable.value.code.id == "RCN-4010"
        assert unavailable.value.retryable


def test_many_comments_are_read_page_by_page() -> None:
    with FakeForge() as forge:
        for i in range(230):
            forge.add_comment("github", "acme/shop", 3, f"comment {i}", user="eve")
        ours = forge.add_comment("github", "acme/shop", 3, f"old\n{MARKER}")
        api = ForgeApi(
            "github", forge.url, "acme/shop", TOKEN_ENV, environ={TOKEN_ENV: forge.token}
        )
        result = PullRequestComments(api, author=BOT).upsert(3, f"new\n{MARKER}", MARKER)
    assert (result.action, result.id) == ("updated", ours.id)
    assert ours.body == f"new\n{MARKER}"


def test_without_a_forge_the_preview_is_a_git_note(pull_request: PullRequest) -> None:
    repo = Repository.open(pull_request.repo.root)
    report = preview_pull_request(repo, _event(pull_request.head), target=None)
    assert report.note
    note = read_preview_note(repo, pull_request.head)
    assert note is not None
    assert note.rstrip().endswith(MARKER)
    assert not preview_pull_request(repo, _event(pull_request.head), target=None).note
