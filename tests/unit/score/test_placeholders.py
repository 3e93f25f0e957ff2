"""Placeholder substitution behaves as score-go's framework/substitution.go (as score-k8s uses it).

The tables marked "score-go" restate the cases of score-go's own substitution tests; the rest pin
down the edges (escapes, nulls, unknown outputs, JSON encoding) and ``check_workload``.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from ruamel.yaml import YAML

from reconciler.catalogue import Code
from reconciler.score import placeholders
from reconciler.score.placeholders import (
    KNOWN_AFTER_APPLY,
    LookupFailure,
    PlaceholderProblem,
    Substituted,
    check_text,
    check_workload,
    find_refs,
    render_value,
    split_ref,
    substitute,
    substitute_string,
    workload_resolver,
)

SHARED_SCORE = Path(__file__).resolve().parents[3].parent / "shared" / "score"

METADATA: Mapping[str, object] = {
    "name": "test-name",
    "other": {"key": "value"},
    "annotations": {"key.com/foo-bar": "thing"},
    "deep": {"a": {"b": {"c": "bottom"}}},
    "nothing": None,
    "replicas": 3,
}
OUTPUTS: Mapping[str, Mapping[str, object] | None] = {
    "static": {"x": "a"},
    "db": {"host": "h", "port": 5432, "name": None, "nested": {"k": [1, 2]}},
    "pending": None,
}
RESOLVE = workload_resolver(METADATA, OUTPUTS)

UNKNOWN_ROOT = "unknown reference root, use $$ to escape the substitution"


def one(ref: str) -> tuple[Substituted, list[PlaceholderProblem]]:
    return substitute_string("${" + ref + "}", RESOLVE)


def only_problem(problems: list[PlaceholderProblem]) -> PlaceholderProblem:
    assert len(problems) == 1, problems
    return problems[0]


# -- splitting and finding ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "parts"),
    [
        ("metadata.name", ["metadata", "name"]),
        ("metadata.annotations.key\\.com/foo-bar", ["metadata", "annotations", "key.com/foo-bar"]),
        ("a\\.b\\.c", ["a.b.c"]),
        ("a..b", ["a", "", "b"]),
        ("", [""]),
        ("trailing.", ["trailing", ""]),
        ("back\\slash", ["back\\slash"]),
    ],
)
def test_split_ref(ref: str, parts: list[str]) -> None:
    assert split_ref(ref) == parts


@pytest.mark.parametrize(
    ("text", "refs"),
    [
        ("${a} $${b} $$ ${c.d}", ["a", "c.d"]),
        ("$$${x}", ["x"]),
        ("$$$${x}", []),
        ("${}", [""]),
        ("$ ${unterminated", []),
        ("no dollars", []),
        ("${a}${b}", ["a", "b"]),
        ("${multi\nline}", ["multi\nline"]),
    ],
)
def test_find_refs(text: str, refs: list[str]) -> None:
    assert find_refs(text) == refs


# -- scanning: score-go TestSubstituteString and the edges around it ------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ""),
        ("abc", "abc"),
        ("$abc", "$abc"),
        ("abc $$ abc", "abc $ abc"),
        ("$${abc}", "${abc}"),
        ("$$$${abc}", "$${abc}"),
        ("$${abc .4t3298y *(^&(*}", "${abc .4t3298y *(^&(*}"),
        ("my name is ${metadata.name}", "my name is test-name"),
        ("$", "$"),
        ("abc$", "abc$"),
        ("$$", "$"),
        ("$$$", "$$"),
        ("${abc", "${abc"),
        ("}${metadata.name}{", "}test-name{"),
        ("$$_$${fizzbuzz}", "$_${fizzbuzz}"),
    ],
)
def test_substitute_string_scan(text: str, expected: str) -> None:
    assert substitute_string(text, RESOLVE) == (expected, [])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("$$${abc}", f"invalid ref 'abc': {UNKNOWN_ROOT}"),
        ("$$$$${abc}", f"invalid ref 'abc': {UNKNOWN_ROOT}"),
        ("my name is ${}", f"invalid ref '': {UNKNOWN_ROOT}"),
        (
            "my name is ${metadata.thing\\.two}",
            "invalid ref 'metadata.thing\\.two': key 'thing.two' not found",
        ),
    ],
)
def test_substitute_string_errors_score_go(text: str, message: str) -> None:
    _, problems = substitute_string(text, RESOLVE)
    assert only_problem(problems).message == message


def test_resolved_values_are_not_substituted_again() -> None:
    """score-go's db lookup returns compose-style ``${DB_HOST?required}``: it stays literal."""

    def db(parts: list[str]) -> object:
        return "${DB_" + "_".join(parts[2:]).upper() + "?required}"

    text = "postgresql://${resources.db.user}:${resources.db.password}@${resources.db.host}"
    expected = "postgresql://${DB_USER?required}:${DB_PASSWORD?required}@${DB_HOST?required}"
    assert substitute_string(text, db) == (expected, [])


def test_several_errors_in_one_string_are_all_reported_in_order() -> None:
    text = "${metadata.x}-${resources.nope.y}-${other}-${metadata.name}"
    result, problems = substitute_string(text, RESOLVE, ("containers", "web", "variables", "X"))
    assert [p.code for p in problems] == [
        Code.PLACEHOLDER_MISSING_KEY,
        Code.PLACEHOLDER_UNKNOWN_RESOURCE,
        Code.PLACEHOLDER_UNKNOWN_ROOT,
    ]
    assert all(p.path == ("containers", "web", "variables", "X") for p in problems)
    # failed placeholders stay as written; the good one is still resolved
    assert result == "${metadata.x}-${resources.nope.y}-${other}-test-name"


def test_problem_reads_with_its_path() -> None:
    _, problems = substitute_string("${metadata.foo}", RESOLVE, ("containers", "web", "variables"))
    problem = only_problem(problems)
    assert (
        str(problem) == "containers.web.variables: invalid ref 'metadata.foo': key 'foo' not found"
    )
    assert problem.location == "containers.web.variables"
    assert str(PlaceholderProblem((), problem.code, "m")) == "m"


# -- resolution: score-go TestSubstitutionFunction and more ---------------------------------------


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("metadata.name", "test-name"),
        ("metadata.other", '{"key":"value"}'),
        ("metadata.other.key", "value"),
        ("metadata.annotations.key\\.com/foo-bar", "thing"),
        ("metadata.deep.a.b.c", "bottom"),
        ("metadata.deep.a", '{"b":{"c":"bottom"}}'),
        ("metadata.replicas", "3"),
        ("metadata.nothing", "null"),
        ("resources.static.x", "a"),
        ("resources.db.port", "5432"),
        ("resources.db.nested", '{"k":[1,2]}'),
        ("resources.db.nested.k", "[1,2]"),
        ("resources.db.name", "null"),
    ],
)
def test_resolves(ref: str, expected: str) -> None:
    assert one(ref) == (expected, [])


@pytest.mark.parametrize(
    ("ref", "code", "detail"),
    [
        ("missing", Code.PLACEHOLDER_UNKNOWN_ROOT, UNKNOWN_ROOT),
        ("Metadata.name", Code.PLACEHOLDER_UNKNOWN_ROOT, UNKNOWN_ROOT),
        ("metadata", Code.PLACEHOLDER_NEEDS_KEY, "requires at least a metadata key to lookup"),
        ("metadata.missing", Code.PLACEHOLDER_MISSING_KEY, "key 'missing' not found"),
        ("metadata.deep.a.x", Code.PLACEHOLDER_MISSING_KEY, "key 'x' not found"),
        (
            "metadata.name.foo",
            Code.PLACEHOLDER_NOT_A_MAP,
            "cannot lookup key 'foo', context is not a map",
        ),
        # score-go: a null met while walking metadata is "not a map" ...
        (
            "metadata.nothing.x",
            Code.PLACEHOLDER_NOT_A_MAP,
            "cannot lookup key 'x', context is not a map",
        ),
        # ... but while walking resource outputs it is "not found"
        ("resources.db.name.x", Code.PLACEHOLDER_MISSING_KEY, "key 'x' not found"),
        (
            "resources.db.host.x",
            Code.PLACEHOLDER_NOT_A_MAP,
            "cannot lookup key 'x', context is not a map",
        ),
        ("resources.missing", Code.PLACEHOLDER_UNKNOWN_RESOURCE, "no known resource 'missing'"),
        ("resources.missing.x", Code.PLACEHOLDER_UNKNOWN_RESOURCE, "no known resource 'missing'"),
        ("resources.static.y", Code.PLACEHOLDER_MISSING_KEY, "key 'y' not found"),
        ("resources", Code.PLACEHOLDER_NEEDS_KEY, "requires at least a resource name to lookup"),
        ("resources.static", Code.PLACEHOLDER_NEEDS_KEY, "at least one lookup key is required"),
        ("resources.pending", Code.PLACEHOLDER_NEEDS_KEY, "at least one lookup key is required"),
    ],
)
def test_resolution_errors(ref: str, code: Code, detail: str) -> None:
    result, problems = one(ref)
    problem = only_problem(problems)
    assert problem.code is code
    assert problem.message == f"invalid ref '{ref}': {detail}"
    assert result == "${" + ref + "}"


def test_volume_source_two_part_ref_is_the_resource_uid() -> None:
    resolve = workload_resolver(METADATA, OUTPUTS, uids={"static": "volume.default#w.static"})
    assert substitute_string("${resources.static}", resolve) == ("volume.default#w.static", [])
    # three parts and more resolve through the outputs as anywhere else
    assert substitute_string("${resources.static.x}", resolve) == ("a", [])
    assert substitute_string("${metadata.name}", resolve) == ("test-name", [])
    _, problems = substitute_string("${resources.db}", resolve)
    assert only_problem(problems).code is Code.PLACEHOLDER_UNKNOWN_RESOURCE


def test_custom_resolver_failure_is_prefixed_with_the_ref() -> None:
    def refuse(parts: list[str]) -> object:
        raise LookupFailure(Code.PLACEHOLDER_MISSING_KEY, f"nothing for {len(parts)} parts")

    _, problems = substitute_string("x ${a.b\\.c} y", refuse)
    assert only_problem(problems).message == "invalid ref 'a.b\\.c': nothing for 2 parts"


# -- known after apply ---------------------------------------------------------------------------


def test_unknown_outputs_make_the_whole_string_unknown() -> None:
    text = "postgres://${resources.pending.host}:${resources.db.port}"
    assert substitute_string(text, RESOLVE) == (KNOWN_AFTER_APPLY, [])
    assert one("resources.pending.a.b.c") == (KNOWN_AFTER_APPLY, [])
    assert str(KNOWN_AFTER_APPLY) == "(known after apply)"


def test_unknown_value_still_reports_other_problems() -> None:
    result, problems = substitute_string("${resources.pending.host}${metadata.x}", RESOLVE)
    assert result is KNOWN_AFTER_APPLY
    assert only_problem(problems).code is Code.PLACEHOLDER_MISSING_KEY


def test_unknown_value_inside_outputs() -> None:
    resolve = workload_resolver(
        {}, {"db": {"port": KNOWN_AFTER_APPLY, "m": {"k": KNOWN_AFTER_APPLY}}}
    )
    assert substitute_string("${resources.db.port}", resolve) == (KNOWN_AFTER_APPLY, [])
    assert substitute_string("${resources.db.port.deeper}", resolve) == (KNOWN_AFTER_APPLY, [])
    assert substitute_string("x${resources.db.m}", resolve) == (KNOWN_AFTER_APPLY, [])


def test_escaped_placeholders_are_never_resolved() -> None:
    assert substitute_string("$${resources.pending.host}", RESOLVE) == (
        "${resources.pending.host}",
        [],
    )


# -- JSON encoding, as Go's json.Marshal ---------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("as is", "as is"),
        (5432, "5432"),
        (-1, "-1"),
        (True, "true"),
        (False, "false"),
        (None, "null"),
        ({"key": "value"}, '{"key":"value"}'),
        ({"b": 1, "a": [True, None]}, '{"a":[true,null],"b":1}'),
        ([1, "x", {"y": 2.5}], '[1,"x",{"y":2.5}]'),
        ((1, 2), "[1,2]"),
        ({1: "int key"}, '{"1":"int key"}'),
        ([], "[]"),
        ({}, "{}"),
        (5432.0, "5432"),
        (1.5, "1.5"),
        (0.0, "0"),
        (-0.0, "-0"),
        (0.00001, "0.00001"),
        (1e-7, "1e-7"),
        (1.5e-10, "1.5e-10"),
        (1e20, "100000000000000000000"),
        (1e21, "1e+21"),
        (["<a&b>"], '["\\u003ca\\u0026b\\u003e"]'),
        (["é ü \u2028"], '["é ü \\u2028"]'),
        (['q"b\\\n\t'], '["q\\"b\\\\\\n\\t"]'),
        ([datetime.date(2024, 1, 2)], '["2024-01-02"]'),
        ([b"hi"], '["aGk="]'),
    ],
)
def test_render_value(value: object, text: str) -> None:
    assert render_value(value) == text


def test_render_value_unknown_anywhere_is_unknown() -> None:
    assert render_value(KNOWN_AFTER_APPLY) is KNOWN_AFTER_APPLY
    assert render_value({"a": [1, {"b": KNOWN_AFTER_APPLY}]}) is KNOWN_AFTER_APPLY


# -- recursion: score-go TestSubstituteMap --------------------------------------------------------


def test_substitute_map_success() -> None:
    source = {
        "d": {"f": "${metadata.name}", "e": "1"},
        "c": ["1", "${metadata.name}", {"d": "${metadata.name}"}],
        "b": "${metadata.name}",
        "a": "1",
        "n": 5,
        "t": True,
        "z": None,
    }
    result, problems = substitute(source, RESOLVE)
    assert problems == []
    assert result == {
        "a": "1",
        "b": "test-name",
        "c": ["1", "test-name", {"d": "test-name"}],
        "d": {"e": "1", "f": "test-name"},
        "n": 5,
        "t": True,
        "z": None,
    }
    assert isinstance(result, dict)
    assert list(result) == sorted(source)
    assert source["b"] == "${metadata.name}"  # the input is not modified


def test_substitute_map_failure_paths() -> None:
    source = {"a": [{"b": "${metadata.unknown}"}], "c": "${metadata.other.key.x}"}
    _, problems = substitute(source, RESOLVE, ("resources", "db", "params"))
    assert [(p.path, p.code) for p in problems] == [
        (("resources", "db", "params", "a", 0, "b"), Code.PLACEHOLDER_MISSING_KEY),
        (("resources", "db", "params", "c"), Code.PLACEHOLDER_NOT_A_MAP),
    ]
    assert str(problems[0]) == (
        "resources.db.params.a.0.b: invalid ref 'metadata.unknown': key 'unknown' not found"
    )


def test_single_placeholder_still_gives_a_string() -> None:
    """score-go substitutes params through strings only: `${resources.db.port}` becomes "5432"."""
    result, _ = substitute({"port": "${resources.db.port}", "kept": 5432}, RESOLVE)
    assert result == {"port": "5432", "kept": 5432}


def test_substitute_keys_are_not_substituted_and_tuples_become_lists() -> None:
    result, problems = substitute({"${metadata.name}": ("${metadata.name}",)}, RESOLVE)
    assert (result, problems) == ({"${metadata.name}": ["test-name"]}, [])


# -- check_workload -----------------------------------------------------------------------------


def score_files() -> list[Path]:
    if not SHARED_SCORE.is_dir():
        return []
    files = [*sorted((SHARED_SCORE / "examples").rglob("*.yaml"))]
    return files + sorted((SHARED_SCORE / "samples").glob("*.yaml"))


@pytest.mark.skipif(not SHARED_SCORE.is_dir(), reason=f"{SHARED_SCORE} (shared samples) is missing")
@pytest.mark.parametrize("path", score_files(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_check_workload_accepts_the_reference_examples(path: Path) -> None:
    data = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
    assert check_workload(data) == []


def test_check_workload_reports_every_problem_with_its_path() -> None:
    data = {
        "metadata": {"name": "w", "annotations": {"a.b/c": "x"}},
        "containers": {
            "web": {
                "image": "x",
                "command": ["${nope}"],
                "args": ["${metadata.missing}"],
                "variables": {
                    "A": "${metadata.missing}",
                    "B": "${resources.ghost.host}",
                    "C": "${metadata.annotations.a\\.b/c}",
                    "D": "${resources.db.anything.at.all}",
                    "E": 5,
                    "F": "${resources.db}",
                },
                "files": {
                    "/etc/a": {"content": "${oops}"},
                    "/etc/b": {"content": "${oops}", "noExpand": True},
                    "/etc/c": {"binaryContent": "${oops}"},
                    "/etc/d": {"source": "${oops}"},
                },
                "volumes": {
                    "/data": {"source": "${resources.db}"},
                    "/other": {"source": "${resources.ghost}"},
                    "/plain": {"source": "not-a-placeholder"},
                },
            },
            "worker": {
                "image": "x",
                "files": [{"target": "/x", "content": "${metadata}"}],
                "volumes": [{"target": "/v", "source": "${resources}"}],
            },
        },
        "resources": {
            "db": {
                "type": "postgres",
                "params": {"x": ["${metadata.name}", {"y": "${resources.ghost.z}"}]},
            },
            "other": {"type": "t", "params": {"d": "${resources.db.host}"}},
        },
    }
    problems = check_workload(data)
    assert [(p.path, p.code) for p in problems] == [
        (("containers", "web", "variables", "A"), Code.PLACEHOLDER_MISSING_KEY),
        (("containers", "web", "variables", "B"), Code.PLACEHOLDER_UNKNOWN_RESOURCE),
        (("containers", "web", "variables", "F"), Code.PLACEHOLDER_NEEDS_KEY),
        (("containers", "web", "files", "/etc/a", "content"), Code.PLACEHOLDER_UNKNOWN_ROOT),
        (("containers", "web", "volumes", "/other", "source"), Code.PLACEHOLDER_UNKNOWN_RESOURCE),
        (("containers", "worker", "files", 0, "content"), Code.PLACEHOLDER_NEEDS_KEY),
        (("containers", "worker", "volumes", 0, "source"), Code.PLACEHOLDER_NEEDS_KEY),
        (("resources", "db", "params", "x", 1, "y"), Code.PLACEHOLDER_UNKNOWN_RESOURCE),
    ]
    assert problems[1].message == "invalid ref 'resources.ghost.host': no known resource 'ghost'"


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"containers": ["x"], "resources": "y", "metadata": 3},
        {"containers": {"c": "str", "d": None}},
        {"containers": {"d": {"variables": ["${x}"], "files": "s", "volumes": {"/v": "str"}}}},
        {"containers": {"d": {"files": [None, 3, {"content": 7}], "volumes": [["${x}"]]}}},
        {"resources": {"r": "str", "s": {"type": "t"}, "u": {"params": None}}},
    ],
)
def test_check_workload_skips_parts_of_the_wrong_type(data: dict[str, object]) -> None:
    assert check_workload(data) == []


def test_check_workload_metadata_of_the_wrong_type_is_empty() -> None:
    problems = check_workload(
        {"metadata": ["x"], "containers": {"c": {"variables": {"V": "${metadata.name}"}}}}
    )
    assert [p.code for p in problems] == [Code.PLACEHOLDER_MISSING_KEY]


def test_check_workload_non_string_keys_keep_their_type_in_paths() -> None:
    problems = check_workload({"containers": {1: {"variables": {2: "${x}"}}}})
    assert [p.path for p in problems] == [("containers", 1, "variables", 2)]


def test_check_text_checks_like_content() -> None:
    text = "${metadata.name} ${resources.db.x} ${resources.nope.x} $${escaped}"
    problems = check_text(text, {"name": "w"}, {"db"}, ("containers", "c", "files", "/f", "source"))
    problem = only_problem(problems)
    assert problem.code is Code.PLACEHOLDER_UNKNOWN_RESOURCE
    assert problem.path == ("containers", "c", "files", "/f", "source")


# -- properties ----------------------------------------------------------------------------------


def echo(parts: list[str]) -> object:
    return ".".join(parts)


@given(st.text())
def test_never_raises(text: str) -> None:
    result, problems = substitute_string(text, RESOLVE)
    assert isinstance(result, str) or result is KNOWN_AFTER_APPLY
    assert all(isinstance(p, PlaceholderProblem) for p in problems)
    echoed, none = substitute_string(text, echo)
    assert isinstance(echoed, str)
    assert none == []


@given(st.text(alphabet=st.characters(blacklist_characters="$")))
def test_text_without_dollar_is_unchanged(text: str) -> None:
    assert substitute_string(text, echo) == (text, [])
    assert find_refs(text) == []


@given(st.text(alphabet=st.sampled_from("${}.ab\\ \n")))
def test_doubling_every_dollar_escapes_everything(text: str) -> None:
    # The body of an escaped `$${...}` is kept as written (see the next test), so a text with a
    # `$` inside `${...}` does not round-trip; everything else does.
    assume(re.search(r"\$\{[^}]*\$", text) is None)
    assert substitute_string(text.replace("$", "$$"), RESOLVE) == (text, [])


def test_the_body_of_an_escaped_placeholder_is_kept_as_written() -> None:
    """score-go's regex takes `$${$$}` as one escaped placeholder: only its first `$` goes."""
    assert substitute_string("$${$$}", RESOLVE) == ("${$$}", [])
    assert substitute_string("$${a$$b} $$", RESOLVE) == ("${a$$b} $", [])


@given(st.text(alphabet=st.sampled_from("${}.ab")))
def test_resolver_is_called_once_per_found_ref(text: str) -> None:
    seen: list[str] = []

    def record(parts: list[str]) -> object:
        seen.append(".".join(parts))
        return ""

    substitute_string(text, record)
    assert len(seen) == len(find_refs(text))


def test_a_ref_met_again_is_not_split_again() -> None:
    """Every workload repeats a few refs and texts; each distinct one is split once per
    process, a short text cut once."""
    resolve = placeholders.workload_resolver({"name": "a"}, {})
    placeholders._parts.cache_clear()
    placeholders._pieces.cache_clear()
    for _ in range(50):
        assert placeholders.substitute_string("x-${metadata.name}", resolve) == ("x-a", [])
    assert placeholders.substitute_string("y-${metadata.name}", resolve) == ("y-a", [])
    pieces, parts = placeholders._pieces.cache_info(), placeholders._parts.cache_info()
    assert (pieces.misses, pieces.hits) == (2, 49)
    assert (parts.misses, parts.hits) == (1, 1)


def test_a_long_text_is_cut_each_time_not_kept() -> None:
    """A file's content can be long and is met once: cut, substituted, not kept."""
    resolve = placeholders.workload_resolver({"name": "a"}, {})
    text = "line ${metadata.name} $$ $${metadata.name}\n" * 20
    placeholders._pieces.cache_clear()
    assert placeholders.substitute_string(text, resolve) == (
        "line a $ ${metadata.name}\n" * 20,
        [],
    )
    assert placeholders._pieces.cache_info().currsize == 0


def test_check_workload_reports_a_text_shared_by_containers_at_each_of_them() -> None:
    """A text checked fine once is not checked again in the workload's next container; a
    text with a problem is, so that each place is reported."""
    shared = {"GOOD": "${metadata.name}/${resources.db.host}", "BAD": "${resources.ghost.x}"}
    data = {
        "metadata": {"name": "w"},
        "containers": {name: {"image": "x", "variables": dict(shared)} for name in ("a", "b")},
        "resources": {"db": {"type": "postgres"}},
    }
    problems = check_workload(data)
    assert [(p.path, p.code) for p in problems] == [
        (("containers", "a", "variables", "BAD"), Code.PLACEHOLDER_UNKNOWN_RESOURCE),
        (("containers", "b", "variables", "BAD"), Code.PLACEHOLDER_UNKNOWN_RESOURCE),
    ]
