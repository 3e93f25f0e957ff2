"""Read workflow files into ``Workflow`` models, with a positioned diagnostic for every problem.

``workflow list``, ``workflow run`` and the hooks call ``load_workflows`` with the repository's
tree and the ``workflows`` globs of reconciler.yaml. A file goes through the same passes as a
Score file: YAML with positions, the JSON Schema generated from the models, then the rules the
schema cannot state: duplicate step ids, ``needs`` naming unknown steps or forming a cycle,
parameter defaults that break their own rules, and templates that do not parse. Across files,
workflow names are unique. Nothing here raises for bad input.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from pydantic import ValidationError

from reconciler.catalogue import Code
from reconciler.diagnostics import Diagnostic, has_errors, sorted_diagnostics
from reconciler.schemacheck import check as schema_check
from reconciler.schemacheck import did_you_mean, format_path, model_errors
from reconciler.tree import Tree, matches
from reconciler.workflows import expressions
from reconciler.workflows.model import (
    DUPLICATE_STEP,
    DUPLICATE_WORKFLOW,
    INVALID_WORKFLOW,
    NEEDS_CYCLE,
    PATTERN_WORDS,
    TEMPLATE_SYNTAX,
    UNKNOWN_NEED,
    Workflow,
    workflow_schema,
)
from reconciler.workflows.params import spec_problems
from reconciler.workflows.steps import templated_fields
from reconciler.yamldoc import Path, YamlDocument, load_yaml


@dataclass(frozen=True, slots=True)
class LoadedWorkflows:
    """Valid workflows by name (a file with errors contributes none), and every problem."""

    workflows: Mapping[str, Workflow] = field(default_factory=dict)
    files: Mapping[str, str] = field(default_factory=dict)
    diagnostics: tuple[Diagnostic, ...] = ()

    @property
    def failed(self) -> bool:
        return has_errors(self.diagnostics)


def load_workflows(tree: Tree, globs: Sequence[str]) -> LoadedWorkflows:
    """Every workflow file matched by ``globs``, in path order."""
    workflows: dict[str, Workflow] = {}
    files: dict[str, str] = {}
    problems: list[Diagnostic] = []
    for path in (p for p in tree.files() if matches(p, list(globs))):
        try:
            raw = tree.read(path)
        except OSError as exc:
            problems.append(Diagnostic(Code.UNREADABLE_FILE, f"cannot read file: {exc}", file=path))
            continue
        doc, workflow, found = _load(raw, path)
        problems.extend(found)
        if workflow is None or doc is None:
            continue
        if workflow.name in workflows:
            problems.append(
                doc.diagnostic(
                    DUPLICATE_WORKFLOW,
                    f"name: workflow '{workflow.name}' is also defined in {files[workflow.name]}",
                    ("name",),
                )
            )
            continue
        workflows[workflow.name] = workflow
        files[workflow.name] = path
    return LoadedWorkflows(workflows, files, tuple(sorted_diagnostics(problems)))


def load_workflow(raw: bytes, file: str) -> tuple[Workflow | None, list[Diagnostic]]:
    """One workflow file; the workflow is None when the file has errors."""
    _, workflow, problems = _load(raw, file)
    return workflow, problems


def _load(raw: bytes, file: str) -> tuple[YamlDocument | None, Workflow | None, list[Diagnostic]]:
    doc, problems = load_yaml(raw, file)
    if doc is None:
        return None, None, problems
    problems = schema_check(doc, workflow_schema(), PATTERN_WORDS)
    if has_errors(problems):
        return doc, None, problems
    try:
        workflow = Workflow.model_validate(doc.data)
    except ValidationError as exc:
        return doc, None, problems + model_errors(doc, exc)
    lines = raw.decode("utf-8", errors="replace").splitlines()
    problems.extend(semantic_problems(doc, workflow, lines))
    problems = sorted_diagnostics(problems)
    return doc, (None if has_errors(problems) else workflow), problems


def semantic_problems(
    doc: YamlDocument, workflow: Workflow, lines: Sequence[str] = ()
) -> list[Diagnostic]:
    """The rules the schema cannot state, each at the key or value it concerns; ``lines`` (the
    file's text) places template errors inside block scalars on their own line."""
    return [
        *_param_problems(doc, workflow),
        *_step_id_problems(doc, workflow),
        *_cycle_problems(doc, workflow),
        *_template_problems(doc, workflow, lines),
    ]


def _at(doc: YamlDocument, code: Code, path: Path, message: str) -> Diagnostic:
    return doc.diagnostic(code, f"{format_path(path)}: {message}", path)


def _param_problems(doc: YamlDocument, workflow: Workflow) -> Iterator[Diagnostic]:
    for name, spec in sorted(workflow.params.items()):
        for sub, message in spec_problems(spec):
            yield _at(doc, INVALID_WORKFLOW, ("params", name, *sub), message)


def _step_id_problems(doc: YamlDocument, workflow: Workflow) -> Iterator[Diagnostic]:
    first: dict[str, int] = {}
    for i, step in enumerate(workflow.steps):
        if step.id in first:
            yield _at(
                doc,
                DUPLICATE_STEP,
                ("steps", i, "id"),
                f"step id '{step.id}' is also used by steps[{first[step.id]}]",
            )
        first.setdefault(step.id, i)
    for i, step in enumerate(workflow.steps):
        for j, need in enumerate(step.needs):
            if need not in first:
                guess = _guess(need, list(first))
                yield doc.diagnostic(
                    UNKNOWN_NEED,
                    f"{format_path(('steps', i, 'needs', j))}: no step '{need}'",
                    ("steps", i, "needs", j),
                    hint=guess,
                )
            elif need == step.id:
                yield _at(doc, NEEDS_CYCLE, ("steps", i, "needs", j), "a step cannot need itself")
        if step.when == "on_failure" and not step.needs:
            yield _at(
                doc,
                INVALID_WORKFLOW,
                ("steps", i, "when"),
                "an on_failure step runs when a step it needs fails; give it 'needs'",
            )


def _guess(word: str, known: list[str]) -> str | None:
    guess = did_you_mean(word, known)
    return f"did you mean '{guess}'?" if guess else None


def _cycle_problems(doc: YamlDocument, workflow: Workflow) -> Iterator[Diagnostic]:
    """One diagnostic per cycle, at the ``needs`` of the cycle's first step in the file."""
    index = {s.id: i for i, s in reversed(list(enumerate(workflow.steps)))}
    needs: dict[str, list[str]] = {}
    for step in workflow.steps:  # a duplicate id is reported elsewhere; the first one counts
        needs.setdefault(step.id, [n for n in step.needs if n in index and n != step.id])
    reported: set[frozenset[str]] = set()
    for start in sorted(index, key=index.__getitem__):
        loop = _cycle_from(start, needs)
        if loop is None or frozenset(loop) in reported:
            continue
        reported.add(frozenset(loop))
        first = min(loop, key=index.__getitem__)
        at = loop.index(first)
        shown = [*loop[at:], *loop[:at], first]
        yield _at(
            doc,
            NEEDS_CYCLE,
            ("steps", index[first], "needs"),
            "steps need each other in a cycle: " + " → ".join(shown),
        )


def _cycle_from(start: str, needs: Mapping[str, list[str]]) -> list[str] | None:
    """A cycle through ``start`` (its steps in order), found by depth-first search, or None."""
    stack: list[tuple[str, Iterator[str]]] = [(start, iter(needs[start]))]
    seen = {start}
    while stack:
        children = stack[-1][1]
        child = next(children, None)
        if child is None:
            stack.pop()
        elif child == start:
            return [n for n, _ in stack]
        elif child not in seen:
            seen.add(child)
            stack.append((child, iter(needs[child])))
    return None


def _template_problems(
    doc: YamlDocument, workflow: Workflow, lines: Sequence[str]
) -> Iterator[Diagnostic]:
    for i, step in enumerate(workflow.steps):
        for sub, text in templated_fields(step):
            path: Path = ("steps", i, *sub)
            if sub == ("for_each",) and not expressions.is_expression(text):
                yield _at(
                    doc,
                    TEMPLATE_SYNTAX,
                    path,
                    "for_each is a list or one {{ expression }} giving a list",
                )
                continue
            found = expressions.syntax_error(text)
            if found is None:
                continue
            line, message = found
            mark = doc.positions.nearest(path)
            first = mark.line + (1 if _is_block(lines, mark.line, mark.column) else 0)
            yield Diagnostic(
                TEMPLATE_SYNTAX,
                f"{format_path(path)}: template syntax error: {message}",
                file=doc.file,
                line=first + line - 1,
                column=mark.column if line == 1 else 1,
            )


def _is_block(lines: Sequence[str], line: int, column: int) -> bool:
    """Whether the value at (line, column) is a block scalar, whose text starts a line below."""
    text = lines[line - 1] if 0 < line <= len(lines) else ""
    return text[column - 1 : column] in {"|", ">"}
