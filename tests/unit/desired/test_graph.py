"""Resource ordering: sorted Kahn waves, and every member of every cycle named."""

from __future__ import annotations

import pytest

from reconciler.desired.graph import order

CASES = [
    pytest.param({"b": [], "a": [], "c": ["a"]}, (("a", "b"), ("c",)), (), id="waves-sorted"),
    pytest.param(
        {"route": ["dns"], "dns": [], "db": [], "app": ["route", "db"]},
        (("db", "dns"), ("route",), ("app",)),
        (),
        id="chain",
    ),
    pytest.param({"a": ["missing"]}, (("a",),), (), id="unknown-dependency-ignored"),
    pytest.param(
        {"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"], "e": []},
        (("e",),),
        (("a", "b", "c"),),
        id="cycle-of-three-and-a-blocked-follower",
    ),
    pytest.param(
        {"x": ["x"], "p": ["q"], "q": ["p"]}, (), (("p", "q"), ("x",)), id="two-cycles-self-loop"
    ),
]


@pytest.mark.parametrize(("deps", "waves", "cycles"), CASES)
def test_order(
    deps: dict[str, list[str]],
    waves: tuple[tuple[str, ...], ...],
    cycles: tuple[tuple[str, ...], ...],
) -> None:
    result = order(deps)
    assert result.waves == waves
    assert result.cycles == cycles
    assert set(result.order) | set(result.blocked) == set(deps)


def test_blocked_includes_followers_of_a_cycle() -> None:
    assert order({"a": ["b"], "b": ["a"], "d": ["a"]}).blocked == ("a", "b", "d")


def test_order_does_not_depend_on_insertion_order() -> None:
    one = order({"c": ["a"], "b": [], "a": []})
    two = order({"a": [], "b": [], "c": ["a"]})
    assert one == two
