"""Secret references and markers: made, found and hidden."""

from __future__ import annotations

import pytest

from reconciler.desired import secrets

REF = "secret://prod/postgres.default#shop-db/password"


def test_ref_round_trip() -> None:
    ref = secrets.secret_ref("prod", "postgres.default#shop-db", "password")
    assert ref == REF
    assert secrets.is_ref(ref)
    assert secrets.parse_ref(ref) == ("prod", "postgres.default#shop-db", "password")


def test_embedded_refs_are_found_in_order() -> None:
    other = "secret://prod/redis.default#x.cache/password"
    text = f"a={secrets.embed(REF)}&b={secrets.embed(other)}"
    assert secrets.refs_in(text) == [REF, other]
    assert secrets.refs_in(REF) == [REF]
    assert secrets.refs_in("no secret here") == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (REF, "(sensitive value)"),
        (f"redis://u:{secrets.embed(REF)}@h:6379", "redis://u:(sensitive value)@h:6379"),
        ({"a": [REF, "plain"], "b": 5}, {"a": ["(sensitive value)", "plain"], "b": 5}),
        ("secret://not a ref", "secret://not a ref"),
    ],
)
def test_redact(value: object, expected: object) -> None:
    assert secrets.redact(value) == expected


def test_split_outputs_keeps_values_out_of_the_public_map() -> None:
    public, hidden = secrets.split_outputs(
        {"host": "db", "password": "hunter2"}, ("password",), "prod", "postgres.default#x"
    )
    assert public == {"host": "db", "password": "secret://prod/postgres.default#x/password"}
    assert hidden == {"password": "hunter2"}
    assert "hunter2" not in repr(public)


def test_embed_refs_marks_only_references() -> None:
    assert secrets.embed_refs({"p": REF, "h": "db"}) == {"p": secrets.embed(REF), "h": "db"}
    assert secrets.contains_secret([{"x": secrets.embed(REF)}])
    assert not secrets.contains_secret({"x": "plain"})


def test_embed_refs_returns_a_dict_without_references_itself() -> None:
    """The planner keeps a view of every recorded resource's outputs: when nothing is turned
    into a marker, the view is the recorded dict, not a copy of it."""
    outputs = {"host": "db", "port": 5432, "nested": {"a": "b"}}
    assert secrets.embed_refs(outputs) is outputs
    nested = {"conn": {"password": REF}}
    embedded = secrets.embed_refs(nested)
    assert embedded == {"conn": {"password": secrets.embed(REF)}}
    assert nested == {"conn": {"password": REF}}  # the given value is left as it was
