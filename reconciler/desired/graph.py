"""Order resources so that each comes after the resources its params refer to.

score-go sorts with Kahn's algorithm in "waves": every node whose dependencies are all placed is
ready, each wave is sorted by UID, and the waves are appended in turn. The same order here means
the same plan, step for step, as a score-k8s user would expect. Whatever is left when no node is
ready sits on or behind a cycle; the cycles themselves (strongly connected components) are
reported with every member, so that a user sees the whole loop at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Ordering:
    """``order`` is every node placed, wave after wave; ``blocked`` the rest, sorted;
    ``cycles`` each cycle's members, sorted, in order of their first member."""

    waves: tuple[tuple[str, ...], ...]
    blocked: tuple[str, ...]
    cycles: tuple[tuple[str, ...], ...]

    @property
    def order(self) -> tuple[str, ...]:
        return tuple(node for wave in self.waves for node in wave)


def order(dependencies: Mapping[str, Iterable[str]]) -> Ordering:
    """Kahn's algorithm in sorted waves; ``dependencies[n]`` are the nodes ``n`` needs first.

    A dependency that is not itself a key is ignored: the caller has reported it already.
    """
    needs = {node: {d for d in deps if d in dependencies} for node, deps in dependencies.items()}
    placed: set[str] = set()
    waves: list[tuple[str, ...]] = []
    while True:
        ready = sorted(n for n, deps in needs.items() if n not in placed and deps <= placed)
        if not ready:
            break
        waves.append(tuple(ready))
        placed.update(ready)
    blocked = sorted(set(needs) - placed)
    return Ordering(tuple(waves), tuple(blocked), _cycles({n: needs[n] for n in blocked}))


def _cycles(needs: Mapping[str, set[str]]) -> tuple[tuple[str, ...], ...]:
    """The strongly connected components that are cycles (more than one node, or a self-loop).

    Blocked graphs are small (a handful of resources), so reachability from each node is clearer
    than Tarjan's algorithm and fast enough.
    """
    reach = {node: _reachable(node, needs) for node in needs}
    found: list[tuple[str, ...]] = []
    seen: set[str] = set()
    for node in sorted(needs):
        if node in seen or node not in reach[node]:
            continue
        members = tuple(sorted(m for m in reach[node] if node in reach[m]))
        seen.update(members)
        found.append(members)
    return tuple(found)


def _reachable(start: str, needs: Mapping[str, set[str]]) -> set[str]:
    seen: set[str] = set()
    stack = sorted(needs.get(start, ()))
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        stack.extend(sorted(needs.get(node, ())))
    return seen
