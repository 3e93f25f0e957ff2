"""The daemon's use of the C allocator (glibc's malloc): fewer arenas, and free memory given back.

Python objects of up to 512 bytes come from Python's own allocator; everything larger (the
tables of big dictionaries, long texts, compressed specs, SQLite's and libgit2's buffers) comes
from malloc. glibc gives each thread that allocates its own arena, up to eight per core, so
that threads need not wait for each other's lock. The daemon's threads mostly take turns under
the GIL, so those arenas buy little speed, and each keeps its own free memory, which the
runs' churn leaves scattered among what stays. ``tune_allocator`` keeps one arena for the
whole process, and a fixed threshold above which blocks are mapped on their own: glibc
otherwise raises the threshold each time such a block is freed, so that a plan's large
transient tables then land among long-lived blocks in the heap and keep its pages resident
after they are freed.

What is freed still stays with the process: glibc returns memory on its own only from the top
of the heap. ``release_free_memory`` (``malloc_trim``) releases every free page; called once a
run is done, the next run starts from what is live, and the daemon's peak stays nearer to its
steady state.
"""

from __future__ import annotations

import functools
import sys
from typing import Any

ARENAS = 1
"""malloc arenas for the whole process (glibc's ``M_ARENA_MAX``)."""
MMAP_THRESHOLD = 16 * 1024
"""Bytes from which a block is mapped on its own and unmapped when freed (``M_MMAP_THRESHOLD``):
set once, it no longer grows, so large transient blocks never stay behind in the heap."""

_M_MMAP_THRESHOLD = -3  # glibc's malloc.h
_M_ARENA_MAX = -8


def tune_allocator() -> bool:
    """Set ``ARENAS`` and ``MMAP_THRESHOLD``; False where there is no glibc to tune. Call it
    before starting threads: an arena already made stays."""
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(_M_ARENA_MAX, ARENAS)) and bool(
        libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    )


def release_free_memory() -> bool:
    """Return the C allocator's free pages to the system; False where there is no way to
    (not glibc)."""
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True


@functools.cache
def _glibc() -> Any | None:
    """The process's own C library when it is glibc (``mallopt`` and ``malloc_trim``), typed."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes  # noqa: PLC0415  # only for these calls, and only on Linux

    libc = ctypes.CDLL(None)
    try:
        trim, mallopt = libc.malloc_trim, libc.mallopt
    except AttributeError:  # musl and others have neither
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return libc
