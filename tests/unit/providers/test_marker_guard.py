"""The last guard before manifests are written: its JSON pre-check never lets a marker or a
secret reference through that the walk over every string would find."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.desired.secrets import MARK_CLOSE, MARK_OPEN
from reconciler.providers.base import DriverError
from reconciler.providers.kubernetes_objects import _may_hold_marker, _refuse_markers, _strings

PIECES = ["secret://", MARK_OPEN, MARK_CLOSE, '"', "\\", "\n", "\x00", "\u2028", "a", "é", ":"]
texts = st.lists(st.sampled_from(PIECES) | st.text(max_size=3), max_size=5).map("".join)
scalars = texts | st.integers() | st.floats() | st.booleans() | st.none()
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(texts | st.integers(), inner, max_size=3)
    ),
    max_leaves=12,
)


def _walk_finds(obj: object) -> bool:
    return any(
        MARK_OPEN in t or MARK_CLOSE in t or t.startswith("secret://") for t in _strings(obj)
    )


@settings(max_examples=400)
@given(st.dictionaries(texts, values, max_size=4))
def test_the_pre_check_never_misses_what_the_walk_finds(obj: dict[str, Any]) -> None:
    if _walk_finds(obj):
        assert _may_hold_marker(obj)


@pytest.mark.parametrize(
    "obj",
    [
        {"kind": "ConfigMap", "data": {"k": f"x{MARK_OPEN}y"}},
        {"kind": "ConfigMap", "data": {f'"{MARK_CLOSE}': "v"}},
        {"kind": "ConfigMap", "data": {"k": ["a", ("secret://prod/db/password",)]}},
        {"kind": "ConfigMap", "data": {"secret://prod/db/password": 1}},
        {"kind": "ConfigMap", "data": {"k": object(), "v": "secret://x"}},  # not JSON: walked
    ],
)
def test_markers_anywhere_are_refused(obj: dict[str, Any]) -> None:
    with pytest.raises(DriverError, match="a secret would be written in ConfigMap"):
        _refuse_markers([obj], "workload 'web'")


def test_an_external_secret_may_hold_references() -> None:
    _refuse_markers([{"kind": "ExternalSecret", "spec": {"k": "secret://prod/db/x"}}], "web")
    _refuse_markers([{"kind": "ConfigMap", "data": {"k": 'a "secret:// b'}}], "web")
