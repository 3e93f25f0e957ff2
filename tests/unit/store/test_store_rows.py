"""The store's JSON spelling and packing (``store.rows``): the same bytes as the library's."""

from __future__ import annotations

import os
import random
import zlib

import pytest

from reconciler.store.rows import JsonText, canonical_json, deflated


@pytest.mark.parametrize("size", [0, 1, 255, 256, 300, 2_000, 4_000, 40_000, 200_000])
def test_deflated_gives_zlib_text_back(size: int) -> None:
    rng = random.Random(size)
    data = bytes(rng.choice(b'{}":,abcdefghij0123') for _ in range(size)) + os.urandom(size // 8)
    packed = deflated(data)
    assert zlib.decompress(packed) == data
    # about as small as zlib.compress at the same level makes it
    assert len(packed) <= len(zlib.compress(data, 1)) * 1.02 + 8


def test_json_text_packs_with_deflated() -> None:
    text = canonical_json({f"key{i}": "value" * 10 for i in range(30)})
    long = JsonText(text)
    assert long._packed == deflated(text.encode("utf-8"))
    assert long.text == text
