"""A run in a child process, for the crash and signal tests: ``python crash_child.py MODE URL
RUN_ID EFFECTS``. Steps a → b → c append their id to EFFECTS (the side effects the parent counts);
b prints "b running" and then blocks: on a read of stdin (MODE kill, the parent never writes) or
until the run is cancelled (MODE term, the parent sends SIGTERM; MODE term-worker, b sends
SIGTERM to its own worker thread)."""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from reconciler.engine import Executor, Step, StepContext, StoreCheckpointer
from reconciler.store import Store


def build_steps(effects: Path, block: Callable[[StepContext], None] | None) -> list[Step]:
    def effect(context: StepContext) -> Mapping[str, Any]:
        with effects.open("a", encoding="utf-8") as file:
            file.write(context.step_id + "\n")
        if context.step_id == "b" and block is not None:
            print("b running", flush=True)
            block(context)
        return {"by": context.step_id}

    return [
        Step(id="a", run=effect),
        Step(id="b", run=effect, depends_on=("a",)),
        Step(id="c", run=effect, depends_on=("b",)),
    ]


def block_on_stdin(context: StepContext) -> None:
    sys.stdin.read()


def block_until_cancelled(context: StepContext) -> None:
    context.cancelled.wait(60)
    context.raise_if_cancelled()


def term_this_thread_and_block(context: StepContext) -> None:
    """SIGTERM delivered to this worker thread, not to the main one (the kernel may pick any
    thread for a process's signal): the main thread must still run the handler soon."""
    signal.pthread_kill(threading.get_ident(), signal.SIGTERM)
    context.cancelled.wait(15)  # a step that was never cancelled succeeds after this
    context.raise_if_cancelled()


def main(mode: str, url: str, run_id: str, effects: str) -> None:
    block = {
        "kill": block_on_stdin,
        "term": block_until_cancelled,
        "term-worker": term_this_thread_and_block,
    }[mode]
    with Store.open(url) as store:
        executor = Executor(StoreCheckpointer(store), parallelism=1)
        signal.signal(signal.SIGTERM, lambda signum, frame: executor.cancel())
        result = executor.run(run_id, build_steps(Path(effects), block))
    steps = {sid: [o.status, o.error_code and o.error_code.id] for sid, o in result.steps.items()}
    print(json.dumps({"status": result.status, "steps": steps}), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:5])
