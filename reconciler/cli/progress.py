"""Live progress of a run on the terminal, and the detail view of a recorded run.

Progress rides on the checkpoints: every state the engine writes goes through
``ProgressCheckpointer`` to the store and then to the screen, so what the user sees is exactly
what was recorded. A line per step, with a spinner while it runs on a terminal.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Sequence

from rich.console import Console
from rich.status import Status

from reconciler.engine import Checkpointer, Write
from reconciler.store.records import RunRecord, StepRecord

_MARK = {"Succeeded": "✓", "Failed": "✗", "Skipped": "-", "RolledBack": "↺"}
_STYLE = {"Succeeded": "green", "Failed": "red", "Skipped": "yellow", "RolledBack": "magenta"}


class ProgressCheckpointer:
    """A ``Checkpointer`` that also shows each step's progress."""

    def __init__(self, inner: Checkpointer, console: Console) -> None:
        self._inner = inner
        self._console = console
        self._lock = threading.Lock()
        self._running: set[str] = set()
        self._status: Status | None = None

    def load(self, run_id: str) -> Sequence[StepRecord]:
        return self._inner.load(run_id)

    def succeeded(self, run_id: str, among: Collection[str]) -> Sequence[StepRecord]:
        return self._inner.succeeded(run_id, among)

    def save_many(self, run_id: str, records: Sequence[StepRecord]) -> None:
        self._inner.save_many(run_id, records)
        for record in records:
            self._show(record)

    def save_soon(self, run_id: str, records: Sequence[StepRecord]) -> None:
        self._inner.save_soon(run_id, records)
        for record in records:
            self._show(record)

    def flush(self) -> None:
        self._inner.flush()

    def save(self, run_id: str, record: StepRecord, writes: Sequence[Write] = ()) -> None:
        self._inner.save(run_id, record, writes)
        self._show(record)

    def _show(self, record: StepRecord) -> None:
        with self._lock:
            if record.status == "Running":
                self._running.add(record.step_id)
            elif record.status in _MARK:
                self._running.discard(record.step_id)
                self._console.print(_line(record), style=_STYLE[record.status])
            self._spin()

    def _spin(self) -> None:
        if not self._console.is_terminal:
            return
        if self._running:
            text = "running " + ", ".join(sorted(self._running)[:3])
            if self._status is None:
                self._status = self._console.status(text)
                self._status.start()
            else:
                self._status.update(text)
        elif self._status is not None:
            self._status.stop()
            self._status = None


def _elapsed(record: StepRecord) -> str:
    if record.started_at is None or record.finished_at is None:
        return ""
    seconds = (record.finished_at - record.started_at).total_seconds()
    return f" ({seconds:.1f}s)"


def _line(record: StepRecord) -> str:
    detail = f": {record.error_code} {record.message}" if record.error_code else ""
    retries = f" after {record.attempt} attempts" if record.attempt > 1 else ""
    return f"  {_MARK[record.status]} {record.step_id}{_elapsed(record)}{retries}{detail}"


def print_run(console: Console, run: RunRecord, steps: Sequence[StepRecord]) -> None:
    """``argocd app get``-style key/value lines, then the steps and their logs."""
    fields = [
        ("Run:", run.id),
        ("Environment:", run.environment),
        ("Revision:", run.commit),
        ("Status:", run.status),
        ("Trigger:", run.trigger),
        ("Started:", f"{run.started_at:%Y-%m-%d %H:%M:%S %Z}"),
        ("Finished:", f"{run.finished_at:%Y-%m-%d %H:%M:%S %Z}" if run.finished_at else "-"),
        ("Message:", f"{run.error_code or ''} {run.message or ''}".strip() or "-"),
    ]
    for key, value in fields:
        console.print(f"{key:<20}{value}")
    console.print()
    header = f"{'STEP':<50}  {'ACTION':<8}  {'STATUS':<10}  {'ATTEMPTS':<8}  MESSAGE"
    console.print(header)
    for step in steps:
        message = f"{step.error_code or ''} {step.message or ''}".strip()
        console.print(
            f"{step.step_id:<50}  {step.action:<8}  {step.status:<10}  {step.attempt:<8}  {message}"
        )
        for line in (step.log or "").splitlines():
            console.print(f"    {line}", style="dim")
