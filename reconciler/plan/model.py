"""Plan values: actions with their changes and dependencies, and the plan's summary.

A plan is data, built by ``plan.diff`` without I/O and rendered by ``plan.render``; the engine
executes it step by step, in an order its ``depends_on`` edges allow.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from reconciler.diagnostics import Diagnostic

KNOWN_AFTER_APPLY = "(known after apply)"
SENSITIVE = "(sensitive value)"


class ActionKind(enum.StrEnum):
    CREATE = "create"
    UPDATE = "update"
    REPLACE = "replace"
    DELETE = "delete"
    NOOP = "no-op"


class Subject(enum.StrEnum):
    RESOURCE = "resource"
    WORKLOAD = "workload"


_NO_DETAIL: dict[str, Any] = {}


@dataclass(frozen=True, slots=True)
class Change:
    """One attribute that differs; ``old``/``new`` are already redacted."""

    path: str
    old: Any
    new: Any
    forces_replacement: bool = False

    def to_dict(self) -> dict[str, Any]:
        out = {"path": self.path, "old": self.old, "new": self.new}
        if self.forces_replacement:
            out["forces_replacement"] = True
        return out


@dataclass(frozen=True, slots=True)
class Action:
    action: ActionKind
    kind: Subject
    id: str
    depends_on: tuple[str, ...] = ()
    changes: Sequence[Change] = ()
    """A tuple, or for a creation or deletion the same changes made when read (``plan.diff``)."""
    file: str | None = None
    detail: dict[str, Any] = field(default_factory=lambda: _NO_DETAIL)
    """Shared when empty (a workload's actions have none): the diff's memo keeps every action
    of an environment between plans. An action's values are never changed once made."""
    unchanged: int = 0

    @property
    def step_id(self) -> str:
        """Unique within a plan: a resource and a workload may share a name."""
        return f"{self.kind}:{self.id}"

    def to_dict(self) -> dict[str, Any]:
        to_dicts = getattr(self.changes, "to_dicts", None)  # ``diff.LeafChanges``
        return {
            "action": str(self.action),
            "kind": str(self.kind),
            "id": self.id,
            "step": self.step_id,
            "depends_on": list(self.depends_on),
            "changes": to_dicts() if to_dicts else [c.to_dict() for c in self.changes],
            "file": self.file,
            "unchanged_attributes": self.unchanged,
            **({"detail": self.detail} if self.detail else {}),
        }


@dataclass(frozen=True, slots=True)
class Summary:
    add: int
    change: int
    destroy: int
    unchanged: int

    @property
    def has_changes(self) -> bool:
        return bool(self.add or self.change or self.destroy)

    def line(self) -> str:
        if not self.has_changes:
            return "No changes. Your infrastructure matches the configuration."
        return f"Plan: {self.add} to add, {self.change} to change, {self.destroy} to destroy."

    def to_dict(self) -> dict[str, int]:
        return {
            "add": self.add,
            "change": self.change,
            "destroy": self.destroy,
            "unchanged": self.unchanged,
        }


@dataclass(frozen=True, slots=True)
class Plan:
    environment: str
    commit: str
    base_commit: str | None
    actions: Sequence[Action]
    """In order; a tuple, or a ``Chunked`` from the diff (equal to the tuple)."""
    diagnostics: tuple[Diagnostic, ...] = ()

    def changes(self) -> Iterator[Action]:
        return (a for a in self.actions if a.action is not ActionKind.NOOP)

    @property
    def summary(self) -> Summary:
        count = dict.fromkeys(ActionKind, 0)
        for a in self.actions:
            count[a.action] += 1
        return Summary(
            add=count[ActionKind.CREATE] + count[ActionKind.REPLACE],
            change=count[ActionKind.UPDATE],
            destroy=count[ActionKind.DELETE] + count[ActionKind.REPLACE],
            unchanged=count[ActionKind.NOOP],
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": 1,
            "environment": self.environment,
            "commit": self.commit,
            "base_commit": self.base_commit,
            "actions": [a.to_dict() for a in self.actions],
            "summary": self.summary.to_dict(),
            "diagnostics": [d.to_dict() for d in self.diagnostics],
        }
