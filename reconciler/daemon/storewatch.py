"""Noticing what other processes wrote to the store.

``reconciler approve``, ``apply``, ``destroy``, ``sync`` and ``rollback`` run beside the daemon
on the same store. The commit's verdict (notes, the forge's status) is the daemon's to report,
so without this it would say ``WaitingApproval`` until the environment's next resync, long
after the approved run finished. Each environment's marks (its revision token and last
commit, ``Store.marks``) change with every write to it by any process; the daemon remembers
the marks its own work left and queues the environment's key when they moved under it, once
nobody else holds the environment any more.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

Mark = tuple[str | None, str | None]
"""An environment's revision token and last commit."""

POLL_SECONDS = 2.0
"""How often the daemon reads the marks: one small query, whatever the environments' size."""


def moved_under(
    seen: Mapping[str, Mark], current: Mapping[str, Mark], busy: Collection[str]
) -> list[str]:
    """The environments whose marks differ from what this process last saw, leaving out the
    ones its own workers are on (their writes are this process's, and it looks again after).
    An environment that was not in the store before counts as moved."""
    return sorted(
        name for name, mark in current.items() if name not in busy and seen.get(name) != mark
    )
