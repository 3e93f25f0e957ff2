"""The daemon's use of glibc's allocator: one arena, and free memory given back between runs."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from reconciler.daemon.memory import release_free_memory

glibc = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")


def _resident_mib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
    raise AssertionError("no VmRSS")


@glibc
def test_freed_memory_below_the_heaps_top_is_given_back() -> None:
    """About 50 MiB freed under a block still in use stays resident until trimmed: glibc
    gives memory back on its own only from the top of the heap."""
    blocks = [bytearray(4000) for _ in range(12_800)]  # from malloc's heap, not pymalloc's
    pin = bytearray(4000)  # allocated after them: the freed region is not the heap's top
    del blocks
    before = _resident_mib()
    assert release_free_memory() is True
    assert before - _resident_mib() >= 30
    assert len(pin) == 4000


_THREADS_ALLOCATE = textwrap.dedent(
    """
    import ctypes, os, sys, tempfile, threading
    from reconciler.daemon.memory import tune_allocator

    if sys.argv[1] == "tuned":
        assert tune_allocator() is True
    kept = []

    def allocate():  # a thread's first malloc gets it an arena of its own, unless tuned
        for _ in range(2_000):
            kept.append(bytearray(4000))

    threads = [threading.Thread(target=allocate) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    libc = ctypes.CDLL(None)
    libc.fopen.restype = ctypes.c_void_p
    libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
    libc.fclose.argtypes = [ctypes.c_void_p]
    path = os.path.join(tempfile.mkdtemp(), "malloc.xml")
    stream = libc.fopen(path.encode(), b"w")
    libc.malloc_info(0, stream)
    libc.fclose(stream)
    print(open(path).read().count("<heap nr="))
    """
)


def _arenas_after_threads_allocate(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", _THREADS_ALLOCATE, mode],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return int(done.stdout.strip())


@glibc
def test_threads_share_one_arena_once_tuned() -> None:
    """Each thread that allocates gets an arena of its own, unless the allocator is tuned
    (checked in processes of their own: the setting is process-wide and an arena made stays)."""
    assert _arenas_after_threads_allocate("tuned") == 1
    assert _arenas_after_threads_allocate("default") > 1
