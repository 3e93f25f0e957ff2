"""The cyclic garbage collector's full collections, held off while a plan is built.

A plan builds many small values that all stay alive until it is done (parsed documents, typed
models, resolved specs, actions and their changes); CPython counts them as long-lived and, each
time they have grown by a quarter of the heap, walks the whole heap in a full collection. Those
walks find next to nothing: the plan's values are alive, and loading a Score file leaves no
cyclic garbage (its YAML loaders are released once read); what other cycles a plan makes are
freed by the young collections, which go on as before. In a first plan of 1,000 workloads
they were four full collections and about a sixth of the plan's CPU time; in the daemon, whose
heap also holds its imports and the store's decoded state, each walk is longer.

So while any plan runs, the third generation's threshold is out of reach; when the last plan
ends, the threshold it had comes back, and the next automatic collection makes the one full
collection the plan's growth calls for. Process-wide (the collector is), counted across threads
so that overlapping plans keep the pause until the last one ends; but the daemon's workers can
plan back to back for a long time, so a plan that ends while others still hold makes the full
collection itself once ``MAX_HOLD`` seconds have passed without one.

``reconciler apply`` holds them for its whole run, not only its plans: the process ends with
the run, and what a full collection would walk then is the run's own values, alive until it
ends (its steps' records and rendered files, the plan they came from). That was two full
collections and 6 to 9 % of a first apply of 1,000 workloads. The daemon does not: it lives on
after its runs, and its peak memory at 10,000 workloads sits at its budget, which a run's
cyclic garbage, kept until the run ends, went past.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_OUT_OF_REACH = 2**31 - 1
"""A threshold no count of young collections reaches (the collector keeps it as a C int)."""

MAX_HOLD = 60.0
"""Seconds overlapping plans may keep full collections off before one is made anyway."""


class _Hold:
    """How many blocks hold full collections off, and the threshold to give back."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.lock = threading.Lock()
        self.holders = 0
        self.saved: int | None = None
        self.clock = clock
        self.since = 0.0
        """When the hold began, or its last full collection was made."""

    def enter(self) -> None:
        with self.lock:
            if self.holders == 0:
                first, second, third = gc.get_threshold()
                self.saved = third
                self.since = self.clock()
                gc.set_threshold(first, second, _OUT_OF_REACH)
            self.holders += 1

    def leave(self) -> None:
        overdue = False
        with self.lock:
            self.holders -= 1
            if self.holders == 0:
                first, second, third = gc.get_threshold()
                if third == _OUT_OF_REACH and self.saved is not None:  # unless set since
                    gc.set_threshold(first, second, self.saved)
                self.saved = None
            elif self.clock() - self.since >= MAX_HOLD:
                self.since = self.clock()
                overdue = True
        if overdue:  # outside the lock: other plans may enter and leave meanwhile
            gc.collect()


_HOLD = _Hold()


@contextmanager
def full_collections_held() -> Iterator[None]:
    """No automatic full collection inside the block (young ones go on); nests, and holds
    across threads until the last block ends."""
    _HOLD.enter()
    try:
        yield
    finally:
        _HOLD.leave()
