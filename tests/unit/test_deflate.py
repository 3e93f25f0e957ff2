"""``deflated``: the texts the plan and the store keep packed come back as they went in."""

from __future__ import annotations

import os
import random
import zlib

import pytest

from reconciler.deflate import deflated


@pytest.mark.parametrize("size", [0, 1, 255, 256, 300, 2_000, 4_000, 40_000, 200_000])
def test_deflated_gives_zlib_text_back(size: int) -> None:
    rng = random.Random(size)
    data = bytes(rng.choice(b'{}":,abcdefghij0123') for _ in range(size)) + os.urandom(size // 8)
    packed = deflated(data)
    assert zlib.decompress(packed) == data
    # about as small as zlib.compress at the same level makes it
    assert len(packed) <= len(zlib.compress(data, 1)) * 1.02 + 8
