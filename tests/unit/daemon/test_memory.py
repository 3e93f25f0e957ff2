"""Returning the C allocator's free memory between the daemon's runs."""

from __future__ import annotations

import sys

import pytest

from reconciler.daemon.memory import release_free_memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_free_memory_is_released_on_linux() -> None:
    blocks = [bytearray(4096) for _ in range(2000)]
    del blocks
    assert release_free_memory() is True
    assert release_free_memory() is True  # the function is looked up once, then reused
