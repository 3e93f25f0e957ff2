"""Reading YAML: positions for every key and value, and a diagnostic for every bad input."""

from __future__ import annotations

import gc
import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from reconciler import yamldoc
from reconciler.catalogue import Code
from reconciler.yamldoc import MAX_DEPTH, DeferredPositions, Mark, load_plain, load_yaml

BILLION_LAUGHS = b"""\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def only_code(raw: bytes) -> tuple[Code, int | None, int | None]:
    doc, problems = load_yaml(raw, "f.yaml")
    assert doc is None
    assert len(problems) == 1
    assert problems[0].file == "f.yaml"
    return problems[0].code, problems[0].line, problems[0].column


def test_positions_of_keys_and_values_are_one_based() -> None:
    raw = b"apiVersion: score.dev/v1b1\ncontainers:\n  web:\n    image: nginx\n    args: [a, b]\n"
    doc, problems = load_yaml(raw, "score.yaml")
    assert problems == []
    assert doc is not None
    assert doc.data == {
        "apiVersion": "score.dev/v1b1",
        "containers": {"web": {"image": "nginx", "args": ["a", "b"]}},
    }
    assert doc.positions.key(("containers", "web", "image")) == Mark(4, 5)
    assert doc.positions.value(("containers", "web", "image")) == Mark(4, 12)
    assert doc.positions.value(("containers", "web", "args", 1)) == Mark(5, 15)


def test_nearest_falls_back_to_the_deepest_known_ancestor() -> None:
    doc, _ = load_yaml(b"a:\n  b: 1\n", "f.yaml")
    assert doc is not None
    assert doc.positions.nearest(("a", "missing", "deeper"), prefer_key=True) == Mark(1, 1)
    assert doc.positions.nearest(("a", "b", "x")) == Mark(2, 6)


def test_keys_are_kept_as_written() -> None:
    doc, _ = load_yaml(b"80: {port: 80}\ntrue: x\n1.0: y\n", "f.yaml")
    assert doc is not None
    assert set(doc.data) == {"80", "true", "1.0"}
    assert doc.data["80"] == {"port": 80}


def test_non_json_scalars_keep_their_text() -> None:
    doc, _ = load_yaml(b"when: 2024-01-02\nmode: '0600'\nn: null\nf: 1.5\n", "f.yaml")
    assert doc is not None
    assert doc.data == {"when": "2024-01-02", "mode": "0600", "n": None, "f": 1.5}


@pytest.mark.parametrize(
    ("raw", "code", "line", "column"),
    [
        (b"", Code.EMPTY_DOCUMENT, 1, 1),
        (b"# only a comment\n", Code.EMPTY_DOCUMENT, 1, 1),
        (b"- a\n- b\n", Code.NOT_A_MAPPING, 1, 1),
        (b"just text\n", Code.NOT_A_MAPPING, 1, 1),
        (b"a: 1\n---\nb: 2\n", Code.MULTIPLE_DOCUMENTS, 3, 1),
        (b"a: [1\n", Code.YAML_SYNTAX, 1, 6),  # the end of what was written
        (b"a: 1\n  b: 2\n", Code.YAML_SYNTAX, 2, 4),
        (b"a: 1\nb: 2\na: 3\n", Code.DUPLICATE_KEY, 3, 1),
        (b"? [a]\n: 1\n", Code.UNSUPPORTED_KEY, 1, 3),
        (b"base: &b {x: 1}\nother:\n  <<: *b\n", Code.UNSUPPORTED_KEY, 3, 3),
        (b"a: 1\nb: \xff\n", Code.INVALID_ENCODING, 2, 4),
        (b"a: !!binary zz\n", Code.YAML_SYNTAX, 1, 4),
    ],
)
def test_bad_input_is_one_positioned_diagnostic(
    raw: bytes, code: Code, line: int, column: int
) -> None:
    assert only_code(raw) == (code, line, column)


def test_billion_laughs_is_refused_quickly() -> None:
    code, _, _ = only_code(BILLION_LAUGHS)
    assert code is Code.YAML_TOO_COMPLEX


@pytest.mark.parametrize("depth", [MAX_DEPTH + 5, 5000])
def test_deep_nesting_is_refused(depth: int) -> None:
    raw = b"a: " + b"[" * depth + b"]" * depth + b"\n"
    code, _, _ = only_code(raw)
    assert code is Code.YAML_TOO_COMPLEX


def test_file_over_the_limit_is_refused_before_parsing() -> None:
    raw = b"a: '" + b"x" * (10 * 1024 * 1024) + b"'\n"
    code, line, _ = only_code(raw)
    assert (code, line) == (Code.FILE_TOO_LARGE, 1)


def test_byte_order_mark_is_accepted() -> None:
    doc, problems = load_yaml(b"\xef\xbb\xbfa: 1\n", "f.yaml")
    assert problems == []
    assert doc is not None
    assert doc.data == {"a": 1}


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    doc, problems = load_yaml(raw, "f.yaml")
    assert (doc is None) == bool(problems)
    assert all(p.code.id.startswith("RCN-10") for p in problems)


def test_a_deferred_document_places_diagnostics_as_the_parsed_one_did() -> None:
    raw = b"\xef\xbb\xbfa:\n  b: 1\n  c: [x, y]\n"
    doc, _ = load_yaml(raw, "f.yaml")
    assert doc is not None
    kept = doc.deferred(raw)
    assert kept.data is doc.data
    assert isinstance(kept.positions, DeferredPositions)
    for path in [("a",), ("a", "b"), ("a", "c", 1), ("a", "missing")]:
        assert kept.positions.nearest(path) == doc.positions.nearest(path)
        assert kept.positions.key(path) == doc.positions.key(path)
        assert kept.positions.value(path) == doc.positions.value(path)
    found = kept.diagnostic(Code.SCHEMA_VIOLATION, "x", ("a", "c", 1))
    assert (found.file, found.line, found.column) == ("f.yaml", 3, 10)


# -- load_plain: the values of rendered templates --------------------------------------------


PLAIN_CASES = [
    "",
    "# only a comment\n",
    "a: 1",
    "- 1\n- 2",
    "just a string",
    "42",
    "'quoted'",
    "a: 'b'\nc: \"d\\n\"\ne: |\n  text\n  more\nf: >\n  folded\n",
    "a: {}\nb: []\nc:\n",
    "{a: b, c: [1, 2.5, .inf, -.inf, .nan, null, ~, true, false, 0x1f, 0o17, 1e3, 2020-01-01]}",
    "x: 2020-01-01T10:00:00Z",
    "a:\n  b:\n    - c\n    - d: e\n      f: g\n",
    "a: 1\n...\n",
    "'1': a\n1: b\ntrue: c\nnull: d\n",
    "[0, -0, +0, 7, -7, +7, 007, -012, 1_000, 0b101, 0o17, 0x1F, -0x1F, 12345678901234567890]",
    "- &a [1]\n- *a\n",
    # left to the full reader, which gives the value or the error
    "a: &x 1\nb: *x",
    "a: !!str 1",
    "x: !!binary aGVsbG8=",
    "<<: {a: 1}\nb: 2",
    "a: <<",
    "a: 1\na: 2",
    "1: a\n1.0: b",
    "? [a]\n: b",
    "--- a\n--- b",
    "%YAML 1.1\n---\na: yes",
    "a: [",
    "a: b\n c: d",
    "[" * 70 + "1" + "]" * 70,
    "- " * 70 + "x",
]


def full_reader(text: str) -> object:
    """What templates read before ``load_plain``: libyaml, or pure Python when too deep."""
    if yamldoc.nests_deeper_than(text, MAX_DEPTH):
        return YAML(typ="safe", pure=True).load(text)
    return yamldoc.load_libyaml(text)


def outcome(read: Callable[[str], object], text: str) -> tuple[str, object]:
    try:
        return "value", read(text)
    except Exception as error:  # the same error, message included
        return type(error).__name__, str(error)


def same(a: object, b: object) -> bool:
    """Equal, of the same types all the way down (1 and True and 1.0 are not the same), NaN
    equal to NaN."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@pytest.mark.parametrize("text", PLAIN_CASES)
def test_load_plain_reads_what_the_full_reader_reads(text: str) -> None:
    assert same(outcome(lambda t: load_plain(t, MAX_DEPTH), text), outcome(full_reader, text))


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet=st.sampled_from(list("ab1.:-[]{},'\"&*!<>?#|\n ")), max_size=60)
    | st.text(max_size=60)
)
def test_load_plain_agrees_with_the_full_reader_on_any_text(text: str) -> None:
    assert same(outcome(lambda t: load_plain(t, MAX_DEPTH), text), outcome(full_reader, text))


READERS: dict[str, Callable[[str], object]] = {
    "load_plain": lambda t: load_plain(t, MAX_DEPTH),
    "load_yaml": lambda t: load_yaml(t.encode(), "f.yaml"),
    "nests_deeper_than": lambda t: yamldoc.nests_deeper_than(t, MAX_DEPTH),
}


@pytest.mark.parametrize("reader", sorted(READERS))
@pytest.mark.parametrize(
    "text", ["a: [1, {b: c}]\nd: 'e'\n", 'host: "db"\nport: 5432\n', "", "- 1\n"]
)
def test_a_reader_leaves_no_cycle_for_the_collector(reader: str, text: str) -> None:
    """Reading a text leaves nothing that only the cyclic collector frees: a run reads
    thousands (every Score file twice, every rendered text), and each loader left a cycle of
    itself, its last event and their marks, and a composing one every node it built."""
    read = READERS[reader]
    read(text)  # warm: first uses make lasting objects
    gc.collect()
    gc.disable()
    try:
        read(text)
        found = gc.collect()
    finally:
        gc.enable()
    assert found == 0


def test_load_plain_composes_no_nodes_for_a_plain_text(monkeypatch: pytest.MonkeyPatch) -> None:
    """A plain text is read in one pass of events: neither the depth check's pass nor the
    composing reader's; a text with an anchor goes to the composing reader."""
    passes: list[str] = []
    for name in ("nests_deeper_than", "load_libyaml"):
        real = getattr(yamldoc, name)

        def counted(*args: Any, _real: Any = real, _name: str = name) -> Any:
            passes.append(_name)
            return _real(*args)

        monkeypatch.setattr(yamldoc, name, counted)
    assert load_plain("a: [1, {b: c}]\nd: 'e'\n", MAX_DEPTH) == {"a": [1, {"b": "c"}], "d": "e"}
    assert passes == []
    assert load_plain("a: &x 1\nb: *x\n", MAX_DEPTH) == {"a": 1, "b": 1}
    assert passes == ["nests_deeper_than", "load_libyaml"]
