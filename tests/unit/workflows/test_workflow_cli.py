"""``workflow list`` and ``workflow run`` as a user runs them: a real process, a real Git
repository, the real store, a real HTTP server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.store.store import Store
from tests.conftest import MakeRepo
from tests.support.gitrepos import GitRepo
from tests.unit.workflows.conftest import Server

pytestmark = pytest.mark.slow

SMOKE = """\
name: smoke-test
description: Is the site up?
params:
  url: {type: string, required: true, pattern: "^https?://"}
  gate: {type: bool, default: false}
steps:
  - id: check
    type: http
    request: {url: "{{ params.url }}"}
  - id: note
    type: shell
    needs: [check]
    command: "echo 'checked {{ params.url }} in {{ env }}: {{ steps.check.outputs.json.ok }}'"
  - id: gate
    type: approval
    needs: [note]
    if: "{{ params.gate }}"
"""


def workflow(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "reconciler"), "workflow", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200"},
        timeout=60,
        check=False,
    )


@pytest.fixture
def repo(make_repo: MakeRepo) -> GitRepo:
    repo = make_repo()
    repo.commit(
        {
            "reconciler.yaml": "environments:\n  staging:\n    branch: main\n",
            "workflows/smoke-test.yaml": SMOKE,
        }
    )
    return repo


def test_a_passing_run_exits_0_and_is_recorded(repo: GitRepo, server: Server) -> None:
    result = workflow("run", "smoke-test", "--param", f"url={server.url}/health", cwd=repo.root)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "workflow smoke-test: run " in result.stdout
    assert "Succeeded" in result.stdout
    assert [r[1] for r in server.requests] == ["/health"]
    with Store.open("sqlite:///" + str(repo.root / ".git" / "reconciler" / "state.db")) as store:
        (run,) = store.list_runs("staging")
        steps = {s.step_id: s for s in store.steps(run.id)}
    assert (run.status, run.trigger) == ("Succeeded", "workflow:smoke-test")
    assert f"stdout: checked {server.url}/health in staging: True" in steps["note"].log
    assert steps["gate"].status == "Skipped"


def test_a_failing_run_exits_1_with_the_step_and_code(repo: GitRepo, server: Server) -> None:
    server.status = 500
    result = workflow("run", "smoke-test", "--param", f"url={server.url}/", cwd=repo.root)
    assert result.returncode == 1
    assert "Failed" in result.stdout
    assert "check: GET" in result.stdout
    assert "answered 500" in result.stdout


def test_an_approval_step_exits_3_waiting(repo: GitRepo, server: Server) -> None:
    args = ("run", "smoke-test", "-p", f"url={server.url}/", "-p", "gate=yes")
    result = workflow(*args, cwd=repo.root)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "WaitingApproval" in result.stdout
    assert workflow(*args, "--auto-approve", cwd=repo.root).returncode == 0


def test_param_errors_exit_1_before_anything_runs(repo: GitRepo, server: Server) -> None:
    result = workflow("run", "smoke-test", "--param", "ulr=http://x", cwd=repo.root)
    assert result.returncode == 1
    assert "RCN-3051 unknown param 'ulr'" in result.stderr
    assert "did you mean 'url'?" in result.stderr
    assert "param 'url' is required" in result.stderr
    assert server.requests == []


def test_an_unknown_workflow_exits_1_with_a_guess(repo: GitRepo) -> None:
    result = workflow("run", "smoke", cwd=repo.root)
    assert result.returncode == 1
    assert "no workflow 'smoke'; did you mean 'smoke-test'?" in result.stderr


def test_list_shows_workflows_and_a_broken_file_exits_1(repo: GitRepo) -> None:
    result = workflow("list", cwd=repo.root)
    assert result.returncode == 0, result.stderr
    assert "smoke-test  (gate:bool, url*:string)  Is the site up?" in result.stdout
    repo.commit({"workflows/broken.yaml": "name: broken\nsteps: []\n"})
    result = workflow("list", cwd=repo.root)
    assert result.returncode == 1
    assert "workflows/broken.yaml:2:8" in result.stderr
