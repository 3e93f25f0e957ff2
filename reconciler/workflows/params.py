"""Typed workflow parameters: parse ``--param k=v`` strings and check values against their specs.

``workflow run`` passes the strings a user typed; hooks pass values from configuration (already
typed, or strings). Either way ``resolve`` returns every parameter of the workflow with a typed
value (``str``, ``int``, ``bool`` or ``Duration``) or, collecting every problem rather than
stopping at the first, coded diagnostics: unknown name (with "did you mean"), missing required
value, bad value. The loader calls ``spec_problems`` so that a default breaking its own
parameter's rules is reported in the file, not when someone runs the workflow.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from reconciler.config.models import Duration
from reconciler.diagnostics import Diagnostic
from reconciler.schemacheck import did_you_mean
from reconciler.workflows.model import (
    INVALID_PARAM,
    MISSING_PARAM,
    UNKNOWN_PARAM,
    BoolParam,
    DurationParam,
    EnumParam,
    IntParam,
    ParamSpec,
    StringParam,
    Workflow,
)

ParamValue = str | int | bool | Duration

_Ordered = TypeVar("_Ordered", int, Duration)
_INTEGER = re.compile(r"[+-]?[0-9]+")
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


def parse_assignments(raw: Sequence[str]) -> tuple[dict[str, str], list[Diagnostic]]:
    """``["url=http://x", "n=3"]`` → ``{"url": "http://x", "n": "3"}``; the value may hold '='."""
    given: dict[str, str] = {}
    problems = []
    for text in raw:
        name, sep, value = text.partition("=")
        if not sep or not name.strip():
            problems.append(
                Diagnostic(
                    INVALID_PARAM,
                    f"--param {text!r}: write NAME=VALUE",
                    hint="Give each parameter as --param NAME=VALUE.",
                )
            )
            continue
        given[name.strip()] = value
    return given, problems


def resolve(
    workflow: Workflow, given: Mapping[str, object]
) -> tuple[dict[str, ParamValue], list[Diagnostic]]:
    """Every parameter's value: given, else its default; with every problem found."""
    problems = [_unknown(name, workflow) for name in sorted(set(given) - set(workflow.params))]
    values: dict[str, ParamValue] = {}
    for name, spec in sorted(workflow.params.items()):
        if name in given:
            try:
                values[name] = check_value(spec, given[name])
            except ValueError as exc:
                problems.append(Diagnostic(INVALID_PARAM, f"param '{name}': {exc}"))
        elif spec.default is not None:
            values[name] = spec.default
        else:
            problems.append(
                Diagnostic(
                    MISSING_PARAM,
                    f"param '{name}' is required by workflow '{workflow.name}'",
                    hint=f"Give it with --param {name}=VALUE.",
                )
            )
    return values, problems


def _unknown(name: str, workflow: Workflow) -> Diagnostic:
    known = sorted(workflow.params)
    guess = did_you_mean(name, known)
    if guess is not None:
        hint = f"did you mean '{guess}'?"
    elif known:
        hint = "known params: " + ", ".join(known)
    else:
        hint = f"workflow '{workflow.name}' takes no params"
    return Diagnostic(UNKNOWN_PARAM, f"unknown param '{name}'", hint=hint)


def check_value(spec: ParamSpec, value: object) -> ParamValue:
    """``value`` (a string to parse, or already typed) as the spec's type, within its rules.

    Raises ValueError with a message for users.
    """
    if isinstance(spec, StringParam):
        return _string(spec, value)
    if isinstance(spec, IntParam):
        return _bounded(_integer(value), spec.minimum, spec.maximum)
    if isinstance(spec, BoolParam):
        return _boolean(value)
    if isinstance(spec, DurationParam):
        return _bounded(_duration(value), spec.minimum, spec.maximum)
    return _choice(spec, value)


def _string(spec: StringParam, value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{_shown(value)} is not a string")
    if spec.pattern is not None and re.search(spec.pattern, value) is None:
        raise ValueError(f"{_shown(value)} does not match the pattern {spec.pattern}")
    return value


def _integer(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        return int(value)
    raise ValueError(f"{_shown(value)} is not an integer")


def _boolean(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"{_shown(value)} is not a boolean (true or false)")


def _duration(value: object) -> Duration:
    if isinstance(value, Duration):
        return value
    if isinstance(value, str):
        return Duration.parse(value.strip())
    raise ValueError(f"{_shown(value)} is not a duration such as 30s or 1h30m")


def _bounded(value: _Ordered, low: _Ordered | None, high: _Ordered | None) -> _Ordered:
    if low is not None and value < low:
        raise ValueError(f"{value} is less than the minimum {low}")
    if high is not None and value > high:
        raise ValueError(f"{value} is greater than the maximum {high}")
    return value


def _choice(spec: EnumParam, value: object) -> str:
    if isinstance(value, str) and value in spec.values:
        return value
    guess = did_you_mean(str(value), list(spec.values))
    suggestion = f"; did you mean '{guess}'?" if guess else ""
    raise ValueError(f"{_shown(value)} is not one of {', '.join(spec.values)}{suggestion}")


def _shown(value: object) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def spec_problems(spec: ParamSpec) -> list[tuple[tuple[str, ...], str]]:
    """Rules of one parameter that the schema cannot state, as (path in the spec, message)."""
    problems: list[tuple[tuple[str, ...], str]] = []
    if spec.required and spec.default is not None:
        problems.append(
            (("required",), "a required param cannot have a default; remove one of the two")
        )
    if isinstance(spec, StringParam) and spec.pattern is not None:
        try:
            re.compile(spec.pattern)
        except re.error as exc:
            problems.append((("pattern",), f"pattern is not a regular expression: {exc}"))
            return problems
    bounds: Any = getattr(spec, "minimum", None), getattr(spec, "maximum", None)
    if bounds[0] is not None and bounds[1] is not None and bounds[0] > bounds[1]:
        problems.append((("min",), f"min {bounds[0]} is greater than max {bounds[1]}"))
        return problems
    if spec.default is not None:
        try:
            check_value(spec, spec.default)
        except ValueError as exc:
            problems.append((("default",), f"default {exc}"))
    return problems
