"""Load one Score file: YAML, then the typed model, then the schema (only for a document the
models refuse, to explain why) and the semantic checks.

Who calls it: ``reconciler validate`` and the planner's source stage. It returns every problem it
found as diagnostics and a typed ``Workload`` only when there is no error, so that nothing
downstream ever sees a half-valid workload.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from pydantic import ValidationError

from reconciler.catalogue import Code
from reconciler.diagnostics import Diagnostic, has_errors
from reconciler.schemacheck import check as schema_check
from reconciler.schemacheck import format_path, model_errors
from reconciler.score import semantics
from reconciler.score.models import Workload
from reconciler.score.placeholders import check_workload
from reconciler.specs import load_spec
from reconciler.tree import Tree
from reconciler.yamldoc import DEFAULT_MAX_BYTES, YamlDocument, load_yaml

SCHEMA_NAME = "score-v1b1.schema.json"

# Words for the schema's regular expressions, so messages never show a raw pattern.
PATTERN_WORDS: Mapping[str, str] = {
    r"^(0\.\d+|[1-9]\d*(\.\d+)?)(K|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$": (
        "a memory quantity such as 128Mi, 1.5Gi or 500M"
    ),
    r"^\d+(?:m|\.\d+)?$": "a CPU quantity such as 250m, 1 or 0.5",
    r"^0?[0-7]{3}$": 'an octal file mode such as "0644" (quote it)',
    r"^[A-Za-z0-9_-]+$": "an HTTP header name (letters, digits, '_' and '-')",
    r"^[A-Za-z0-9][A-Za-z0-9-]{0,61}[A-Za-z0-9]$": (
        "a resource type or class (letters, digits and '-', not starting or ending with '-')"
    ),
    r"^[a-z0-9]+(?:-+[a-z0-9]+)*(?:\.[a-z0-9]+(?:-+[a-z0-9]+)*)*$": (
        "a resource id (lower-case labels of a-z, 0-9 and '-', separated by '.')"
    ),
    r"^[^=]+$": "a variable name without '='",
    r"^(([a-z0-9][a-z0-9-]{0,61}[a-z0-9])(\.[a-z0-9][a-z0-9-]{0,61}[a-z0-9])*/)?"
    r"[A-Za-z0-9][A-Za-z0-9._-]{0,61}[A-Za-z0-9]$": (
        "an annotation key (an optional DNS prefix and '/', then letters, digits, '.', '_', '-')"
    ),
}


@cache
def score_schema() -> dict[str, Any]:
    return load_spec(SCHEMA_NAME)


@dataclass(frozen=True, slots=True, weakref_slot=True)
class LoadedWorkload:
    file: str
    document: YamlDocument | None
    workload: Workload | None
    diagnostics: list[Diagnostic] = field(default_factory=list)

    @property
    def name(self) -> str | None:
        if self.workload is not None:
            return self.workload.metadata.name
        if self.document is not None:
            meta = self.document.data.get("metadata")
            name = meta.get("name") if isinstance(meta, dict) else None
            return name if isinstance(name, str) else None
        return None


LOAD_BATCH = 32
"""Files ``load_workloads`` parses before it types and checks them."""


def load_workload(tree: Tree, path: str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> LoadedWorkload:
    """Read, check and type one Score file from ``tree``; never raises for bad input."""
    parsed = _parse(tree, path, max_bytes)
    return parsed if isinstance(parsed, LoadedWorkload) else _typed(tree, path, *parsed)


def load_workloads(
    files: Sequence[tuple[Tree, str]], *, max_bytes: int = DEFAULT_MAX_BYTES
) -> Iterator[LoadedWorkload]:
    """``load_workload`` of each (tree, path), in order, ``LOAD_BATCH`` files parsed before
    they are typed and checked. The parser then runs file after file while its code and data
    are in the CPU's caches, and so do the models' validators: one file parsed, typed and
    checked after another, each parse took 5 % longer and loading 10 files 7 % (8.8 against
    8.2 ms), and a full plan of 10 workloads 3 % (2 % at 1,000). A batch's parsed documents
    are alive together, a few MB at most."""
    for start in range(0, len(files), LOAD_BATCH):
        batch = deque((t, p, _parse(t, p, max_bytes)) for t, p in files[start : start + LOAD_BATCH])
        while batch:  # each document let go of once typed
            tree, path, parsed = batch.popleft()
            yield parsed if isinstance(parsed, LoadedWorkload) else _typed(tree, path, *parsed)


def _parse(tree: Tree, path: str, max_bytes: int) -> tuple[bytes, YamlDocument] | LoadedWorkload:
    """The file's bytes and document; what was loaded of it when it cannot be read or parsed."""
    try:
        raw = tree.read(path)
    except OSError as exc:
        problem = Diagnostic(
            Code.UNREADABLE_FILE, f"cannot read file: {exc.strerror or exc}", file=path
        )
        return LoadedWorkload(path, None, None, [problem])
    doc, problems = load_yaml(raw, path, max_bytes=max_bytes)
    if doc is None:
        return LoadedWorkload(path, None, None, problems)
    return raw, doc


def _typed(tree: Tree, path: str, raw: bytes, doc: YamlDocument) -> LoadedWorkload:
    """A parsed file typed and checked."""
    # Typing first: the models accept exactly what the schema accepts (the conformance tests
    # check it on every mutation), so a document they type needs no schema pass, and the schema
    # pass (which explains, with positions) runs only for a document they refuse.
    typed: Workload | None = None
    refused: ValidationError | None = None
    try:
        typed = Workload.from_data(doc.data)
    except ValidationError as exc:
        refused = exc
    if refused is None:
        problems = check_semantics(doc, tree)
    else:
        problems = check_document(doc, tree)
        if not has_errors(problems):  # the schema and the models disagree: still a diagnostic
            problems.extend(model_errors(doc, refused))
    workload = None if has_errors(problems) else typed
    # Callers keep loaded workloads (a planner for thousands of them): positions are derived
    # again from the bytes for the rare diagnostic placed after loading, and a typed workload
    # keeps no document data beside its model (nothing reads it once typed; the name of one
    # that failed to type is read from its data).
    document = doc.deferred(raw)
    return LoadedWorkload(
        path, document if workload is None else document.placer(), workload, problems
    )


def check_document(doc: YamlDocument, tree: Tree) -> list[Diagnostic]:
    """The schema pass, then the semantic pass, collecting everything."""
    problems = schema_check(doc, score_schema(), PATTERN_WORDS)
    problems.extend(check_semantics(doc, tree))
    return problems


def check_semantics(doc: YamlDocument, tree: Tree) -> list[Diagnostic]:
    """What the schema cannot say: placeholders, ``before``, deprecated forms, file sources.

    Alone, for a document that typed (and so passes the schema); after the schema pass in
    ``check_document``.
    """
    problems: list[Diagnostic] = []
    metadata = doc.data.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    resources = doc.data.get("resources")
    declared = frozenset(resources) if isinstance(resources, dict) else frozenset()
    for problem in check_workload(doc.data):
        message = f"{format_path(problem.path)}: {problem.message}"
        problems.append(doc.diagnostic(problem.code, message, problem.path, hint=problem.hint))
    problems.extend(semantics.check_before(doc))
    problems.extend(semantics.check_deprecated_forms(doc))
    problems.extend(semantics.check_file_sources(doc, tree, metadata, declared))
    return problems
