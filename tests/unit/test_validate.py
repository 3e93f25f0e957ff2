"""Validating a repository: every problem, coded and positioned, across files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reconciler.catalogue import Code
from reconciler.diagnostics import Diagnostic, Severity
from reconciler.tree import DirectoryTree
from reconciler.validate import validate_tree
from tests.conftest import WriteRepo

WEB = """\
apiVersion: score.dev/v1b1
metadata:
  name: web
containers:
  main:
    image: nginx
    variables:
      DB: postgres://${resources.db.host}/${metadata.name}
resources:
  db:
    type: postgres
"""


def run(root: Path) -> list[Diagnostic]:
    return list(validate_tree(DirectoryTree(root)).diagnostics)


def codes(diags: list[Diagnostic]) -> list[tuple[str, str | None, int | None, int | None]]:
    return [(d.code.id, d.file, d.line, d.column) for d in diags]


def test_a_clean_repository_has_no_diagnostics(write_repo: WriteRepo) -> None:
    root = write_repo({"apps/web/score.yaml": WEB})
    report = validate_tree(DirectoryTree(root))
    assert report.diagnostics == ()
    assert report.files == 1
    assert report.workloads[0].workload is not None


def test_unknown_field_points_at_the_key_and_suggests_the_known_one(write_repo: WriteRepo) -> None:
    root = write_repo({"score.yaml": WEB.replace("    image: nginx", "    imagee: nginx")})
    diags = run(root)
    unknown = [d for d in diags if d.code is Code.UNKNOWN_FIELD]
    assert codes(unknown) == [("RCN-1101", "score.yaml", 6, 5)]
    assert unknown[0].hint == "did you mean 'image'?"
    missing = [d for d in diags if d.code is Code.MISSING_FIELD]
    assert missing
    assert "'image'" in missing[0].message


def test_every_problem_is_reported_in_one_pass(write_repo: WriteRepo) -> None:
    broken = (
        WEB.replace("name: web", "name: Web_App")
        .replace("${resources.db.host}", "${resources.dbb.host}")
        .replace("type: postgres", "type: postgres\n    clas: big")
    )
    diags = run(write_repo({"score.yaml": broken}))
    found = {d.code for d in diags}
    assert {Code.INVALID_NAME, Code.PLACEHOLDER_UNKNOWN_RESOURCE, Code.UNKNOWN_FIELD} <= found
    typo = next(d for d in diags if d.code is Code.UNKNOWN_FIELD)
    assert typo.hint == "did you mean 'class'?"
    assert (typo.line, typo.column) == (12, 5)


def test_placeholder_problems_name_the_placeholder_and_its_place(write_repo: WriteRepo) -> None:
    text = WEB.replace("${metadata.name}", "${metadata.nope}")
    (diag,) = run(write_repo({"score.yaml": text}))
    assert diag.code is Code.PLACEHOLDER_MISSING_KEY
    assert "metadata.nope" in diag.message
    assert diag.message.startswith("containers.main.variables.DB:")
    assert (diag.line, diag.column) == (8, 11)


def test_wrong_types_and_enums_are_explained(write_repo: WriteRepo) -> None:
    text = WEB + "service:\n  ports:\n    http:\n      port: 70000\n      protocol: tcp\n"
    diags = run(write_repo({"score.yaml": text}))
    by_code = {d.code: d for d in diags}
    assert by_code[Code.OUT_OF_RANGE].line == 15
    enum = by_code[Code.NOT_ALLOWED_VALUE]
    assert enum.line == 16
    assert enum.hint is not None
    assert "did you mean 'TCP'" in enum.hint


def test_unquoted_file_mode_gets_a_hint_to_quote_it(write_repo: WriteRepo) -> None:
    text = WEB + ""
    text = text.replace(
        "    variables:",
        "    files:\n      /etc/x:\n        content: x\n        mode: 644\n    variables:",
    )
    diags = run(write_repo({"score.yaml": text}))
    (diag,) = [d for d in diags if d.code is Code.WRONG_TYPE]
    assert diag.hint is not None
    assert '"644"' in diag.hint


def test_files_need_exactly_one_content(write_repo: WriteRepo) -> None:
    text = WEB.replace(
        "    variables:",
        "    files:\n      /etc/x:\n        content: x\n        source: y.txt\n    variables:",
    )
    diags = run(write_repo({"score.yaml": text, "y.txt": "hello"}))
    assert Code.FILE_CONTENT_CHOICE in {d.code for d in diags}


def test_missing_and_escaping_file_sources(write_repo: WriteRepo, tmp_path: Path) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_text("top secret")
    files = (
        "    files:\n"
        "      /a:\n        source: ../../../etc/passwd\n"
        "      /b:\n        source: /etc/passwd\n"
        "      /c:\n        source: missing.txt\n"
        "      /d:\n        source: link.txt\n"
        "      /e:\n        source: ok.txt\n"
        "    variables:"
    )
    root = write_repo(
        {
            "apps/web/score.yaml": WEB.replace("    variables:", files),
            "apps/web/ok.txt": "I am ${metadata.name} ${metadata.typo}",
        }
    )
    os.symlink(outside, root / "apps/web/link.txt")
    diags = run(root)
    assert [(d.code, d.line) for d in diags] == [
        (Code.FILE_SOURCE_ESCAPES, 9),
        (Code.FILE_SOURCE_ESCAPES, 11),
        (Code.FILE_SOURCE_MISSING, 13),
        (Code.FILE_SOURCE_ESCAPES, 15),
        (Code.PLACEHOLDER_MISSING_KEY, 17),
    ]
    assert "metadata.typo" in diags[-1].message


def test_before_cycles_and_unknown_containers(write_repo: WriteRepo) -> None:
    text = WEB.replace(
        "    image: nginx\n",
        "    image: nginx\n    before:\n"
        "      side: {ready: started}\n      ghost: {ready: started}\n",
    ).replace(
        "resources:",
        "  side:\n    image: busybox\n    before:\n      main: {ready: healthy}\nresources:",
    )
    diags = run(write_repo({"score.yaml": text}))
    found = [(d.code, d.line) for d in diags]
    assert (Code.BEFORE_UNKNOWN_CONTAINER, 9) in found
    cycle = next(d for d in diags if d.code is Code.BEFORE_CYCLE)
    assert "main -> side -> main" in cycle.message


def test_duplicate_workload_names_across_files(write_repo: WriteRepo) -> None:
    root = write_repo({"a/score.yaml": WEB, "b/score.yaml": WEB})
    (diag,) = run(root)
    assert diag.code is Code.DUPLICATE_WORKLOAD
    assert (diag.file, diag.line) == ("b/score.yaml", 3)
    assert "a/score.yaml:3" in diag.message


def test_deprecated_list_forms_are_warnings(write_repo: WriteRepo) -> None:
    text = WEB.replace(
        "    variables:", "    files:\n    - target: /x\n      content: y\n    variables:"
    )
    diags = run(write_repo({"score.yaml": text}))
    assert [(d.code, d.severity) for d in diags] == [(Code.DEPRECATED_LIST_FORM, Severity.WARNING)]


def test_globs_from_reconciler_yaml_choose_the_files(write_repo: WriteRepo) -> None:
    root = write_repo(
        {
            "reconciler.yaml": "workloads: ['services/**/*.yaml']\n",
            "services/web.yaml": WEB,
            "apps/ignored/score.yaml": "not: [valid",
        }
    )
    report = validate_tree(DirectoryTree(root))
    assert report.diagnostics == ()
    assert report.files == 2  # reconciler.yaml and the one workload


def test_an_empty_repository_warns_that_nothing_was_found(write_repo: WriteRepo) -> None:
    (diag,) = run(write_repo({"README.md": "hello"}))
    assert (diag.code, diag.severity) == (Code.NO_SCORE_FILES, Severity.WARNING)


def test_bad_reconciler_yaml_is_positioned_too(write_repo: WriteRepo) -> None:
    config = "environments:\n  staging:\n    branch: main\n    aproval: required\n"
    diags = run(write_repo({"reconciler.yaml": config, "score.yaml": WEB}))
    (diag,) = diags
    assert (diag.code, diag.file, diag.line, diag.column) == (
        Code.UNKNOWN_FIELD,
        "reconciler.yaml",
        4,
        5,
    )
    assert diag.hint == "did you mean 'approval'?"


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"- a\n",
        b"a: [\n",
        b"\xff\xfe\x00",
        b"a: 1\n---\nb: 2\n",
        b"apiVersion: score.dev/v1b1\n",
    ],
)
def test_unreadable_documents_are_diagnostics(write_repo: WriteRepo, raw: bytes) -> None:
    diags = run(write_repo({"score.yaml": raw}))
    assert diags
    assert all(d.file == "score.yaml" and d.line is not None for d in diags)


def test_list_form_items_need_a_unique_target(write_repo: WriteRepo) -> None:
    text = WEB.replace(
        "    variables:",
        "    files:\n    - content: a\n    - target: /x\n      content: b\n"
        "    - target: /x\n      content: c\n    variables:",
    )
    diags = run(write_repo({"score.yaml": text}))
    assert [(d.code, d.line) for d in diags] == [
        (Code.DEPRECATED_LIST_FORM, 7),
        (Code.MISSING_FIELD, 8),
        (Code.DUPLICATE_KEY, 11),
    ]


def test_placeholder_typos_get_did_you_mean(write_repo: WriteRepo) -> None:
    text = WEB.replace("${metadata.name}", "${metadata.nmae}").replace(
        "${resources.db.host}", "${resources.dbb.host}"
    )
    diags = run(write_repo({"score.yaml": text}))
    assert sorted((d.code.id, d.hint) for d in diags) == [
        ("RCN-1202", "did you mean 'db'?"),
        ("RCN-1203", "did you mean 'name'?"),
    ]
