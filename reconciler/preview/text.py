"""The preview for a terminal: ``reconciler plan``'s text per environment, then each
workload's manifests diff, with the head's problems first as ``reconciler validate`` prints them."""

from __future__ import annotations

from rich.text import Text

from reconciler.plan import render
from reconciler.preview.model import Preview
from reconciler.render import diagnostics as render_diagnostics

_DIFF_STYLE = {"+": "green", "-": "red", "@": "cyan"}


def to_text(preview: Preview) -> Text:
    out = Text()
    out.append(
        f"Preview of {preview.head_ref} ({preview.head_commit[:7]}) merged into "
        f"{preview.base_ref} ({preview.base_commit[:7]})\n\n",
        style="bold",
    )
    problems = preview.all_diagnostics()
    if problems:
        out.append_text(render_diagnostics.to_text(problems, 0))
        out.append("\n")
    for env in preview.environments:
        if env.plan is not None:
            out.append_text(render.to_text(env.plan))
        for workload in env.workloads:
            if not workload.manifests_diff:
                continue
            out.append(f"\nManifests of {env.environment}/{workload.name}:\n", style="bold")
            for line in workload.manifests_diff.splitlines():
                style = "bold" if line.startswith(("+++", "---")) else _DIFF_STYLE.get(line[:1], "")
                out.append(line + "\n", style=style)
        out.append("\n")
    return out
