"""Loading workflow files: every problem with its file, line and column."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.tree import MemoryTree
from reconciler.workflows import load_workflow, load_workflows
from tests.conftest import PROJECT

GOOD = b"""\
name: deploy
steps:
  - id: a
    type: shell
    command: "true"
"""


def problems(text: str) -> list[tuple[int | None, int | None, str, str]]:
    workflow, found = load_workflow(text.encode(), "workflows/w.yaml")
    assert workflow is None
    return [(d.line, d.column, d.code.id, d.message) for d in found]


def test_the_example_shop_workflow_loads() -> None:
    raw = (PROJECT / "examples" / "shop" / "workflows" / "smoke-test.yaml").read_bytes()
    workflow, found = load_workflow(raw, "workflows/smoke-test.yaml")
    assert found == []
    assert workflow is not None
    assert [s.id for s in workflow.steps] == ["check", "report", "announce", "on-failure"]


def test_schema_problems_point_at_the_key_or_value_with_a_guess() -> None:
    text = """\
name: Bad_Name
params:
  n: {type: int, mn: 1}
  t: {type: strng}
steps:
  - id: b
    type: http
    request: {url: x, methd: GET}
  - id: c
    type: wiat
"""
    found = problems(text)
    assert found == [
        (1, 7, "RCN-1107", 'name: "Bad_Name" is not an RFC 1123 label'),
        (3, 18, "RCN-1101", "params.n.mn: unknown field 'mn'"),
        (4, 13, "RCN-1105", 'params.t.type: "strng" is not one of the allowed values'),
        (8, 23, "RCN-1101", "steps[0].request.methd: unknown field 'methd'"),
        (10, 11, "RCN-1105", 'steps[1].type: "wiat" is not one of the allowed values'),
    ]
    _, diagnostics = load_workflow(text.encode(), "w.yaml")
    assert diagnostics[1].hint == "did you mean 'min'?"


def test_duplicate_ids_unknown_needs_and_param_rules() -> None:
    text = """\
name: semantic
params:
  n: {type: int, default: 20, max: 10}
  r: {type: string, required: true, default: x}
  p: {type: string, pattern: "([a"}
steps:
  - id: build
    type: shell
    command: "true"
    needs: [biuld-x, tset]
  - id: build
    type: wait
    duration: 5s
  - id: cleanup
    type: wait
    duration: 1s
    when: on_failure
"""
    found = problems(text)
    assert (
        3,
        27,
        "RCN-1450",
        "params.n.default: default 20 is greater than the maximum 10",
    ) in found
    assert any(line == 4 and "required param cannot have a default" in m for line, _, _, m in found)
    assert any(line == 5 and "pattern is not a regular expression" in m for line, _, _, m in found)
    assert (11, 9, "RCN-1451", "steps[1].id: step id 'build' is also used by steps[0]") in found
    assert (10, 13, "RCN-1452", "steps[0].needs[0]: no step 'biuld-x'") in found
    assert any(line == 17 and "on_failure step" in m for line, _, _, m in found)


def test_a_cycle_in_needs_is_reported_once_at_its_first_step() -> None:
    text = """\
name: loop
steps:
  - id: a
    type: wait
    duration: 1s
    needs: [c]
  - id: b
    type: wait
    duration: 1s
    needs: [a]
  - id: c
    type: wait
    duration: 1s
    needs: [b]
  - id: d
    type: wait
    duration: 1s
    needs: [d]
"""
    assert problems(text) == [
        (6, 12, "RCN-1453", "steps[0].needs: steps need each other in a cycle: a → c → b → a"),
        (18, 13, "RCN-1453", "steps[3].needs[0]: a step cannot need itself"),
    ]


def test_template_syntax_errors_carry_the_line_inside_a_block() -> None:
    text = """\
name: tpl
steps:
  - id: s
    type: shell
    command: |
      echo one
      echo {{ params.x }
    env: {A: "{% if %}"}
  - id: t
    type: shell
    for_each: "items: {{ [1] }}"
    command: "true"
"""
    found = problems(text)
    assert (7, 1, "RCN-1454", "steps[0].command: template syntax error: unexpected '}'") in found
    assert any(
        line == 8 and m.startswith("steps[0].env.A: template syntax") for line, _, _, m in found
    )
    assert any(line == 11 and "for_each is a list" in m for line, _, _, m in found)


def test_names_are_unique_across_files_and_globs_select_files() -> None:
    tree = MemoryTree(
        {
            "workflows/a.yaml": GOOD,
            "workflows/b.yaml": GOOD,
            "workflows/notes.txt": b"not yaml: [",
            "other/c.yaml": GOOD.replace(b"deploy", b"other"),
        }
    )
    loaded = load_workflows(tree, ["workflows/*.yaml"])
    assert list(loaded.workflows) == ["deploy"]
    assert loaded.files == {"deploy": "workflows/a.yaml"}
    (dup,) = loaded.diagnostics
    assert (dup.file, dup.line, dup.column) == ("workflows/b.yaml", 1, 7)
    assert dup.message == "name: workflow 'deploy' is also defined in workflows/a.yaml"
    assert loaded.failed


@pytest.mark.parametrize("bad", [b"- a list\n", b"name: x: y\n", b""])
def test_unreadable_yaml_is_a_diagnostic_not_an_exception(bad: bytes, tmp_path: Path) -> None:
    workflow, found = load_workflow(bad, "w.yaml")
    assert workflow is None
    assert found
    assert all(d.file == "w.yaml" for d in found)
