"""`reconciler plan` as a user runs it, on a real repository, with the real store."""

from __future__ import annotations

import json

import pytest

from tests.conftest import MakeRepo
from tests.e2e.test_cli_validate import reconciler

pytestmark = pytest.mark.slow

WEB = "apiVersion: score.dev/v1b1\nmetadata:\n  name: web\ncontainers:\n  main:\n    image: nginx\n"
CONFIG = "environments:\n  staging:\n    branch: main\n  production:\n    branch: main\n"


def test_changes_exit_2_and_the_store_lives_in_the_git_dir(make_repo: MakeRepo) -> None:
    repo = make_repo()
    repo.commit({"reconciler.yaml": CONFIG, "web/score.yaml": WEB})
    result = reconciler("plan", "--env", "staging", cwd=repo.root)
    assert result.returncode == 2, result.stderr
    assert "# workload web will be created" in result.stdout
    assert result.stdout.rstrip().endswith("Plan: 1 to add, 0 to change, 0 to destroy.")
    assert (repo.root / ".git" / "reconciler" / "state.db").is_file()
    assert repo.git("status", "--porcelain") == ""


def test_every_environment_without_env_and_json_per_environment(make_repo: MakeRepo) -> None:
    repo = make_repo()
    repo.commit({"reconciler.yaml": CONFIG, "web/score.yaml": WEB})
    result = reconciler("plan", "--format", "json", cwd=repo.root)
    assert result.returncode == 2
    plans = json.loads(result.stdout)["plans"]
    assert [p["environment"] for p in plans] == ["production", "staging"]
    assert plans[0]["summary"] == {"add": 1, "change": 0, "destroy": 0, "unchanged": 0}
    action = plans[0]["actions"][0]
    assert (action["action"], action["kind"], action["id"]) == ("create", "workload", "web")


def test_nothing_to_plan_exits_0(make_repo: MakeRepo) -> None:
    repo = make_repo()
    repo.commit({"README.md": "empty"})
    result = reconciler("plan", cwd=repo.root)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No changes. Your infrastructure matches the configuration." in result.stdout


def test_errors_exit_1_with_diagnostics(make_repo: MakeRepo) -> None:
    repo = make_repo()
    repo.commit({"web/score.yaml": WEB.replace("image", "imag")})
    result = reconciler("plan", cwd=repo.root)
    assert result.returncode == 1
    assert "web/score.yaml:6:5: error RCN-1101" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_environment_and_revision_are_coded_errors(make_repo: MakeRepo) -> None:
    repo = make_repo()
    repo.commit({"reconciler.yaml": CONFIG, "web/score.yaml": WEB})
    env = reconciler("plan", "--env", "prod", cwd=repo.root)
    assert env.returncode == 1
    assert "RCN-2006" in env.stderr
    assert "production, staging" in env.stderr
    rev = reconciler("plan", "--ref", "no-such-branch", cwd=repo.root)
    assert rev.returncode == 1
    assert "RCN-4002" in rev.stderr
    bad_store = reconciler("plan", "--store", "mysql://x", cwd=repo.root)
    assert bad_store.returncode == 1
    assert "RCN-5003" in bad_store.stderr


def test_markdown_for_a_pull_request(make_repo: MakeRepo) -> None:
    repo = make_repo()
    repo.commit({"web/score.yaml": WEB})
    result = reconciler("plan", "--format", "markdown", cwd=repo.root)
    assert result.returncode == 2
    assert result.stdout.startswith("## Plan for `default` at ")
    assert "### default: web" in result.stdout
