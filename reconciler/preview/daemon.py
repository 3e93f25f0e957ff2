"""What the daemon does for a pull-request event: preview, comment, annotate, set a status.

``preview_pull_request`` runs the preview of the event's head commit against its base branch
and tells the forge: one sticky comment (or one per environment), the diagnostics as check-run
annotations on GitHub when the token can create check runs (a GitHub App), and a
``reconciler/preview`` commit status everywhere. Without a forge the preview becomes a Git
note on the head commit. Nothing is applied and the user's store is only read.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from reconciler.daemon.webhooks import PullRequestEvent
from reconciler.diagnostics import Severity
from reconciler.gitops.repository import Repository
from reconciler.gitops.status.checks import Conclusion, post_status, publish_check_run
from reconciler.gitops.status.comments import CommentResult, ForgeApi, PullRequestComments
from reconciler.gitops.status.forge import Outcome
from reconciler.gitops.status.preview_notes import write_preview_note
from reconciler.preview.annotations import to_annotations
from reconciler.preview.compute import PreviewError, preview
from reconciler.preview.markdown import marker, to_markdown
from reconciler.preview.model import Preview, Verdict
from reconciler.render.diagnostics import location
from reconciler.store.store import Store

if TYPE_CHECKING:
    import httpx

CONTEXT = "reconciler/preview"
"""The commit status's context and the check run's name."""


@dataclass(frozen=True, slots=True)
class PreviewTarget:
    """Where previews go: the forge settings (as ``reporters.forge``) and how to post."""

    kind: str
    url: str
    repository: str
    token_env: str
    checks: bool = False
    """GitHub check runs with annotations (they need a GitHub App's token)."""
    split: bool = False
    """One comment per environment instead of one for all."""
    author: str | None = None
    """The bot's login: only its comments are ever edited."""
    link_base: str | None = None
    """Prefix of file links, the head SHA and path appended: ``https://github.com/o/r/blob``."""
    target_url: str | None = None


@dataclass(slots=True)
class PreviewReport:
    preview: Preview
    comments: list[CommentResult] = field(default_factory=list)
    check_run: int | None = None
    note: bool = False


def preview_pull_request(
    repo: Repository,
    event: PullRequestEvent,
    *,
    target: PreviewTarget | None,
    recorded: Store | None = None,
    environ: Mapping[str, str] = os.environ,
    client: httpx.Client | None = None,
) -> PreviewReport:
    """Preview the event's head against its base and post the result; forge errors raise
    ``ReportError`` (retry as the status reporters do), an unknown ref ``PreviewError``."""
    api = None
    if target is not None:
        api = ForgeApi(
            target.kind,
            target.url,
            target.repository,
            target.token_env,
            environ=environ,
            client=client,
        )
    try:
        result = preview(repo, event.base_ref, event.head_sha, recorded=recorded)
    except PreviewError as exc:
        if api is not None:
            post_status(
                api,
                sha=event.head_sha,
                context=CONTEXT,
                outcome="error",
                description=f"{exc.code.id} {exc.message}",
                target_url=target.target_url if target else None,
            )
        raise
    if api is None or target is None:
        note = write_preview_note(repo, event.head_sha, to_markdown(result))
        return PreviewReport(result, note=note)
    report = PreviewReport(result)
    links = f"{target.link_base.rstrip('/')}/{event.head_sha}" if target.link_base else None
    comments = PullRequestComments(api, author=target.author)
    for env in [e.environment for e in result.environments] if target.split else [None]:
        body = to_markdown(result, environment=env, link_base=links)
        report.comments.append(comments.upsert(event.number, body, marker(env)))
    if target.checks and api.kind == "github":
        report.check_run = publish_check_run(
            api,
            name=CONTEXT,
            head_sha=event.head_sha,
            title=f"Preview: {result.verdict}",
            summary=to_markdown(result, link_base=links, limit=65_535),
            annotations=to_annotations(result.all_diagnostics()),
            conclusion=conclusion(result),
            details_url=target.target_url,
        )
    post_status(
        api,
        sha=event.head_sha,
        context=CONTEXT,
        outcome=outcome(result),
        description=description(result),
        target_url=target.target_url,
    )
    return report


def conclusion(result: Preview) -> Conclusion:
    """``failure`` when the head has errors, ``neutral`` when there is no environment to
    preview, else ``success`` (changes are what a pull request is for)."""
    if result.failed:
        return "failure"
    return "success" if result.environments else "neutral"


def outcome(result: Preview) -> Outcome:
    if result.failed:
        return "failure"
    warned = any(d.severity is Severity.WARNING for d in result.all_diagnostics())
    return "warning" if warned else "success"


def description(result: Preview) -> str:
    """The first error with its place, else the counts across environments."""
    errors = [d for d in result.all_diagnostics() if d.severity is Severity.ERROR]
    if errors:
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        return f"{location(errors[0])} {errors[0].code.id} {errors[0].message}{more}"
    changed = [e for e in result.environments if e.verdict is Verdict.CHANGES]
    if not changed:
        return "No changes in any environment"
    add = sum(e.summary.add for e in changed)
    change = sum(e.summary.change for e in changed)
    destroy = sum(e.summary.destroy for e in changed)
    return (
        f"{add} to add, {change} to change, {destroy} to destroy in {len(changed)} of "
        f"{len(result.environments)} environment(s)"
    )
