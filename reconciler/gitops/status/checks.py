"""GitHub check runs with line annotations, and a commit status for the forges without them.

A check run is created ``in_progress`` and then completed by ``PATCH``, with the annotations
sent 50 at a time (GitHub's limit per request; it appends them across requests) and the
summary cut to 65,535 characters. Check runs need a GitHub App's token; with a personal token,
or on Gitea and GitLab, ``post_status`` sets one commit status (``reconciler/preview``) whose
description sums up the result and whose link leads to the details.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Literal, Protocol, TypeVar

from reconciler.gitops.status.comments import ForgeApi
from reconciler.gitops.status.forge import DESCRIPTION_LIMIT, STATES, Outcome

ANNOTATIONS_PER_REQUEST = 50
SUMMARY_LIMIT = 65_535
TITLE_LIMIT = 255
Conclusion = Literal["success", "failure", "neutral"]
T = TypeVar("T")


class Annotation(Protocol):
    """GitHub's annotation fields (``reconciler.preview.annotations.Annotation`` is one)."""

    def to_dict(self) -> Mapping[str, str | int]: ...


def batches(
    items: Sequence[Annotation], size: int = ANNOTATIONS_PER_REQUEST
) -> list[list[Annotation]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def publish_check_run(
    api: ForgeApi,
    *,
    name: str,
    head_sha: str,
    title: str,
    summary: str,
    annotations: Sequence[Annotation],
    conclusion: Conclusion,
    details_url: str | None = None,
) -> int:
    """Create the check run and complete it with every annotation; returns its id."""
    if api.kind != "github":
        raise ValueError("check runs are GitHub's; use post_status on other forges")
    start: dict[str, object] = {"name": name, "head_sha": head_sha, "status": "in_progress"}
    if details_url:
        start["details_url"] = details_url
    created = api.request("POST", f"{api.repo_path}/check-runs", body=start)
    run_id = int(created["id"])
    output = {"title": _cut(title, TITLE_LIMIT), "summary": _cut(summary, SUMMARY_LIMIT)}
    chunks = batches(annotations) or [[]]
    for i, chunk in enumerate(chunks):
        body: dict[str, object] = {
            "output": {**output, "annotations": [a.to_dict() for a in chunk]}
        }
        if i == len(chunks) - 1:
            body["status"] = "completed"
            body["conclusion"] = conclusion
            body["completed_at"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        api.request("PATCH", f"{api.repo_path}/check-runs/{run_id}", body=body)
    return run_id


def post_status(
    api: ForgeApi,
    *,
    sha: str,
    context: str,
    outcome: Outcome,
    description: str,
    target_url: str | None = None,
) -> None:
    """One commit status in the forge's own words (the table in docs/status.md)."""
    text = _cut(" ".join(description.split()), DESCRIPTION_LIMIT)
    body = {"state": STATES[api.kind][outcome], "description": text}
    if target_url:
        body["target_url"] = target_url
    if api.kind == "gitlab":
        body["name"] = context
    else:
        body["context"] = context
    api.request("POST", f"{api.repo_path}/statuses/{sha}", body=body)
