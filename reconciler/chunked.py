"""``Chunked``: an immutable sequence kept as a tuple of chunks (tuples of up to ``CHUNK`` items).

Why: the planner keeps an environment's desired resources and workloads, and the diff its
actions, from one plan to the next, and a one-workload commit changes one or two items of
each. As tuples, every plan copied them whole (tens of thousands of items at 10,000
workloads), and the diff scanned every item to find the ones that changed. As chunks:

- ``replaced`` makes the next version with some items replaced, sharing every untouched chunk:
  it costs the number of chunks (a copy of the outer tuple) plus one chunk per item replaced;
- ``joined`` puts sequences end to end, sharing their chunks (a plan's actions are the
  resources', then the workloads', then what goes away);
- ``changed_from`` tells which positions hold other objects than an earlier version of the same
  sequence by comparing chunks by identity first, then scanning only the chunks that differ.

The item-by-item passes left are over the chunks (N / 128), in C. A ``Chunked`` equals the tuple
(or the ``Chunked``) of the same items and hashes like it; earlier versions are never changed,
so a plan keeps its values while the next plan is made from them.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import accumulate, chain, compress
from operator import is_not
from typing import Any, TypeVar, overload

T = TypeVar("T")

CHUNK = 128
"""Items per chunk: a replacement copies the chunk tuple (N / 128 references) and one chunk
(128), about the square root of the 15,500 resources of 10,000 workloads."""


class Chunked(Sequence[T]):
    """An immutable sequence in chunks; see the module's docstring."""

    __slots__ = ("_chunks", "_ends")

    def __init__(self, chunks: tuple[tuple[T, ...], ...] = ()) -> None:
        """From chunks as they are (none empty); ``of`` and ``joined`` are the usual makers."""
        self._chunks = chunks
        self._ends: tuple[int, ...] = tuple(accumulate(map(len, chunks)))
        """Where each chunk ends: the position after its last item."""

    @classmethod
    def of(cls, items: Iterable[T]) -> Chunked[T]:
        """``items`` in chunks of ``CHUNK``."""
        whole = items if isinstance(items, tuple) else tuple(items)
        return cls(tuple(whole[i : i + CHUNK] for i in range(0, len(whole), CHUNK)))

    @classmethod
    def joined(cls, *parts: Sequence[T]) -> Chunked[T]:
        """``parts`` end to end; the chunks of a ``Chunked`` part are shared, not copied."""
        chunks: list[tuple[T, ...]] = []
        for part in parts:
            if isinstance(part, Chunked):
                chunks.extend(part._chunks)
            elif part:
                chunks.extend(Chunked.of(part)._chunks)
        return cls(tuple(chunks))

    def replaced(self, items: Mapping[int, T]) -> Chunked[T]:
        """A copy with the item at each position of ``items`` replaced (positions in range):
        the chunks without a replaced item are shared."""
        if not items:
            return self
        chunks = list(self._chunks)
        touched: dict[int, list[T]] = {}
        for position, item in items.items():
            index, offset = self._locate(position)
            found = touched.get(index)
            if found is None:
                found = touched[index] = list(chunks[index])
            found[offset] = item
        for index, found in touched.items():
            chunks[index] = tuple(found)
        return Chunked(tuple(chunks))

    def changed_from(self, before: Chunked[T]) -> list[int] | None:
        """The positions, in order, whose item is not ``before``'s at the same position (by
        identity); None when the two are not chunked alike (then any position may differ, and
        the caller compares item by item). Chunks that are the same object are skipped whole."""
        if self._ends != before._ends:
            return None
        found: list[int] = []
        mine, theirs = self._chunks, before._chunks
        for index in compress(range(len(mine)), map(is_not, mine, theirs)):
            start = self._ends[index - 1] if index else 0
            chunk, old = mine[index], theirs[index]
            found.extend(start + i for i in compress(range(len(chunk)), map(is_not, chunk, old)))
        return found

    def _locate(self, position: int) -> tuple[int, int]:
        """The chunk holding ``position`` (0 <= position < len) and the offset in it."""
        index = bisect_right(self._ends, position)
        return index, position - (self._ends[index - 1] if index else 0)

    # -- the sequence ----------------------------------------------------------------------

    def __len__(self) -> int:
        return self._ends[-1] if self._ends else 0

    @overload
    def __getitem__(self, index: int) -> T: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[T, ...]: ...
    def __getitem__(self, index: int | slice) -> T | tuple[T, ...]:
        if isinstance(index, slice):
            return tuple(self)[index]
        size = len(self)
        if index < 0:
            index += size
        if not 0 <= index < size:
            raise IndexError("Chunked index out of range")
        chunk, offset = self._locate(index)
        return self._chunks[chunk][offset]

    def __iter__(self) -> Iterator[T]:
        return chain.from_iterable(self._chunks)

    def __reversed__(self) -> Iterator[T]:
        return chain.from_iterable(map(reversed, reversed(self._chunks)))

    def __bool__(self) -> bool:
        return bool(self._chunks)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Chunked):
            return self._chunks == other._chunks or tuple(self) == tuple(other)
        if isinstance(other, tuple):
            return tuple(self) == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"Chunked({tuple(self)!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (Chunked.of, (tuple(self),))
