"""Preview values: per environment, the plan of the head and each workload's manifests diff.

Values only, built by ``compute`` and read by the renderers. ``Preview.to_dict`` is the JSON
format (docs/preview.md): fields are only ever added within a ``format_version``, and every
list is in a fixed order, so the same two commits always give the same bytes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Literal

from reconciler.diagnostics import Diagnostic, has_errors, sorted_diagnostics
from reconciler.plan.model import Action, ActionKind, Plan, Subject, Summary

FORMAT_VERSION = 1
EXIT_NO_CHANGES, EXIT_ERROR, EXIT_CHANGES = 0, 1, 2
"""As ``terraform plan -detailed-exitcode`` (CONVENTIONS.md), shared with ``reconciler plan``."""

Basis = Literal["recorded", "base"]
"""What the head was planned against: the environment's recorded state, or the base's desired."""


class Verdict(enum.StrEnum):
    NO_CHANGES = "no changes"
    CHANGES = "changes"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class WorkloadPreview:
    """One workload's part of the preview: its plan actions (its own and its resources') and the
    unified diff of its rendered manifests (base → head; empty when they are equal)."""

    name: str
    file: str | None
    actions: tuple[Action, ...] = ()
    manifests_diff: str = ""
    failed: bool = False

    @property
    def changed(self) -> tuple[Action, ...]:
        return tuple(a for a in self.actions if a.action is not ActionKind.NOOP)

    @property
    def action(self) -> str:
        """The workload's own action, ``failed`` when its file does not load, else ``no-op``."""
        if self.failed:
            return "failed"
        own = [a for a in self.actions if a.kind is Subject.WORKLOAD]
        return str(own[0].action) if own else str(ActionKind.NOOP)

    @property
    def has_changes(self) -> bool:
        return bool(self.changed) or bool(self.manifests_diff)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "file": self.file,
            "action": self.action,
            "actions": [a.to_dict() for a in self.actions],
            "manifests_diff": self.manifests_diff,
        }


@dataclass(frozen=True, slots=True)
class EnvironmentPreview:
    environment: str
    basis: Basis
    base_commit: str
    head_commit: str
    plan: Plan | None
    workloads: tuple[WorkloadPreview, ...] = ()
    diagnostics: tuple[Diagnostic, ...] = ()

    @property
    def summary(self) -> Summary:
        return self.plan.summary if self.plan is not None else Summary(0, 0, 0, 0)

    @property
    def failed_workloads(self) -> int:
        return sum(1 for w in self.workloads if w.failed)

    @property
    def verdict(self) -> Verdict:
        if has_errors(self.diagnostics):
            return Verdict.FAILED
        if self.summary.has_changes or any(w.has_changes for w in self.workloads):
            return Verdict.CHANGES
        return Verdict.NO_CHANGES

    def to_dict(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "basis": self.basis,
            "base_commit": self.base_commit,
            "head_commit": self.head_commit,
            "verdict": str(self.verdict),
            "summary": self.summary.to_dict(),
            "workloads": [w.to_dict() for w in self.workloads],
            "plan": self.plan.to_dict() if self.plan is not None else None,
            "diagnostics": [d.to_dict() for d in self.diagnostics],
        }


@dataclass(frozen=True, slots=True)
class Preview:
    base_ref: str
    base_commit: str
    head_ref: str
    head_commit: str
    environments: tuple[EnvironmentPreview, ...]
    diagnostics: tuple[Diagnostic, ...] = ()
    """Problems outside any environment (an unknown ``--env``, the configuration)."""
    base_diagnostics: tuple[Diagnostic, ...] = field(default=())
    """The base's own errors: shown, but they never fail the preview of the head."""

    def all_diagnostics(self) -> list[Diagnostic]:
        """Every diagnostic of the head, once (environments often report the same file)."""
        found = [*self.diagnostics, *(d for e in self.environments for d in e.diagnostics)]
        return sorted_diagnostics(found)

    @property
    def failed(self) -> bool:
        return has_errors(self.all_diagnostics())

    @property
    def has_changes(self) -> bool:
        return any(e.verdict is not Verdict.NO_CHANGES for e in self.environments)

    @property
    def exit_code(self) -> int:
        if self.failed:
            return EXIT_ERROR
        return EXIT_CHANGES if self.has_changes else EXIT_NO_CHANGES

    @property
    def verdict(self) -> Verdict:
        if self.failed:
            return Verdict.FAILED
        return Verdict.CHANGES if self.has_changes else Verdict.NO_CHANGES

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "base": {"ref": self.base_ref, "commit": self.base_commit},
            "head": {"ref": self.head_ref, "commit": self.head_commit},
            "verdict": str(self.verdict),
            "exit_code": self.exit_code,
            "environments": [e.to_dict() for e in self.environments],
            "diagnostics": [d.to_dict() for d in self.all_diagnostics()],
            "base_diagnostics": [d.to_dict() for d in self.base_diagnostics],
        }
