"""`reconciler preview` as CI runs it: the real process on a real repository with two branches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from tests.conftest import MakeRepo

pytestmark = pytest.mark.slow

CONFIG = "environments:\n  staging:\n    branch: main\n"


def score(name: str, image: str) -> str:
    return (
        f"apiVersion: score.dev/v1b1\nmetadata:\n  name: {name}\n"
        f"containers:\n  main:\n    image: {image}\n"
    )


def preview(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run(
        [str(Path(sys.executable).parent / "reconciler"), "preview", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_a_pull_request_previewed_in_every_format(make_repo: MakeRepo) -> None:
    repo = make_repo()
    repo.commit(
        {
            "reconciler.yaml": CONFIG,
            "web/score.yaml": score("web", "nginx:1.26"),
            "api/score.yaml": score("api", "api:1"),
            "worker/score.yaml": score("worker", "worker:1"),
        }
    )
    repo.git("checkout", "--quiet", "-b", "feature")
    repo.commit(
        {
            "new/score.yaml": score("new", "new:1"),
            "web/score.yaml": score("web", "nginx:1.27"),
            "api/score.yaml": None,
            "worker/score.yaml": score("worker", "worker:1").replace("image:", "imag:"),
        }
    )
    markdown = preview("--base", "main", "--head", "feature", cwd=repo.root)
    assert markdown.returncode == 1, markdown.stderr
    tokens = MarkdownIt("commonmark").parse(markdown.stdout)
    headings = [
        tokens[i + 1].content
        for i, t in enumerate(tokens)
        if t.type == "heading_open" and t.tag == "h3"
    ]
    assert headings[0] == "Problems"
    assert headings[1:] == ["staging: api", "staging: new", "staging: web", "staging: worker"]
    assert "`worker/score.yaml:6` `RCN-1101`" in markdown.stdout
    assert markdown.stdout.rstrip().endswith("<!-- reconciler:preview -->")

    as_json = preview("--base", "main", "--head", "feature", "-o", "json", cwd=repo.root)
    document = json.loads(as_json.stdout)
    workloads = document["environments"][0]["workloads"]
    assert {w["name"]: w["action"] for w in workloads} == {
        "api": "delete",
        "new": "create",
        "web": "update",
        "worker": "failed",
    }
    assert document["exit_code"] == as_json.returncode == 1

    sarif = json.loads(preview("--base", "main", "-o", "sarif", cwd=repo.root).stdout)
    found = {
        (r["ruleId"], r["locations"][0]["physicalLocation"]["region"]["startLine"])
        for r in sarif["runs"][0]["results"]
    }
    assert found == {("RCN-1101", 6), ("RCN-1102", 5)}

    text = preview("--base", "main", "--env", "staging", "-o", "text", cwd=repo.root)
    assert "Plan: 1 to add, 1 to change, 1 to destroy." in text.stdout

    repo.commit({"worker/score.yaml": score("worker", "worker:1")})
    assert preview("--base", "main", cwd=repo.root).returncode == 2
    assert preview("--base", "main", "--head", "main", cwd=repo.root).returncode == 0
    assert not (repo.root / ".git" / "reconciler").exists()  # no store was created
    assert repo.git("status", "--porcelain") == ""


def test_unknown_refs_are_coded_errors(make_repo: MakeRepo) -> None:
    repo = make_repo()
    repo.commit({"reconciler.yaml": CONFIG})
    result = preview("--base", "no-such-branch", cwd=repo.root)
    assert result.returncode == 1
    assert "RCN-4002" in result.stderr
    assert "Traceback" not in result.stderr
