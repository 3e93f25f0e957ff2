"""Saving many resources at once: one batched statement, everything read back."""

from __future__ import annotations

from typing import TYPE_CHECKING

from reconciler.store import Store

if TYPE_CHECKING:
    from tests.unit.store.conftest import Builders


def test_save_resources_in_one_batch(store: Store, build: Builders) -> None:
    _, resource, _ = build
    records = [resource(f"redis.default#r{n:05d}") for n in range(2000)]
    store.save_resources("prod", records)
    store.save_resources("prod", [resource("redis.default#r00007", status="Degraded")])
    recorded = store.recorded("prod").resources
    assert len(recorded) == 2000
    assert recorded["redis.default#r00007"].status == "Degraded"
    assert recorded["redis.default#r01999"].params == records[-1].params
