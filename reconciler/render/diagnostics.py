"""Diagnostics as text (for people), JSON (for scripts) and SARIF 2.1.0 (for code scanning).

The JSON shape is a documented interface (docs/cli.md): ``{"diagnostics": [...], "files": N}``
with each diagnostic's ``code, severity, file, line, column, message, hint``.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

from rich.text import Text

from reconciler import __version__
from reconciler.catalogue import Code, by_id
from reconciler.diagnostics import Diagnostic, Severity

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
_STYLE = {Severity.ERROR: "bold red", Severity.WARNING: "yellow", Severity.INFO: "cyan"}
_SARIF_LEVEL = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "note"}


def location(diag: Diagnostic) -> str:
    if diag.file is None:
        return "reconciler"
    parts = [diag.file]
    if diag.line is not None:
        parts.append(str(diag.line))
        if diag.column is not None:
            parts.append(str(diag.column))
    return ":".join(parts)


def summary(diagnostics: Sequence[Diagnostic], files: int) -> str:
    counts = Counter(d.severity for d in diagnostics)

    def plural(n: int, word: str) -> str:
        return f"{n} {word}{'' if n == 1 else 's'}"

    head = ", ".join(
        [plural(counts[Severity.ERROR], "error"), plural(counts[Severity.WARNING], "warning")]
    )
    return f"{head} in {plural(files, 'file')}"


def to_text(diagnostics: Sequence[Diagnostic], files: int) -> Text:
    """``file:line:col: severity RCN-1234 message``, the hint below it, a summary last."""
    out = Text()
    for d in diagnostics:
        out.append(f"{location(d)}: ", style="bold")
        out.append(str(d.severity), style=_STYLE[d.severity])
        out.append(f" {d.code.id} ", style="dim")
        out.append(d.message + "\n")
        out.append(f"    hint: {d.effective_hint}\n", style="dim")
    style = "bold red" if any(d.severity is Severity.ERROR for d in diagnostics) else "green"
    out.append(summary(diagnostics, files) + "\n", style=style)
    return out


def to_json(diagnostics: Sequence[Diagnostic], files: int) -> str:
    document = {"diagnostics": [d.to_dict() for d in diagnostics], "files": files}
    return json.dumps(document, indent=2, sort_keys=False) + "\n"


def _fingerprint(diag: Diagnostic) -> str:
    """Stable across line moves, so code scanning keeps one alert for one problem."""
    digest = hashlib.sha256(f"{diag.code.id}\0{diag.file}\0{diag.message}".encode()).hexdigest()
    return f"{digest[:16]}:1"


def _rule(code: Code) -> dict[str, Any]:
    return {
        "id": code.id,
        "name": code.name.title().replace("_", ""),
        "shortDescription": {"text": code.title},
        "fullDescription": {"text": f"{code.title}. {code.hint}"},
        "help": {"text": code.hint, "markdown": f"{code.hint}\n\n[{code.id}]({code.docs_url})"},
        "helpUri": code.docs_url,
    }


def _result(diag: Diagnostic, rule_index: int) -> dict[str, Any]:
    result: dict[str, Any] = {
        "ruleId": diag.code.id,
        "ruleIndex": rule_index,
        "level": _SARIF_LEVEL[diag.severity],
        "message": {"text": f"{diag.message}\nhint: {diag.effective_hint}"},
        "partialFingerprints": {"primaryLocationLineHash": _fingerprint(diag)},
    }
    if diag.file is not None:
        physical: dict[str, Any] = {"artifactLocation": {"uri": diag.file}}
        if diag.line is not None:
            region: dict[str, int] = {"startLine": diag.line}
            if diag.column is not None:
                region["startColumn"] = diag.column
            physical["region"] = region
        result["locations"] = [{"physicalLocation": physical}]
    return result


def to_sarif(diagnostics: Sequence[Diagnostic]) -> str:
    """SARIF 2.1.0 with one result per diagnostic and one rule per code that occurs."""
    codes = sorted({d.code.id for d in diagnostics})
    index = {code: i for i, code in enumerate(codes)}
    run = {
        "tool": {
            "driver": {
                "name": "reconciler",
                "informationUri": "https://github.com/score-reconciler/score-reconciler",
                "version": __version__,
                "rules": [_rule(by_id(c)) for c in codes],
            }
        },
        "results": [_result(d, index[d.code.id]) for d in diagnostics],
    }
    document = {"$schema": SARIF_SCHEMA, "version": "2.1.0", "runs": [run]}
    return json.dumps(document, indent=2) + "\n"
