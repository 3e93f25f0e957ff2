"""Diagnostics as check annotations: the line-level remarks a forge shows beside the diff.

The shape is GitHub's check-run annotation (``path``, ``start_line``, ``end_line``,
``annotation_level``, ``title``, ``message``); the severity map is the one in CONVENTIONS.md
(error → ``failure``, warning → ``warning``, info → ``notice``). An annotation must sit on a
file, so a diagnostic without one is left to the check's summary.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from reconciler.diagnostics import Diagnostic, Severity

Level = Literal["failure", "warning", "notice"]
LEVELS: dict[Severity, Level] = {
    Severity.ERROR: "failure",
    Severity.WARNING: "warning",
    Severity.INFO: "notice",
}


@dataclass(frozen=True, slots=True)
class Annotation:
    path: str
    start_line: int
    end_line: int
    annotation_level: Level
    title: str
    message: str

    def to_dict(self) -> dict[str, str | int]:
        return {
            "path": self.path,
            "start_line": self.start_line,
            "end_line": self.end_line,
            "annotation_level": self.annotation_level,
            "title": self.title,
            "message": self.message,
        }


def annotation(diagnostic: Diagnostic) -> Annotation | None:
    """The annotation for one diagnostic, None when it has no file to sit on."""
    if diagnostic.file is None:
        return None
    line = diagnostic.line or 1
    return Annotation(
        path=diagnostic.file,
        start_line=line,
        end_line=line,
        annotation_level=LEVELS[diagnostic.severity],
        title=diagnostic.code.id,
        message=f"{diagnostic.message}\nhint: {diagnostic.effective_hint}",
    )


def to_annotations(diagnostics: Iterable[Diagnostic]) -> list[Annotation]:
    return [a for a in map(annotation, diagnostics) if a is not None]
