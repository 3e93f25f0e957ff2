"""action.yml and .pre-commit-hooks.yaml keep the habits CONVENTIONS.md lists."""

from __future__ import annotations

import re
from typing import Any

from ruamel.yaml import YAML

from tests.conftest import PROJECT


def _load(name: str) -> Any:
    return YAML(typ="safe").load((PROJECT / name).read_text(encoding="utf-8"))


def test_action_is_composite_with_bash_steps_and_no_interpolated_scripts() -> None:
    action = _load("action.yml")
    assert action["runs"]["using"] == "composite"
    assert all(spec.get("description") for spec in action["inputs"].values())
    runs = [step for step in action["runs"]["steps"] if "run" in step]
    assert runs
    for step in runs:
        assert step["shell"] == "bash"
        assert "${{" not in step["run"], step["name"]
    assert "exit-code" in action["outputs"]
    uses = [step.get("uses", "") for step in action["runs"]["steps"]]
    assert any(u.startswith("github/codeql-action/upload-sarif@") for u in uses)


def test_pre_commit_hook() -> None:
    (hook,) = _load(".pre-commit-hooks.yaml")
    assert hook["id"] == "reconciler-validate"
    assert (hook["entry"], hook["language"], hook["require_serial"]) == (
        "reconciler validate",
        "python",
        True,
    )
    files = re.compile(hook["files"])
    assert files.search("score.yaml")
    assert files.search("apps/web/score.prod.yml")
    assert not files.search("apps/web/myscore.yaml")
