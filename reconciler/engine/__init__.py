"""Execute: run a plan's DAG of steps with bounded parallelism, timeouts, retries with backoff,
checkpoints before and after every step, resume after a crash, cancel and rollback.

The composer turns plan actions into ``Step`` values and calls ``Executor.run``; the daemon's
signal handler calls ``Executor.cancel``. docs/engine.md describes the semantics.
"""

from reconciler.engine.backoff import backoff_delay
from reconciler.engine.checkpoint import Checkpointer, MemoryCheckpointer, StoreCheckpointer
from reconciler.engine.executor import GRACE_PERIOD, Executor
from reconciler.engine.steps import (
    RetryPolicy,
    RunResult,
    RunStatus,
    Step,
    StepCancelled,
    StepContext,
    StepOutcome,
    StepStatus,
    Write,
    check_graph,
)

__all__ = [
    "GRACE_PERIOD",
    "Checkpointer",
    "Executor",
    "MemoryCheckpointer",
    "RetryPolicy",
    "RunResult",
    "RunStatus",
    "Step",
    "StepCancelled",
    "StepContext",
    "StepOutcome",
    "StepStatus",
    "StoreCheckpointer",
    "Write",
    "backoff_delay",
    "check_graph",
]
