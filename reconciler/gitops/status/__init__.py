"""The Report stage: a reconcile's status told through Git (notes, a status branch) and the forge.

The composer builds one ``CommitStatus`` per environment and run and hands it to ``FanOut``, which
queues it for every configured reporter and never blocks or fails the reconcile; see
docs/status.md for the formats and the forge state table.
"""

from reconciler.gitops.status.forge import ForgeStatuses, TokenBucket
from reconciler.gitops.status.model import (
    CommitStatus,
    Failure,
    Health,
    Phase,
    Summary,
    Sync,
    WorkloadStatus,
)
from reconciler.gitops.status.notes import GitNotes, append_note, push_notes, read_note
from reconciler.gitops.status.reporter import (
    FanOut,
    ReportCounters,
    Reporter,
    ReportError,
    RetrySettings,
)
from reconciler.gitops.status.status_branch import StatusBranch, write_status

__all__ = [
    "CommitStatus",
    "Failure",
    "FanOut",
    "ForgeStatuses",
    "GitNotes",
    "Health",
    "Phase",
    "ReportCounters",
    "ReportError",
    "Reporter",
    "RetrySettings",
    "StatusBranch",
    "Summary",
    "Sync",
    "TokenBucket",
    "WorkloadStatus",
    "append_note",
    "push_notes",
    "read_note",
    "write_status",
]
