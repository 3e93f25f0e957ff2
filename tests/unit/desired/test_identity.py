"""Resource identities: the ``type.class#id`` rules of score-go."""

from __future__ import annotations

import pytest

from reconciler.desired.identity import ResourceUid, parse, uid_text


@pytest.mark.parametrize(
    ("workload", "name", "type_", "class_", "id_", "expected"),
    [
        ("web", "db", "postgres", None, None, "postgres.default#web.db"),
        ("web", "db", "postgres", "large", None, "postgres.large#web.db"),
        ("web", "db", "postgres", None, "shop-db", "postgres.default#shop-db"),
        ("api", "cache", "redis", "ha", "main.cache", "redis.ha#main.cache"),
    ],
)
def test_uid_of_a_declaration(
    workload: str, name: str, type_: str, class_: str | None, id_: str | None, expected: str
) -> None:
    uid = ResourceUid.of(workload, name, type_, class_, id_)
    assert str(uid) == expected
    assert parse(expected) == uid


def test_an_id_is_shared_across_workloads_and_no_id_is_not() -> None:
    assert ResourceUid.of("a", "x", "redis", id_="c") == ResourceUid.of("b", "y", "redis", id_="c")
    assert ResourceUid.of("a", "x", "redis") != ResourceUid.of("b", "x", "redis")


def test_class_defaults_to_default() -> None:
    assert ResourceUid("dns").class_ == "default"


@pytest.mark.parametrize("text", ["postgres", "postgres#x", "postgres.default", ".d#x", "a.b.c#x"])
def test_parse_refuses_what_is_not_a_uid(text: str) -> None:
    with pytest.raises(ValueError, match="not a resource uid"):
        parse(text)


def test_uid_text_is_one_object_per_text() -> None:
    first = uid_text(ResourceUid.of("w", "db", "postgres", None, "shared-db"))
    second = uid_text(ResourceUid.of("v", "db", "postgres", None, "shared-db"))
    assert first == "postgres.default#shared-db"
    assert first is second
