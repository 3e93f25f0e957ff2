"""``schemagate`` answers exactly as jsonschema's ``is_valid`` does, or declines to answer.

The Score schema's agreement is fuzzed in ``tests/conformance/test_score_schema.py``; here are the
corners where JSON Schema differs from Python's notion of a type, the configuration schema, and
the keywords the gate does not implement (then ``schemacheck.check`` uses jsonschema alone).
"""

from __future__ import annotations

from typing import Any

import pytest
from jsonschema import Draft202012Validator

from reconciler.config.loader import config_schema
from reconciler.schemacheck import check
from reconciler.schemagate import compile_gate
from reconciler.yamldoc import load_yaml

CORNERS: list[tuple[dict[str, Any], list[Any]]] = [
    ({"type": "integer"}, [1, 1.0, 1.5, True, False, "1", None, -3]),
    ({"type": "number"}, [1, 1.5, True, "1", None]),
    ({"type": ["string", "null"]}, ["a", None, 0, False]),
    ({"enum": ["a", "b"]}, ["a", "c", 1, None, ["a"]]),
    ({"const": "v1"}, ["v1", "v2", 1]),
    ({"pattern": "^a+$"}, ["aa", "ab", "aa\n", 5, None]),
    ({"pattern": "b"}, ["abc", "a"]),
    ({"minLength": 2, "maxLength": 3}, ["a", "ab", "abcd", "é" * 3, 12345]),
    ({"minimum": 1, "maximum": 2}, [0, 1, 2, 3, 1.5, True, False, "5"]),
    ({"minProperties": 1}, [{}, {"a": 1}, [], "x"]),
    ({"required": ["a"]}, [{}, {"a": None}, [], 1]),
    (
        {"properties": {"a": {"type": "string"}}, "additionalProperties": False},
        [{}, {"a": "x"}, {"a": 1}, {"b": 1}, [1]],
    ),
    (
        {"properties": {"a": {}}, "additionalProperties": {"type": "integer"}},
        [{"a": "x", "b": 1}, {"b": "x"}],
    ),
    ({"propertyNames": {"pattern": "^[a-z]+$"}}, [{"ab": 1}, {"A": 1}, {}, "A"]),
    ({"items": {"type": "string"}}, [[], ["a"], ["a", 1], {"a": 1}]),
    ({"oneOf": [{"type": "string"}, {"minLength": 2}]}, ["a", "ab", 5]),
    ({"anyOf": [{"type": "string"}, {"type": "integer"}]}, ["a", 1, 1.5, None]),
    ({"allOf": [{"type": "string"}, {"minLength": 2}]}, ["a", "ab", 1]),
    ({"not": {"required": ["a"]}}, [{"a": 1}, {}, 3]),
    (
        {
            "$defs": {"n": {"type": "object", "properties": {"c": {"$ref": "#/$defs/n"}}}},
            "$ref": "#/$defs/n",
        },
        [{}, {"c": {}}, {"c": {"c": 1}}, 1],
    ),
    (True, [1, None]),
    ({"properties": {"a": False}}, [{"a": 1}, {}]),
    # typed objects and strings are compiled into one test each: the same answers
    (
        {
            "type": "object",
            "properties": {"a": {"type": "string"}, "n": False},
            "required": ["a"],
            "additionalProperties": False,
            "minProperties": 1,
        },
        [{}, {"a": "x"}, {"a": 1}, {"a": "x", "b": 1}, {"a": "x", "n": 1}, [], "x", None, {1: "x"}],
    ),
    (
        {
            "type": "object",
            "additionalProperties": {"type": "integer"},
            "propertyNames": {"pattern": "^[a-z]+$"},
        },
        [{"ab": 1}, {"A": 1}, {"ab": "x"}, {}, "A", {1: 2}],
    ),
    (
        {
            "type": "object",
            "properties": {"a": {}},
            "oneOf": [{"required": ["a"]}, {"required": ["b"]}],
        },
        [{"a": 1}, {"b": 1}, {"a": 1, "b": 2}, {}, []],
    ),
    (
        {"type": "string", "minLength": 2, "maxLength": 3, "pattern": "^a"},
        ["a", "ab", "abcd", "ba", "é" * 3, 12, None],
    ),
    ({"type": "string", "enum": ["ab", "c"], "minLength": 2}, ["ab", "c", "x", 1]),
    ({"type": "array", "items": {"type": "string", "pattern": "b"}}, [[], ["ab"], ["a"], "ab"]),
]


@pytest.mark.parametrize(("schema", "instances"), CORNERS)
def test_the_gate_agrees_with_jsonschema(schema: Any, instances: list[Any]) -> None:
    gate = compile_gate(schema) if isinstance(schema, dict) else compile_gate({"allOf": [schema]})
    assert gate is not None
    validator = Draft202012Validator(schema)
    for instance in instances:
        assert gate(instance) == validator.is_valid(instance), instance


@pytest.mark.parametrize(
    "schema",
    [
        {"format": "email"},
        {"patternProperties": {"^a": {}}, "additionalProperties": False},
        {"enum": [1, True]},
        {"items": [{"type": "string"}]},
        {"$ref": "https://example.com/other.json"},
        {"if": {"type": "string"}, "then": {"minLength": 1}},
    ],
)
def test_what_it_does_not_implement_it_declines(schema: dict[str, Any]) -> None:
    assert compile_gate(schema) is None


CONFIGS = [
    {"apiVersion": "reconciler.score.dev/v1alpha1", "workloads": ["apps/**/score.yaml"]},
    {"apiVersion": "reconciler.score.dev/v1alpha2"},
    {"apiVersion": "reconciler.score.dev/v1alpha1", "environments": {"dev": {"branch": "main"}}},
    {"apiVersion": "reconciler.score.dev/v1alpha1", "environments": {"dev": {"branch": 3}}},
    {"apiVersion": "reconciler.score.dev/v1alpha1", "environments": {"dev": {"approval": "x"}}},
    {"apiVersion": "reconciler.score.dev/v1alpha1", "unknown": True},
    {"environments": {"dev": {"branch": "main", "ref": "refs/tags/v1"}}},
]


@pytest.mark.parametrize("config", CONFIGS)
def test_the_configuration_schema_agrees(config: dict[str, Any]) -> None:
    gate = compile_gate(config_schema())
    assert gate is not None
    assert gate(config) == Draft202012Validator(config_schema()).is_valid(config)


def test_check_still_explains_what_the_gate_rejects() -> None:
    raw = b"apiVersion: reconciler.score.dev/v1alpha1\nenvironments:\n  dev:\n    branch: 3\n"
    doc, problems = load_yaml(raw, "reconciler.yaml")
    assert doc is not None
    assert not problems
    found = check(doc, config_schema())
    assert [(d.line, d.column) for d in found] == [(4, 13)]
    assert "environments.dev.branch" in found[0].message
