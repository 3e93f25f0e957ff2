"""The preview as a pull-request comment, the way Atlantis users read plans.

Layout (CONVENTIONS.md): the verdict and a table of counts per environment first, the head's
problems as a list with ``file:line`` (linked when a link base is known), then per environment
its ``Plan:`` line and a ``### env: workload`` section for each workload with changes: its own
``Plan:`` line outside any fold, the plan in a ``diff`` block (folded past 12 lines) and the
unified diff of its rendered manifests, always folded. A footer counts the workloads, and the
last line is the hidden marker that finds the comment again on the next push.

GitHub refuses comments over 65,536 characters, so a longer text is cut at a line, with its
open fence and fold closed and a note that the JSON output holds everything.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from reconciler.diagnostics import Diagnostic, Severity, sorted_diagnostics
from reconciler.plan.model import Action, ActionKind
from reconciler.plan.render import FOLD_AFTER_LINES, action_lines
from reconciler.preview.model import EnvironmentPreview, Preview, WorkloadPreview

COMMENT_LIMIT = 65_536
"""GitHub's maximum comment body, in characters."""
MARKER = "<!-- reconciler:preview -->"
TRUNCATED_NOTE = (
    "> [!NOTE]\n> This preview was cut at {limit:,} characters. The full preview is in the JSON "
    "output: `reconciler preview --format json`."
)
_DIFF_MARK = {"+": "+", "-": "-", "~": "!", "-/+": "!"}
_SPECIAL = re.compile(r"([\\`*_\[\]<>|#])")


def marker(environment: str | None = None) -> str:
    """The hidden last line that names our comment (one per environment when split)."""
    return MARKER if environment is None else f"<!-- reconciler:preview env={environment} -->"


def to_markdown(
    preview: Preview,
    *,
    environment: str | None = None,
    link_base: str | None = None,
    limit: int = COMMENT_LIMIT,
) -> str:
    """The comment body: all environments, or only ``environment`` (with its own marker)."""
    shown = [e for e in preview.environments if environment in (None, e.environment)]
    lines = _header(preview, shown)
    problems = preview.all_diagnostics() if environment is None else _env_diags(shown)
    if problems:
        lines += ["### Problems", "", *(_problem(d, link_base) for d in problems), ""]
    for env in shown:
        lines += _environment(env)
    return fit(lines, marker(environment), limit)


def _env_diags(envs: Sequence[EnvironmentPreview]) -> list[Diagnostic]:
    return sorted_diagnostics(d for e in envs for d in e.diagnostics)


def _header(preview: Preview, envs: Sequence[EnvironmentPreview]) -> list[str]:
    verdict = str(preview.verdict) if len(envs) == len(preview.environments) else _worst(envs)
    lines = [
        f"## Reconciler preview: {verdict}",
        "",
        f"Merging `{_code(preview.head_ref)}` (`{preview.head_commit[:7]}`) into "
        f"`{_code(preview.base_ref)}` (`{preview.base_commit[:7]}`).",
        "",
    ]
    if not envs:
        return [*lines, "No environment to preview.", ""]
    lines += [
        "| Environment | Verdict | Add | Change | Destroy | Failed |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for env in envs:
        s = env.summary
        lines.append(
            f"| `{env.environment}` | {env.verdict} | {s.add} | {s.change} | {s.destroy} "
            f"| {env.failed_workloads} |"
        )
    return [*lines, ""]


def _worst(envs: Sequence[EnvironmentPreview]) -> str:
    verdicts = {str(e.verdict) for e in envs}
    for word in ("failed", "changes"):
        if word in verdicts:
            return word
    return "no changes"


def _problem(d: Diagnostic, link_base: str | None) -> str:
    where = "" if d.file is None else d.file + (f":{d.line}" if d.line is not None else "")
    located = f"`{_code(where)}`" if where else "(no file)"
    if where and link_base and d.file is not None:
        anchor = f"#L{d.line}" if d.line is not None else ""
        located = f"[{located}]({link_base.rstrip('/')}/{d.file}{anchor})"
    level = "error" if d.severity is Severity.ERROR else str(d.severity)
    return (
        f"- **{level}** {located} `{d.code.id}` {escape(d.message)}"
        f"<br>hint: {escape(d.effective_hint)}"
    )


def _environment(env: EnvironmentPreview) -> list[str]:
    against = (
        f"the recorded state (`{env.base_commit[:7]}`)"
        if env.basis == "recorded"
        else f"the base's desired state (`{env.base_commit[:7]}`)"
    )
    lines = [
        f"## `{env.environment}`: {env.verdict}",
        "",
        f"**{env.summary.line()}**",
        "",
        f"Planned against {against}.",
        "",
    ]
    with_changes = without = 0
    for workload in env.workloads:
        if workload.failed:
            lines += _failed(env.environment, workload)
        elif workload.has_changes:
            with_changes += 1
            lines += _workload(env.environment, workload)
        else:
            without += 1
    total = with_changes + without + env.failed_workloads
    noun = "workload" if total == 1 else "workloads"
    lines += [
        f"{total} {noun}, {with_changes} with changes, {without} without, "
        f"{env.failed_workloads} failed",
        "",
    ]
    return lines


def _failed(environment: str, workload: WorkloadPreview) -> list[str]:
    where = f"`{_code(workload.file)}`" if workload.file else "its Score file"
    return [
        f"### {environment}: {escape(workload.name)}",
        "",
        f"**Failed:** {where} does not load; its workload is left as it is (see Problems).",
        "",
    ]


def _workload(environment: str, workload: WorkloadPreview) -> list[str]:
    lines = [f"### {environment}: {escape(workload.name)}", ""]
    changed = workload.changed
    if changed:
        block = diff_block(changed)
        lines += [counts(changed), ""]
        fenced = fence(block, "diff")
        if len(block) > FOLD_AFTER_LINES:
            lines += ["<details><summary>Show plan</summary>", "", *fenced, "", "</details>", ""]
        else:
            lines += [*fenced, ""]
    if workload.manifests_diff:
        body = workload.manifests_diff.splitlines()
        summary = f"Show manifests diff ({len(body)} lines)"
        lines += [f"<details><summary>{summary}</summary>", "", *fence(body, "diff"), ""]
        lines += ["</details>", ""]
    return lines


def diff_block(actions: Iterable[Action]) -> list[str]:
    """Plan lines for a ``diff`` block: '+' and '-' coloured, '!' for changes (as Atlantis)."""
    return [
        f"{_DIFF_MARK.get(mark, ' ')} {'    ' * depth}{'# ' if mark == '#' else ''}{text}"
        for action in actions
        for _, mark, text, depth in action_lines(action)
    ]


def counts(actions: Sequence[Action]) -> str:
    add = sum(a.action in (ActionKind.CREATE, ActionKind.REPLACE) for a in actions)
    change = sum(a.action is ActionKind.UPDATE for a in actions)
    destroy = sum(a.action in (ActionKind.DELETE, ActionKind.REPLACE) for a in actions)
    return f"**Plan: {add} to add, {change} to change, {destroy} to destroy.**"


def fence(body: Sequence[str], info: str) -> list[str]:
    """A fenced block longer than any backtick run inside, so content never closes it."""
    longest = max((len(run) for line in body for run in re.findall(r"`+", line)), default=0)
    ticks = "`" * max(3, longest + 1)
    return [f"{ticks}{info}", *body, ticks]


def escape(text: str) -> str:
    """Text from the repository as literal Markdown: no markup, no HTML, one line."""
    return _SPECIAL.sub(r"\\\1", " ".join(text.split()))


def _code(text: str) -> str:
    """Inside a code span a backtick would end it; nothing else needs escaping there."""
    return text.replace("`", "'")


def fit(lines: list[str], last: str, limit: int = COMMENT_LIMIT) -> str:
    """``lines`` and the marker, within ``limit`` characters: cut at a line when too long, with
    any fence or fold left open closed again and a note saying where the rest is."""
    whole = "\n".join([*lines, last]) + "\n"
    if len(whole) <= limit:
        return whole
    note = TRUNCATED_NOTE.format(limit=limit)
    state = _Open()
    kept: list[str] = []
    size = 0
    for line in lines:
        after = state.then(line)
        tail = len("\n".join(["", *after.closers(), "", note, "", last])) + 1
        if size + len(line) + 1 + tail > limit:
            break
        kept.append(line)
        size += len(line) + 1
        state = after
    return "\n".join([*kept, *state.closers(), "", note, "", last]) + "\n"


@dataclass(frozen=True, slots=True)
class _Open:
    """What the lines so far left open: a code fence (its backticks) and ``<details>`` folds."""

    fence: str | None = None
    folds: int = 0

    def then(self, line: str) -> _Open:
        if self.fence is not None:
            return _Open(None, self.folds) if line.strip() == self.fence else self
        match = re.match(r"^(`{3,})", line)
        if match:
            return _Open(match.group(1), self.folds)
        if line.startswith("<details>"):
            return _Open(None, self.folds + 1)
        if line.startswith("</details>"):
            return _Open(None, max(self.folds - 1, 0))
        return self

    def closers(self) -> list[str]:
        return ([self.fence] if self.fence else []) + ["", "</details>"] * self.folds
