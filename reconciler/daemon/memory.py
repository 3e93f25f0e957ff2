"""Giving the C allocator's free memory back to the system between the daemon's runs.

A run of hundreds of workloads allocates and frees a few hundred bytes per object many
times over (plans, manifests, rows) from several threads, each with its own glibc arena. What
is freed stays with the process: glibc returns memory only from the top of an arena, so the
resident size a first reconcile reaches is its runs' churn on top of what the daemon keeps.
``malloc_trim`` releases the free pages of every arena; called once a run is done, the next
run starts from what is live, and the daemon's peak stays nearer to its steady state.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable


def release_free_memory() -> bool:
    """Return the C allocator's free pages to the system; False where there is no way to
    (not glibc)."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    import ctypes  # noqa: PLC0415  # only for this call, and only on Linux

    try:
        function = ctypes.CDLL(None).malloc_trim  # the process's own C library
    except (OSError, AttributeError):  # musl and others have no malloc_trim
        return None
    function.argtypes = [ctypes.c_size_t]
    function.restype = ctypes.c_int
    trim: Callable[[int], int] = function
    return trim
