"""``load_workload`` types a document before checking it against the schema; these tests hold
it to what checking first gave: the same diagnostics, in the same order, and a typed workload
exactly when there is no error."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
from pydantic import ValidationError

from reconciler.diagnostics import Diagnostic, has_errors
from reconciler.schemacheck import model_errors
from reconciler.score import loader
from reconciler.score.loader import (
    LoadedWorkload,
    check_document,
    load_workload,
    load_workloads,
)
from reconciler.score.models import Workload
from reconciler.tree import DirectoryTree
from reconciler.yamldoc import load_yaml

HEAD = "apiVersion: score.dev/v1b1\nmetadata:\n  name: web\n"

DOCUMENTS = {
    "valid": HEAD + "containers:\n  main:\n    image: nginx\n",
    "valid with placeholders and resources": HEAD
    + "containers:\n  main:\n    image: nginx\n    variables:\n"
    + "      DB: ${resources.db.host}\n      NAME: ${metadata.name}\n"
    + "resources:\n  db:\n    type: postgres\n",
    "unknown key": HEAD + "containers:\n  main:\n    imagee: nginx\n",
    "explicit null": HEAD + "containers:\n  main:\n    image: nginx\n    args: null\n",
    "wrong type": HEAD + "containers:\n  main:\n    image: 3\n",
    "two contents": HEAD
    + "containers:\n  main:\n    image: nginx\n    files:\n      /a:\n"
    + "        content: x\n        source: y\n",
    "probe without handler": HEAD
    + "containers:\n  main:\n    image: nginx\n    livenessProbe: {}\n",
    "integer key in metadata": "apiVersion: score.dev/v1b1\nmetadata:\n  name: web\n  1: x\n"
    + "containers:\n  main:\n    image: nginx\n",
    "schema and placeholder errors": HEAD
    + "containers:\n  main:\n    image: nginx\n    variables:\n      A: ${resources.nope.x}\n"
    + "    cpu: 1\n",
    "placeholder error only": HEAD
    + "containers:\n  main:\n    image: nginx\n    variables:\n      A: ${metdata.name}\n",
    "deprecated list form": HEAD
    + "containers:\n  main:\n    image: nginx\n    files:\n      - target: /a\n"
    + "        content: x\n",
    "missing file source": HEAD
    + "containers:\n  main:\n    image: nginx\n    files:\n      /a:\n        source: gone.txt\n",
    "before an unknown container": HEAD
    + "containers:\n  main:\n    image: nginx\n    before:\n      other:\n"
    + "        ready: started\n",
    "not a mapping": "- 1\n- 2\n",
    "float port": HEAD
    + "containers:\n  main:\n    image: nginx\nservice:\n  ports:\n    www:\n      port: 80.0\n",
}


def _checked_first(tree: DirectoryTree, path: str) -> tuple[list[Diagnostic], Workload | None]:
    """What loading gave when the schema pass ran before typing."""
    doc, problems = load_yaml(tree.read(path), path)
    if doc is None:
        return problems, None
    problems = check_document(doc, tree)
    workload = None
    if not has_errors(problems):
        try:
            workload = Workload.from_data(doc.data)
        except ValidationError as exc:
            problems.extend(model_errors(doc, exc))
    return problems, workload


@pytest.mark.parametrize("text", DOCUMENTS.values(), ids=DOCUMENTS.keys())
def test_typing_first_reports_what_checking_first_did(tmp_path: Path, text: str) -> None:
    (tmp_path / "score.yaml").write_text(text, encoding="utf-8")
    tree = DirectoryTree(tmp_path)
    expected, typed = _checked_first(tree, "score.yaml")
    loaded: LoadedWorkload = load_workload(tree, "score.yaml")
    assert loaded.diagnostics == expected
    assert [str(d) for d in loaded.diagnostics] == [str(d) for d in expected]
    assert (loaded.workload is None) == (typed is None)
    if typed is not None:
        assert loaded.workload == typed


def test_the_cases_cover_both_paths(tmp_path: Path) -> None:
    """Some documents type and some do not, with and without other errors."""
    outcomes = set()
    for index, text in enumerate(DOCUMENTS.values()):
        (tmp_path / f"{index}.yaml").write_text(text, encoding="utf-8")
        loaded = load_workload(DirectoryTree(tmp_path), f"{index}.yaml")
        outcomes.add((loaded.workload is not None, has_errors(loaded.diagnostics)))
    assert outcomes == {(True, False), (False, True)}


BEFORE = (
    HEAD
    + "containers:\n  main:\n    image: nginx\n    before:\n      side:\n        ready: started\n"
    + "  side:\n    image: busybox\n"
)


@pytest.mark.parametrize("text", [DOCUMENTS["valid with placeholders and resources"], BEFORE])
def test_loading_leaves_no_cycle_for_the_collector(tmp_path: Path, text: str) -> None:
    """A valid Score file loads into values that reference counting alone frees: a plan loads
    every file of the repository, and a cycle per file (a loader, a search closure) made the
    cyclic collector run more and longer during a first reconcile."""
    (tmp_path / "score.yaml").write_text(text, encoding="utf-8")
    tree = DirectoryTree(tmp_path)
    assert load_workload(tree, "score.yaml").workload is not None  # warm, and valid
    # Until nothing is left of earlier tests: a cycle kept alive only by an object that a
    # collection frees (a pygit2 repository, held by a tree in another test's garbage)
    # becomes garbage for the next collection only.
    for _ in range(10):
        if not gc.collect():
            break
    gc.disable()
    try:
        load_workload(tree, "score.yaml")
        found = gc.collect()
    finally:
        gc.enable()
    assert found == 0


def test_loading_in_batches_gives_what_loading_one_by_one_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parsing a batch of files before typing them changes nothing but the time: each file's
    result, in order, across batches, beside files that cannot be read or parsed."""
    monkeypatch.setattr(loader, "LOAD_BATCH", 4)
    tree = DirectoryTree(tmp_path)
    paths = []
    for index, text in enumerate([*DOCUMENTS.values(), "a: [unclosed\n"]):
        path = f"{index:02d}.yaml"
        (tmp_path / path).write_text(text, encoding="utf-8")
        paths.append(path)
    paths.insert(5, "missing.yaml")  # unreadable: a diagnostic, not an exception
    assert len(paths) > 3 * loader.LOAD_BATCH

    batched = list(load_workloads([(tree, path) for path in paths]))

    assert [w.file for w in batched] == paths
    for one, path in zip(batched, paths, strict=True):
        alone = load_workload(tree, path)
        assert one.diagnostics == alone.diagnostics
        assert one.workload == alone.workload
        assert one.name == alone.name
    outcomes = {(w.workload is not None, w.document is None) for w in batched}
    assert outcomes == {(True, False), (False, False), (False, True)}
