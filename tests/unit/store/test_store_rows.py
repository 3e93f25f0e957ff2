"""The store's JSON spelling and packing (``store.rows``): the same bytes as the library's."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest

from reconciler.deflate import deflated
from reconciler.store.rows import (
    Canonical,
    JsonText,
    canonical_json,
    resource_as_read,
    resource_row,
)

if TYPE_CHECKING:
    from tests.unit.store.conftest import Builders

NOW = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)


def _reference(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


VALUES: list[Any] = [
    {},
    [],
    "",
    'ünïcode \u2028 "quoted" \\ \n\t',
    0,
    -1,
    10**30,
    1.5,
    -0.0,
    1e300,
    float("nan"),
    float("inf"),
    True,
    None,
    {"b": [1, 2, {"z": None, "a": False}], "a": {"é": "ü", "": 0.1}},
    [{"x": [[], {}]}, "s", 3],
    {1: "int key", 2: 2.5},
]


@pytest.mark.parametrize("value", VALUES, ids=range(len(VALUES)))
def test_canonical_json_spells_values_as_json_dumps_does(value: object) -> None:
    assert canonical_json(value) == _reference(value)


def test_canonical_json_spells_random_documents_as_json_dumps_does() -> None:
    rng = random.Random(7)

    def make(depth: int) -> Any:
        pick = rng.randrange(6 if depth < 4 else 3)
        if pick == 0:
            return rng.choice(["", "a", "ä\u00e9\u4e2d", "x" * rng.randrange(40), '"\\/'])
        if pick == 1:
            return rng.choice([rng.randrange(-1000, 1000), rng.random() * 1e6, True, None])
        if pick == 2:
            return rng.randrange(10**12)
        if pick == 3:
            return [make(depth + 1) for _ in range(rng.randrange(4))]
        return {f"k{rng.randrange(50)}": make(depth + 1) for _ in range(rng.randrange(5))}

    for _ in range(300):
        value = make(0)
        assert canonical_json(value) == _reference(value)


def test_canonical_json_refuses_what_json_dumps_refuses() -> None:
    circular: list[Any] = []
    circular.append(circular)
    with pytest.raises(ValueError, match="Circular reference"):
        canonical_json(circular)
    with pytest.raises(TypeError, match="not JSON serializable"):
        canonical_json({"a": object()})
    with pytest.raises(TypeError, match="not supported"):
        canonical_json({1: "mixed", "a": "keys"})
    with pytest.raises(TypeError, match="not JSON serializable"):  # and goes on working
        canonical_json([object()])
    shared = {"a": 1}
    assert canonical_json([shared, shared]) == '[{"a":1},{"a":1}]'


def test_canonical_json_writes_nested_canonical_texts_as_their_objects() -> None:
    inner = JsonText('{"b":1,"a":2}')
    assert canonical_json({"x": inner}) == '{"x":{"a":2,"b":1}}'
    assert canonical_json(inner) == '{"b":1,"a":2}'
    assert canonical_json(Canonical.of({"z": 1, "y": 2})) == '{"y":2,"z":1}'


def test_json_text_packs_with_deflated() -> None:
    text = canonical_json({f"key{i}": "value" * 10 for i in range(30)})
    long = JsonText(text)
    assert long._packed == deflated(text.encode("utf-8"))
    assert long.text == text


def test_a_resource_as_read_has_its_json_columns_decoded_from_their_text(
    build: Builders,
) -> None:
    _, resource, _ = build
    record = resource(
        "redis.default#a",
        params={},
        outputs={"port": 6379, "host": "h"},
        secret_refs={"password": "secret://prod/redis.default#a/password"},
    )
    read = resource_as_read(resource_row("prod", record, NOW))
    assert read.params == {}
    assert type(read.params) is dict
    assert list(read.outputs.items()) == [("host", "h"), ("port", 6379)]
    assert read.secret_refs == record.secret_refs
