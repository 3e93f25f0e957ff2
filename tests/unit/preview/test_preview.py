"""The preview of a pull request on a real repository: exactly what the feature branch changes."""

from __future__ import annotations

import json
from pathlib import Path

from markdown_it import MarkdownIt
from markdown_it.token import Token

from reconciler.gitops.repository import Repository
from reconciler.pipeline import open_source, plan_environment, record_desired, select_environments
from reconciler.preview import preview
from reconciler.preview.annotations import to_annotations
from reconciler.preview.compute import loaded_workloads
from reconciler.preview.markdown import MARKER, escape, fit, marker, to_markdown
from reconciler.preview.model import EXIT_CHANGES, EXIT_ERROR, EXIT_NO_CHANGES, Verdict
from reconciler.store.store import Store
from tests.unit.preview.support import WEB_DB, PullRequest, score


def _actions(result_env: object) -> dict[str, str]:
    return {w.name: w.action for w in result_env.workloads}  # type: ignore[attr-defined]


def test_reports_exactly_what_the_branch_changes(pull_request: PullRequest) -> None:
    repo = Repository.open(pull_request.repo.root)
    result = preview(repo, "main", "feature")
    assert [e.environment for e in result.environments] == ["production", "staging"]
    for env in result.environments:
        assert env.basis == "base"
        assert _actions(env) == {
            "api": "delete",
            "new": "create",
            "web": "update",
            "worker": "failed",
        }
        assert (env.summary.add, env.summary.change, env.summary.destroy) == (1, 1, 1)
        assert env.verdict is Verdict.FAILED
    problems = [(d.file, d.line, d.code.id) for d in result.all_diagnostics()]
    assert ("worker/score.yaml", 6, "RCN-1101") in problems
    assert {d.file for d in result.all_diagnostics()} == {"worker/score.yaml"}
    assert result.exit_code == EXIT_ERROR
    web = next(w for w in result.environments[0].workloads if w.name == "web")
    assert "-      - image: nginx:1.26\n+      - image: nginx:1.27\n" in web.manifests_diff


def test_exit_codes_no_changes_and_changes(pull_request: PullRequest) -> None:
    repo = Repository.open(pull_request.repo.root)
    assert preview(repo, "main", "main").exit_code == EXIT_NO_CHANGES
    pull_request.repo.commit({"worker/score.yaml": score("worker", "worker:1")}, "fix")
    fixed = preview(repo, "main", "feature")
    assert fixed.exit_code == EXIT_CHANGES
    assert _actions(fixed.environments[0])["worker"] == "no-op"


def test_against_the_recorded_state_when_the_base_was_reconciled(
    pull_request: PullRequest, tmp_path: Path
) -> None:
    repo = Repository.open(pull_request.repo.root)
    url = f"sqlite:///{tmp_path / 'state.db'}"
    with Store.open(url) as store:
        source = open_source(repo, "main")
        for name, env in select_environments(source.config, "staging"):
            planned = plan_environment(repo, store, source, name, env)
            assert planned.desired is not None
            record_desired(store, planned.desired, source.commit, loaded_workloads(planned))
        before = (store.recorded("staging"), store.last_commit("staging"), store.environments())
        result = preview(repo, "main", "feature", recorded=store)
        after = (store.recorded("staging"), store.last_commit("staging"), store.environments())
    by_env = {e.environment: e for e in result.environments}
    assert by_env["staging"].basis == "recorded"
    assert by_env["production"].basis == "base"
    assert _actions(by_env["staging"]) == _actions(by_env["production"])
    assert after == before  # read, never written


def _walk(tokens: list[Token]) -> list[tuple[str, str]]:
    """(type, content) of the block tokens that matter for the structure."""
    out = []
    for i, t in enumerate(tokens):
        if t.type == "heading_open":
            out.append((t.tag, tokens[i + 1].content))
        elif t.type == "fence":
            out.append(("fence", t.info))
        elif t.type == "html_block":
            out.append(("html", t.content.strip()))
    return out


def test_markdown_structure(pull_request: PullRequest) -> None:
    repo = Repository.open(pull_request.repo.root)
    text = to_markdown(
        preview(repo, "main", "feature", environment="staging"),
        link_base="https://forge.example/o/r/blob/abc",
    )
    assert text.rstrip().splitlines()[-1] == MARKER
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    structure = _walk(tokens)
    headings = [c for t, c in structure if t in ("h2", "h3")]
    assert headings == [
        "Reconciler preview: failed",
        "Problems",
        "`staging`: failed",
        "staging: api",
        "staging: new",
        "staging: web",
        "staging: worker",
    ]
    assert [t for t, _ in structure].count("fence") == 6  # plan and manifests, 3 workloads
    assert all(info == "diff" for t, info in structure if t == "fence")
    folds = [c for t, c in structure if t == "html" and c.startswith("<details>")]
    assert len(folds) == 3
    assert all("Show manifests diff" in f for f in folds)
    assert any(t.type == "table_open" for t in tokens)
    link = "[`worker/score.yaml:6`](https://forge.example/o/r/blob/abc/worker/score.yaml#L6)"
    assert link in text
    plan_line = "**Plan: 1 to add, 0 to change, 0 to destroy.**"
    section = text[text.index("### staging: new") :]
    assert section.index(plan_line) < section.index("```diff")  # the Plan: line outside the fold


def test_split_comment_has_the_environment_marker(pull_request: PullRequest) -> None:
    repo = Repository.open(pull_request.repo.root)
    result = preview(repo, "main", "feature")
    text = to_markdown(result, environment="production")
    assert text.rstrip().endswith(marker("production"))
    assert "staging" not in text


def test_long_previews_are_cut_with_fences_and_folds_closed() -> None:
    lines = ["## Title", "", "<details><summary>x</summary>", "", "```diff"]
    lines += [f"+ line {i} `with` ```` ticks" for i in range(5000)]
    lines += ["```", "", "</details>", ""]
    text = fit(lines, MARKER, limit=20_000)
    assert len(text) <= 20_000
    assert text.rstrip().endswith(MARKER)
    assert "The full preview is in the JSON output" in text
    tokens = MarkdownIt("commonmark").parse(text)
    fences = [t for t in tokens if t.type == "fence"]
    assert len(fences) == 1
    assert fences[0].info == "diff"
    assert tokens[-1].type == "html_block"
    assert MARKER in tokens[-1].content
    assert text.count("<details>") == text.count("</details>")


def test_repository_text_cannot_inject_markup() -> None:
    assert escape("<!-- reconciler:preview --> *x* `y`") == (
        "\\<!-- reconciler:preview --\\> \\*x\\* \\`y\\`"
    )


def test_json_is_stable_and_annotations_carry_codes(pull_request: PullRequest) -> None:
    repo = Repository.open(pull_request.repo.root)
    first = json.dumps(preview(repo, "main", "feature").to_dict())
    second = preview(repo, "main", "feature")
    assert json.dumps(second.to_dict()) == first
    document = second.to_dict()
    assert document["format_version"] == 1
    assert document["exit_code"] == 1
    env = document["environments"][0]
    assert {w["name"]: w["action"] for w in env["workloads"]}["worker"] == "failed"
    notes = to_annotations(second.all_diagnostics())
    typo = next(a for a in notes if a.title == "RCN-1101")
    assert (typo.path, typo.start_line, typo.end_line) == ("worker/score.yaml", 6, 6)
    assert typo.annotation_level == "failure"
    assert "hint: did you mean 'image'?" in typo.message


def test_an_environment_the_head_adds_starts_from_nothing(pull_request: PullRequest) -> None:
    config = "environments:\n  staging:\n    branch: main\n  production:\n    branch: main\n"
    pull_request.repo.commit(
        {
            "reconciler.yaml": config + "  qa:\n    branch: main\n",
            "worker/score.yaml": score("worker", "worker:1"),
            "web/score.yaml": score("web", "nginx:1.26", WEB_DB),
        },
        "qa",
    )
    repo = Repository.open(pull_request.repo.root)
    qa = next(e for e in preview(repo, "main", "feature").environments if e.environment == "qa")
    assert set(_actions(qa).values()) == {"create"}
