"""``Chunked``: a sequence in chunks behaves as the tuple of its items, and its versions share
what they did not change."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.chunked import CHUNK, Chunked

items = st.lists(st.integers(min_value=-5, max_value=5), max_size=3 * CHUNK + 7)


@given(items)
def test_it_behaves_as_the_tuple_of_its_items(values: list[int]) -> None:
    whole = tuple(values)
    chunked = Chunked.of(values)
    assert chunked == whole
    assert whole == chunked
    assert hash(chunked) == hash(whole)
    assert len(chunked) == len(whole)
    assert bool(chunked) == bool(whole)
    assert list(chunked) == values
    assert list(reversed(chunked)) == values[::-1]
    assert [chunked[i] for i in range(-len(values), len(values))] == values + values
    assert chunked[1:-1:2] == whole[1:-1:2]
    assert chunked != list(values)
    assert pickle.loads(pickle.dumps(chunked)) == whole
    for bad in (len(values), -len(values) - 1):
        with pytest.raises(IndexError):
            chunked[bad]


@given(items, st.dictionaries(st.integers(min_value=0), st.integers(), max_size=6))
def test_replaced_items_and_changed_positions(values: list[int], wanted: dict[int, int]) -> None:
    before = Chunked.of(values)
    updates = {k % len(values): v for k, v in wanted.items()} if values else {}
    after = before.replaced(updates)
    expected = list(values)
    for position, value in updates.items():
        expected[position] = value
    assert after == tuple(expected)
    assert before == tuple(values)  # the earlier version is left alone
    # the positions whose object is another one: replaced ones (small ints are shared objects,
    # so a value replaced by itself is not a change)
    assert after.changed_from(before) == [
        i for i, (a, b) in enumerate(zip(expected, values, strict=True)) if a is not b
    ]


def test_untouched_chunks_are_shared() -> None:
    before = Chunked.of(range(10 * CHUNK))
    after = before.replaced({3 * CHUNK + 5: -1})
    shared = [a is b for a, b in zip(after._chunks, before._chunks, strict=True)]
    assert shared == [i != 3 for i in range(10)]
    assert before.replaced({}) is before


def test_differently_chunked_sequences_are_compared_item_by_item() -> None:
    one = Chunked.of(range(2 * CHUNK))
    other = Chunked.joined((0,), Chunked.of(range(1, 2 * CHUNK)))
    assert one == other
    assert one.changed_from(other) is None  # not versions of one sequence: the caller scans


def test_joined_shares_the_chunks_of_its_parts() -> None:
    first = Chunked.of(range(CHUNK + 1))
    second = Chunked.of(range(5))
    joined = Chunked.joined(first, [], (7, 8), second)
    assert joined == (*range(CHUNK + 1), 7, 8, *range(5))
    assert joined._chunks[0] is first._chunks[0]
    assert joined._chunks[-1] is second._chunks[-1]
    assert joined[CHUNK + 2] == 8
    assert Chunked.joined() == ()
