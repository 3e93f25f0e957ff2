"""What a workload's deploy-branch folder would hold at each side, and the unified diff between.

Reviewers read Kubernetes YAML more readily than plan attributes, so the preview shows the
files the ``manifests`` target would commit for the base and for the head, rendered by the
target's own ``render`` (the same bytes ``apply`` stages) and compared with ``difflib``. No
secret value reaches the files (they hold references rendered as ExternalSecrets); any marker
left in a line is still redacted, so a diff can be posted where anyone reads it.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path

from reconciler.desired.model import DesiredState, DesiredWorkload
from reconciler.desired.secrets import redact
from reconciler.diagnostics import Diagnostic
from reconciler.providers.base import DriverError
from reconciler.providers.manifests import ManifestsTarget
from reconciler.runner import workload_request
from reconciler.store.store import Store

RenderedFiles = Mapping[str, str]
"""A workload's folder: file name → text."""

_TARGET = ManifestsTarget(repo_path=Path("."))
"""``render`` is pure (it never touches the branch), so one target serves every preview."""


def render_files(
    store: Store, desired: DesiredState, workload: DesiredWorkload, commit: str
) -> tuple[dict[str, str], Diagnostic | None]:
    """The folder's files, or none and the reason when the workload cannot be rendered."""
    request = workload_request(store, desired.environment, desired, workload, commit)
    try:
        files = _TARGET.render(request)
    except DriverError as exc:
        message = f"workload '{workload.name}': {exc.message}"
        return {}, Diagnostic(exc.code, message, file=workload.file)
    return {name: data.decode("utf-8", errors="replace") for name, data in files.items()}, None


def manifests_diff(name: str, base: RenderedFiles | None, head: RenderedFiles | None) -> str:
    """``git diff``-style text for the folder ``name/``; empty when both sides are equal."""
    before, after = base or {}, head or {}
    chunks: list[str] = []
    for file in sorted(set(before) | set(after)):
        old, new = before.get(file), after.get(file)
        if old == new:
            continue
        lines = difflib.unified_diff(
            _lines(old),
            _lines(new),
            fromfile=f"a/{name}/{file}" if old is not None else "/dev/null",
            tofile=f"b/{name}/{file}" if new is not None else "/dev/null",
            n=3,
        )
        chunks.extend(line if line.endswith("\n") else line + "\n" for line in lines)
    return "".join(chunks)


def _lines(text: str | None) -> list[str]:
    if text is None:
        return []
    return [str(redact(line)) for line in text.splitlines(keepends=True)]
