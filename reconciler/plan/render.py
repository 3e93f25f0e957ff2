"""Plans as Terraform users read them (text), as reviewers read them (Markdown), and as JSON.

Text follows ``terraform plan``: a legend of the symbols that occur, a block per item headed
``# resource X will be created``, attributes as ``old -> new``, and the summary line. Markdown
follows Atlantis's pull-request comments: the verdict first, a section per workload with long
output folded, the summary outside the fold. JSON is ``Plan.to_dict()``, documented in
docs/plan.md.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from rich.text import Text

from reconciler.plan.model import KNOWN_AFTER_APPLY, SENSITIVE, Action, ActionKind, Plan, Subject

_SYMBOL = {
    ActionKind.CREATE: "  +",
    ActionKind.UPDATE: "  ~",
    ActionKind.DELETE: "  -",
    ActionKind.REPLACE: "-/+",
}
_LEGEND = {
    ActionKind.CREATE: "create",
    ActionKind.UPDATE: "update in-place",
    ActionKind.DELETE: "destroy",
    ActionKind.REPLACE: "destroy and then create replacement",
}
_VERB = {
    ActionKind.CREATE: "will be created",
    ActionKind.UPDATE: "will be updated in-place",
    ActionKind.DELETE: "will be destroyed",
    ActionKind.REPLACE: "must be replaced",
}
_STYLE = {
    ActionKind.CREATE: "green",
    ActionKind.UPDATE: "yellow",
    ActionKind.DELETE: "red",
    ActionKind.REPLACE: "magenta",
}
FOLD_AFTER_LINES = 12
"""Atlantis folds a project's output longer than this into <details>."""

Line = tuple[ActionKind | None, str, str, int]
"""(the action that colours it, its symbol, its text, its depth): one line of a rendered plan."""


def show(value: Any) -> str:
    if value in (KNOWN_AFTER_APPLY, SENSITIVE):
        return str(value)
    if value is None:
        return "null"
    return json.dumps(value, ensure_ascii=False)


def action_lines(action: Action) -> list[Line]:
    """One item's block: the comment header, the attributes, the closing brace."""
    kind = action.action
    reason = action.detail.get("reason")
    header = f"{action.kind} {action.id} {_VERB[kind]}" + (f" ({reason})" if reason else "")
    lines: list[Line] = [
        (None, "#", header, 0),
        (kind, _SYMBOL[kind].strip(), f"{action.kind} {json.dumps(action.id)} {{", 0),
    ]
    for change in action.changes:
        if kind is ActionKind.CREATE or (change.old is None and change.new is not None):
            mark, text = "+", show(change.new)
        elif kind is ActionKind.DELETE or change.new is None:
            mark, text = "-", f"{show(change.old)} -> null"
        else:
            mark, text = "~", f"{show(change.old)} -> {show(change.new)}"
        suffix = " # forces replacement" if change.forces_replacement else ""
        lines.append((kind, mark, f"{change.path} = {text}{suffix}", 1))
    if action.unchanged:
        lines.append((None, "#", f"({action.unchanged} unchanged attributes hidden)", 1))
    lines.append((kind, "", "}", 0))
    return lines


def text_line(mark: str, text: str, depth: int) -> str:
    """Terraform's layout: symbols right-aligned in a 3-column gutter, attributes indented."""
    if depth == 0:
        if mark == "#":
            return f"  # {text}"
        return f"{mark:>3} {text}" if mark else f"    {text}"
    return f"{'':6}{mark} {text}" if mark else f"{'':8}{text}"


def legend(actions: Iterable[Action]) -> list[Line]:
    kinds = {a.action for a in actions} - {ActionKind.NOOP}
    if not kinds:
        return []
    lines: list[Line] = [
        (None, "", "Resource actions are indicated with the following symbols:", 0)
    ]
    for kind in (ActionKind.CREATE, ActionKind.UPDATE, ActionKind.DELETE, ActionKind.REPLACE):
        if kind in kinds:
            lines.append((kind, _SYMBOL[kind].strip(), _LEGEND[kind], 0))
    return lines


def to_text(plan: Plan) -> Text:
    out = Text()
    changed = list(plan.changes())
    head = f"Environment {plan.environment} at {plan.commit[:7]}"
    if plan.base_commit:
        head += f" (recorded: {plan.base_commit[:7]})"
    out.append(head + "\n\n", style="bold")
    if changed:
        for kind, mark, text, _ in legend(changed):
            out.append(f"{mark:>3} {text}\n" if mark else text + "\n", style=_style(kind))
        out.append("\nReconciler will perform the following actions:\n\n")
        for action in changed:
            for kind, mark, text, depth in action_lines(action):
                style = "dim" if mark == "#" else _style(kind)
                out.append(text_line(mark, text, depth) + "\n", style=style)
            out.append("\n")
    summary = plan.summary
    out.append(summary.line() + "\n", style="bold")
    return out


def _style(kind: ActionKind | None) -> str:
    return _STYLE[kind] if kind is not None else ""


def _sections(plan: Plan) -> list[tuple[str, list[Action]]]:
    """Group actions by workload: a workload's own action and the resources it brought."""
    groups: dict[str, list[Action]] = {}
    for action in plan.actions:
        owner = action.id if action.kind is Subject.WORKLOAD else action.detail.get("workload")
        groups.setdefault(owner or "(removed resources)", []).append(action)
    return sorted(groups.items())


_DIFF_MARK = {"+": "+", "-": "-", "~": "!", "-/+": "!"}


def _diff_block(actions: Sequence[Action]) -> list[str]:
    """Plan lines for a ```diff block: '+' and '-' are coloured, '!' marks changes (as Atlantis)."""
    return [
        f"{_DIFF_MARK.get(mark, ' ')} {'    ' * depth}{'# ' if mark == '#' else ''}{text}"
        for action in actions
        for _, mark, text, depth in action_lines(action)
    ]


def to_markdown(plan: Plan, *, title: str | None = None) -> str:
    summary = plan.summary
    verdict = "no changes" if not summary.has_changes else "changes"
    out = [
        f"## {title or 'Plan'} for `{plan.environment}` at `{plan.commit[:7]}`: {verdict}",
        "",
        f"**{summary.line()}**",
        "",
    ]
    with_changes = without = 0
    for owner, actions in _sections(plan):
        changed = [a for a in actions if a.action is not ActionKind.NOOP]
        if not changed:
            without += 1
            continue
        with_changes += 1
        block = _diff_block(changed)
        out += [f"### {plan.environment}: {owner}", ""]
        fenced = ["```diff", *block, "```"]
        if len(block) > FOLD_AFTER_LINES:
            out += ["<details><summary>Show plan</summary>", "", *fenced, "", "</details>", ""]
        else:
            out += [*fenced, ""]
        counts = _counts(changed)
        out += [counts, ""]
    failed = sum(1 for d in plan.diagnostics if str(d.severity) == "error")
    total = with_changes + without
    noun = "workload" if total == 1 else "workloads"
    out.append(f"{total} {noun}, {with_changes} with changes, {without} without, {failed} failed")
    return "\n".join(out) + "\n"


def _counts(actions: Sequence[Action]) -> str:
    add = sum(a.action in (ActionKind.CREATE, ActionKind.REPLACE) for a in actions)
    change = sum(a.action is ActionKind.UPDATE for a in actions)
    destroy = sum(a.action in (ActionKind.DELETE, ActionKind.REPLACE) for a in actions)
    return f"Plan: {add} to add, {change} to change, {destroy} to destroy."


def to_json(plan: Plan) -> str:
    return json.dumps(plan.to_dict(), indent=2, ensure_ascii=False) + "\n"
