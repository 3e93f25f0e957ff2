"""``score.semantics``: the checks a JSON Schema cannot express."""

from __future__ import annotations

import gc

from reconciler.score.semantics import _find_cycle


def test_a_cycle_of_before_is_found() -> None:
    assert _find_cycle({"a": ["b"], "b": ["c"], "c": ["a"]}) == ["a", "b", "c"]
    assert _find_cycle({"a": ["b"], "b": []}) is None


def test_no_before_leaves_no_garbage_for_the_collector() -> None:
    """A workload without ``before`` (nearly all) leaves nothing for the cyclic collector,
    which a plan of thousands of Score files would otherwise call on more often."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        gc.collect()
        for _ in range(50):
            assert _find_cycle({}) is None
        assert gc.collect() == 0
    finally:
        if enabled:
            gc.enable()
