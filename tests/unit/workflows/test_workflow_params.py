"""Typed parameters: ``--param k=v`` strings parsed to each type, with coded errors."""

from __future__ import annotations

import pytest

from reconciler.config.models import Duration
from reconciler.workflows import Workflow, load_workflow, parse_assignments, resolve

TEXT = b"""\
name: typed
params:
  url:      {type: string, required: true, pattern: "^https?://"}
  retries:  {type: int, default: 3, min: 0, max: 10}
  verbose:  {type: bool, default: false}
  timeout:  {type: duration, default: 30s, min: 1s, max: 5m}
  tier:     {type: enum, values: [gold, silver], default: silver}
steps:
  - id: s
    type: wait
    duration: 1s
"""


@pytest.fixture
def workflow() -> Workflow:
    loaded, problems = load_workflow(TEXT, "typed.yaml")
    assert loaded is not None, problems
    return loaded


def test_defaults_fill_what_is_not_given(workflow: Workflow) -> None:
    values, problems = resolve(workflow, {"url": "https://shop"})
    assert problems == []
    assert values == {
        "url": "https://shop",
        "retries": 3,
        "verbose": False,
        "timeout": Duration.parse("30s"),
        "tier": "silver",
    }


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("retries", "7", 7),
        ("retries", " 0 ", 0),
        ("verbose", "true", True),
        ("verbose", "No", False),
        ("verbose", "1", True),
        ("timeout", "1m30s", Duration.parse("90s")),
        ("tier", "gold", "gold"),
        ("url", "http://x?a=b=c", "http://x?a=b=c"),
    ],
)
def test_strings_are_parsed_to_each_type(
    workflow: Workflow, name: str, text: str, expected: object
) -> None:
    given = {"url": "https://shop", name: text}
    values, problems = resolve(workflow, given)
    assert problems == []
    assert values[name] == expected
    assert type(values[name]) is type(expected)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("retries", "three", "param 'retries': 'three' is not an integer"),
        ("retries", "11", "param 'retries': 11 is greater than the maximum 10"),
        ("retries", "-1", "param 'retries': -1 is less than the minimum 0"),
        ("verbose", "maybe", "param 'verbose': 'maybe' is not a boolean (true or false)"),
        ("timeout", "10", "param 'timeout': invalid duration '10': write a number and a unit"),
        ("timeout", "10m", "param 'timeout': 10m is greater than the maximum 5m"),
        ("tier", "gld", "param 'tier': 'gld' is not one of gold, silver; did you mean 'gold'?"),
        ("url", "ftp://x", "param 'url': 'ftp://x' does not match the pattern ^https?://"),
    ],
)
def test_bad_values_are_coded_errors(
    workflow: Workflow, name: str, text: str, message: str
) -> None:
    _, problems = resolve(workflow, {"url": "https://shop", name: text})
    (problem,) = problems
    assert problem.code.id == "RCN-3053"
    assert problem.message.startswith(message)


def test_unknown_and_missing_params_are_all_reported(workflow: Workflow) -> None:
    _, problems = resolve(workflow, {"retires": "2", "zzz": "1"})
    found = [(p.code.id, p.message, p.hint) for p in problems]
    assert found == [
        ("RCN-3051", "unknown param 'retires'", "did you mean 'retries'?"),
        ("RCN-3051", "unknown param 'zzz'", "known params: retries, tier, timeout, url, verbose"),
        (
            "RCN-3052",
            "param 'url' is required by workflow 'typed'",
            "Give it with --param url=VALUE.",
        ),
    ]


def test_assignments_split_at_the_first_equals_sign() -> None:
    given, problems = parse_assignments(["url=http://x?a=b", "empty=", "novalue", "=x"])
    assert given == {"url": "http://x?a=b", "empty": ""}
    assert [p.message for p in problems] == [
        "--param 'novalue': write NAME=VALUE",
        "--param '=x': write NAME=VALUE",
    ]
