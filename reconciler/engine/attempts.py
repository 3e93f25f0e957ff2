"""One attempt of one step: run the callable (in its own thread when it has a timeout), check
what it returned, and turn whatever it raised into a ``Failure`` that says whether to retry.

The executor's workers call ``run_attempt``; nothing here raises, so a step's bug can never crash
the engine.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from reconciler.catalogue import Code
from reconciler.engine.steps import Outputs, Step, StepContext
from reconciler.providers.base import DriverError


@dataclass(frozen=True, slots=True)
class Failure:
    code: Code
    message: str
    retryable: bool


class _TimedOut(Exception):
    pass


def run_attempt(step: Step, context: StepContext) -> Outputs | Failure:
    """The attempt's outputs, or why it failed. Closes the context: a late ``log`` is dropped.

    Ctrl-C is not the step's failure: it reaches the main thread only, where the executor runs
    inline steps (``Step.inline``), and stops the run there as a failed checkpoint does."""
    try:
        value = step.run(context) if step.timeout is None else _run_timed(step, context)
        return _checked_outputs(value)
    except KeyboardInterrupt:
        raise
    except BaseException as error:
        return failure_of(error, step)
    finally:
        context.close()


def _run_timed(step: Step, context: StepContext) -> Outputs:
    """Run the callable in its own daemon thread and stop waiting at the timeout: a thread
    cannot be killed, so a stuck attempt is cancelled (its event set) and left behind."""
    box: list[tuple[bool, Any]] = []
    done = threading.Event()

    def target() -> None:
        try:
            box.append((True, step.run(context)))
        except BaseException as error:
            box.append((False, error))
        finally:
            done.set()

    threading.Thread(target=target, name=f"step {step.id}", daemon=True).start()
    if not done.wait(step.timeout):
        context.cancelled.set()
        raise _TimedOut
    ok, value = box[0]
    if not ok:
        raise value
    result: Outputs = value
    return result


_OUTPUTS_JSON = json.JSONEncoder(sort_keys=True, allow_nan=False)
"""``json.dumps(outputs, sort_keys=True, allow_nan=False)`` made once: ``dumps`` builds this
encoder for every call, which cost more than checking a step's few outputs. ``encode`` keeps
nothing between calls, so threads share it."""


def _checked_outputs(value: object) -> Outputs:
    """Outputs go into the store as JSON: refuse anything else at the step, not the store."""
    if value is None:
        return MappingProxyType({})
    if not isinstance(value, Mapping):
        raise TypeError(f"a step returns a mapping of outputs, not {type(value).__name__}")
    outputs = dict(value)
    try:
        _OUTPUTS_JSON.encode(outputs)
    except (TypeError, ValueError) as error:
        raise TypeError(f"outputs are not JSON: {error}") from error
    return MappingProxyType(outputs)


def failure_of(error: BaseException, step: Step) -> Failure:
    """What an exception raised by ``step`` (or by a write it deferred) means for its run."""
    if isinstance(error, _TimedOut):
        return Failure(Code.STEP_TIMEOUT, f"attempt timed out after {step.timeout:g} s", True)
    if isinstance(error, DriverError):
        return Failure(error.code, error.message, error.retryable)
    return Failure(Code.STEP_FAILED, describe(error), False)


def describe(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def interrupted(detail: str, failure: Failure | None = None) -> Failure:
    """A run cancel wins over whatever the attempt raised (often the step's reaction to it)."""
    if failure is not None:
        detail = f"the attempt ended with {failure.code.id} {failure.message}"
    return Failure(Code.RUN_INTERRUPTED, f"interrupted: {detail}", False)


def exhausted(last: Failure, attempts: int) -> Failure:
    if attempts == 1:
        return last
    text = f"{attempts} attempts failed; last: {last.code.id} {last.message}"
    return Failure(Code.RETRIES_EXHAUSTED, text, False)
