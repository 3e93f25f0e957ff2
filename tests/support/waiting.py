"""Waiting on a condition with a deadline: the one way tests wait for another process."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(probe: Callable[[], T | None], what: str, timeout: float = 30.0) -> T:
    """``probe()`` once it returns something truthy; AssertionError naming ``what`` after
    ``timeout`` seconds. Polls every 20 ms: a condition with a deadline, never a bare sleep."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)
