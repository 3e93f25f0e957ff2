"""Diagnostics: every problem found in the user's input, with where it is and what to do.

Loading and validation never raise for bad input; they return diagnostics, collecting every
problem rather than stopping at the first, so a user fixes a file in one pass.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field

from reconciler.catalogue import Code


class Severity(enum.StrEnum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One problem, anchored to a file position (1-based line and column) where one is known."""

    code: Code
    message: str
    severity: Severity = Severity.ERROR
    file: str | None = None
    line: int | None = None
    column: int | None = None
    hint: str | None = field(default=None)

    @property
    def effective_hint(self) -> str:
        return self.hint if self.hint is not None else self.code.hint

    def sort_key(self) -> tuple[str, int, int, str, str]:
        return (self.file or "", self.line or 0, self.column or 0, self.code.id, self.message)

    def to_dict(self) -> dict[str, object]:
        return {
            "code": self.code.id,
            "severity": str(self.severity),
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "message": self.message,
            "hint": self.effective_hint,
        }


def has_errors(diagnostics: Iterable[Diagnostic]) -> bool:
    return any(d.severity is Severity.ERROR for d in diagnostics)


def sorted_diagnostics(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    """Stable, de-duplicated order: by file, position, then code."""
    unique = {(d.sort_key(), d.severity, d.hint): d for d in diagnostics}
    return [unique[k] for k in sorted(unique, key=lambda k: k[0])]
