"""A real repository with a base branch and a feature branch that adds one workload, changes
one, deletes one and breaks one file, as a pull request does."""

from __future__ import annotations

import pytest

from tests.conftest import MakeRepo
from tests.unit.preview.support import BROKEN, CONFIG, WEB_DB, PullRequest, score


@pytest.fixture
def pull_request(make_repo: MakeRepo) -> PullRequest:
    repo = make_repo()
    base = repo.commit(
        {
            "reconciler.yaml": CONFIG,
            "web/score.yaml": score("web", "nginx:1.26", WEB_DB),
            "api/score.yaml": score("api", "api:1"),
            "worker/score.yaml": score("worker", "worker:1"),
        },
        "base",
    )
    repo.git("checkout", "--quiet", "-b", "feature")
    head = repo.commit(
        {
            "new/score.yaml": score("new", "new:1"),
            "web/score.yaml": score("web", "nginx:1.27", WEB_DB),
            "api/score.yaml": None,
            "worker/score.yaml": BROKEN,
        },
        "feature",
    )
    return PullRequest(repo, base, head)
