"""``deflated``: how the reconciler packs the JSON texts it keeps in memory.

A plan keeps every workload's spec packed (``desired.model``) and the store every JSON column
it has decoded (``store.rows.JsonText``): thousands of texts of one to a few kilobytes per
run. ``zlib.compress`` sets up a 32 KiB window and clears a 64 KiB hash table for every text,
whatever its size, which was nine tenths of packing one (about 100 against 10 microseconds).
"""

from __future__ import annotations

import zlib

MEMORY_LEVEL = 4
"""zlib's ``memLevel``: a hash table of 2,048 entries, enough for texts of a few KB."""


def deflated(data: bytes) -> bytes:
    """``data`` deflated at level 1, in the zlib format ``zlib.decompress`` reads, with a
    window no larger than the text and a small hash table. A window as large as the text
    finds every match a larger one would; the smaller hash table may miss a few, which costs
    a few bytes at most (+0.2 % over a first reconcile's texts)."""
    window = max(9, min(15, (len(data) + 262).bit_length()))  # 262: zlib's lookahead
    packer = zlib.compressobj(1, zlib.DEFLATED, window, MEMORY_LEVEL)
    return packer.compress(data) + packer.flush()
