"""How long a step waits before its next attempt: exponential backoff with proportional jitter.

The executor calls ``backoff_delay`` after a retryable failure. The jitter is proportional
(the delay is spread over ``delay * (1 ± jitter)``) rather than "full" (anywhere in
``[0, delay]``): full jitter suits thousands of clients hammering one server, whereas a step's
retries are few and users read "retrying in 8.1 s" in the log and the store, so the wait should
stay close to the exponential curve they configured while still keeping replicas and sibling
steps that failed together from retrying in lockstep.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable

from reconciler.engine.steps import RetryPolicy

Sleep = Callable[[float, threading.Event], bool]
"""Wait up to the given seconds or until the event is set; return True if the event was set."""

Uniform = Callable[[], float]
"""A random number in [0, 1), injected so that tests see exact delays."""


def backoff_delay(policy: RetryPolicy, failed_attempts: int, uniform: Uniform) -> float:
    """The wait after ``failed_attempts`` attempts (1 after the first failure), in seconds.

    The jittered value is capped by ``max_backoff`` too, so the cap is a promise users can rely on.
    """
    if failed_attempts < 1:
        raise ValueError("failed_attempts counts from 1")
    try:
        capped = min(
            policy.max_backoff, policy.initial_backoff * policy.multiplier ** (failed_attempts - 1)
        )
    except OverflowError:  # a large multiplier or many attempts: the cap is the answer anyway
        capped = policy.max_backoff
    spread = 1.0 + policy.jitter * (2.0 * uniform() - 1.0)
    return max(0.0, min(policy.max_backoff, capped * spread))


def event_sleep(seconds: float, interrupt: threading.Event) -> bool:
    """The real ``Sleep``: an event wait, so that a cancel ends a backoff at once."""
    return interrupt.wait(seconds)


def system_uniform() -> Uniform:
    """A fresh generator seeded by the OS: replicas must not share a jitter sequence."""
    return random.Random().random
