"""Bad input of every shape: every outcome is a clean success or coded diagnostics, never a crash.

Generated and mutated Score files and reconciler.yaml documents go through the same validation
the CLI and the planner use. `RECONCILER_FUZZ_EXAMPLES` raises the number of examples (CI runs
the default: 10,000 in all across these tests).
"""

from __future__ import annotations

import copy
import os
import re
from io import StringIO
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from reconciler.diagnostics import Diagnostic
from reconciler.tree import MemoryTree
from reconciler.validate import validate_tree
from tests.conftest import PROJECT

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("RECONCILER_FUZZ_EXAMPLES", "2500"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
CODE = re.compile(r"^RCN-\d{4}$")


def _seeds() -> list[dict[str, Any]]:
    yaml = YAML(typ="safe", pure=True)
    paths = sorted((PROJECT / "examples").rglob("score.yaml"))
    return [yaml.load(p.read_text()) for p in paths]


SEEDS = _seeds()
CONFIG_SEED: dict[str, Any] = YAML(typ="safe", pure=True).load(
    (PROJECT / "examples" / "shop" / "reconciler.yaml").read_text()
)


def dump(value: Any) -> bytes:
    out = StringIO()
    YAML(typ="safe", pure=True).dump(value, out)
    return out.getvalue().encode()


def check(files: dict[str, bytes]) -> list[Diagnostic]:
    report = validate_tree(MemoryTree(files))
    for diag in report.diagnostics:
        assert CODE.match(diag.code.id)
        assert diag.message
        assert diag.effective_hint
        if diag.file is not None:
            assert diag.file in files
    return list(report.diagnostics)


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["${metadata.name}", "${resources.db.host}", "$$", "${", "}", "$"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)


@st.composite
def mutated(draw: st.DrawFn, seed: Any) -> Any:
    """A seed document with a few random edits at random depths."""
    doc = copy.deepcopy(seed)
    for _ in range(draw(st.integers(1, 4))):
        node = doc
        path: list[Any] = []
        while isinstance(node, dict | list) and node and draw(st.booleans()):
            key = draw(
                st.sampled_from(sorted(node) if isinstance(node, dict) else range(len(node)))
            )
            path.append(key)
            node = node[key]
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        edit = draw(st.sampled_from(["replace", "delete", "add"]))
        if not path:
            if isinstance(doc, dict) and edit == "add":
                doc[draw(st.text(max_size=10))] = draw(json_values)
            continue
        last = path[-1]
        if edit == "replace":
            parent[last] = draw(json_values)
        elif edit == "delete":
            del parent[last]
        elif isinstance(parent[last], dict):
            parent[last][draw(st.text(max_size=10))] = draw(json_values)
    return doc


@FUZZ
@given(st.sampled_from(range(len(SEEDS))).flatmap(lambda i: mutated(SEEDS[i])))
def test_mutated_score_files(doc: Any) -> None:
    check({"apps/x/score.yaml": dump(doc)})


@FUZZ
@given(json_values)
def test_arbitrary_documents(doc: Any) -> None:
    check({"score.yaml": dump(doc)})


@FUZZ
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_arbitrary_bytes(raw: bytes) -> None:
    check({"score.yaml": raw, "reconciler.yaml": raw})


@FUZZ
@given(mutated(CONFIG_SEED))
def test_mutated_configuration(doc: Any) -> None:
    check({"reconciler.yaml": dump(doc), "apps/a/score.yaml": dump(SEEDS[0])})


@pytest.mark.parametrize(
    "raw",
    [
        b"a: " + b"[" * 100_000,
        b"- " * 50_000,
        b"a: &a [" + b"*a, " * 1000 + b"]",
        (b"k%d: v\n" * 40_000) % tuple(range(40_000)),
        b"x: '" + b"y" * (5 * 1024 * 1024) + b"'",
        b"\x00\x01\x02",
        "a: \u202e\ufeff\U0001f512".encode(),
    ],
    ids=["deep-flow", "deep-block", "self-alias", "many-keys", "huge", "nul", "unicode"],
)
def test_hostile_documents(raw: bytes) -> None:
    diags = check({"score.yaml": raw})
    assert diags


def test_a_workload_that_fails_does_not_hide_the_others() -> None:
    good = (PROJECT / "examples" / "shop" / "apps" / "orders" / "score.yaml").read_bytes()
    diags = check({"a/score.yaml": b"a: [", "b/score.yaml": good})
    assert {d.file for d in diags} == {"a/score.yaml"}


def test_the_fuzz_budget_is_what_ci_promises() -> None:
    assert EXAMPLES * 4 >= 10_000 or os.environ.get("RECONCILER_FUZZ_EXAMPLES")
