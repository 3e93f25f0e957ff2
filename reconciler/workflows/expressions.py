"""Templated strings and ``if:`` / ``for_each:`` expressions of workflow steps, in a sandbox.

Workflow files come from the watched repository, so their templates are untrusted: they run in
the same immutable Jinja2 sandbox as provisioner templates, with strict undefined (a misspelt
``params.ulr`` is an error, not an empty string). The loader calls ``syntax_error`` on every
templated field; ``run`` and ``steps`` call ``render``, ``render_value`` and ``evaluate`` with
the context built by ``context``: ``params``, ``steps.<id>.outputs`` / ``.status``, ``env`` (the
environment name, or none) and, in a ``for_each`` step, ``item``.

A string that is exactly one ``{{ expression }}`` evaluates to the expression's native value
(``{{ params.retries }}`` is the integer, ``{{ ['a', 'b'] }}`` the list); anything else renders
to a string. That is what lets ``for_each`` produce a list and ``if`` a real boolean.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from functools import cache
from typing import Any

import jinja2

from reconciler.desired.provisioners import jinja_environment

_WHOLE = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\{\{|\}\}).)*)\}\}\s*$", re.DOTALL)
_FALSE_WORDS = frozenset({"", "false", "0", "no", "off", "none"})


class TemplateError(Exception):
    """A template failed to render: an undefined name, a type error, a sandbox refusal."""


@cache
def _environment() -> jinja2.Environment:
    return jinja_environment()


def is_expression(text: str) -> bool:
    """Whether ``text`` is exactly one ``{{ expression }}`` (evaluated to a native value)."""
    return _WHOLE.match(text) is not None


def syntax_error(text: str) -> tuple[int, str] | None:
    """The 1-based line (within ``text``) and message of a syntax error, or None."""
    try:
        match = _WHOLE.match(text)
        if match is not None:
            _environment().compile_expression(match["expr"])
        else:
            _environment().parse(text)
    except jinja2.TemplateSyntaxError as exc:
        return exc.lineno or 1, exc.message or "syntax error"
    return None


def render(text: str, context: Mapping[str, Any]) -> str:
    """``text`` rendered to a string."""
    try:
        return _environment().from_string(text).render(context)
    except Exception as exc:
        raise TemplateError(_describe(exc, text)) from exc


def evaluate(value: object, context: Mapping[str, Any]) -> Any:
    """A native value: one whole ``{{ expression }}`` is evaluated, other strings rendered,
    and non-strings (a YAML list, a boolean) returned as they are."""
    if not isinstance(value, str):
        return value
    match = _WHOLE.match(value)
    if match is None:
        return render(value, context)
    try:
        result = _environment().compile_expression(match["expr"], undefined_to_none=False)(
            **context
        )
        if isinstance(result, jinja2.Undefined):
            str(result)  # a strict undefined raises here, naming what was missing
    except Exception as exc:
        raise TemplateError(_describe(exc, value)) from exc
    return result


def render_value(value: Any, context: Mapping[str, Any]) -> Any:
    """Every string inside a JSON-like value rendered (keys too); other scalars unchanged."""
    if isinstance(value, str):
        return render(value, context)
    if isinstance(value, Mapping):
        return {render(str(k), context): render_value(v, context) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [render_value(v, context) for v in value]
    return value


def truthy(value: object) -> bool:
    """What ``if:`` means by true. A rendered string ``"False"`` (from ``{{ x }} and more``)
    is false, as users expect, and so are ``no``, ``off``, ``0`` and the empty string."""
    if isinstance(value, str):
        return value.strip().lower() not in _FALSE_WORDS
    return bool(value)


class Names:
    """A read-only namespace where ``a.b`` always means the entry ``b``: Jinja tries attributes
    first, so on a dict (or any ``Mapping``) ``steps.get`` or ``params.items`` would find
    methods. Hence no ``Mapping`` base: it would bring ``get``, ``keys``, ``items`` back."""

    __slots__ = ("_entries",)

    def __init__(self, entries: Mapping[str, Any]) -> None:
        self._entries = dict(entries)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._entries[name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, key: str) -> Any:
        return self._entries[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __repr__(self) -> str:
        return repr(self._entries)


def context(
    params: Mapping[str, Any],
    steps: Mapping[str, Mapping[str, Any]],
    environment: str | None,
    item: Any = None,
    *,
    has_item: bool = False,
) -> dict[str, Any]:
    """The names templates see; ``item`` only inside a ``for_each`` expansion."""
    names: dict[str, Any] = {
        "params": Names(params),
        "steps": Names({sid: Names(entry) for sid, entry in steps.items()}),
        "env": environment,
    }
    if has_item:
        names["item"] = item
    return names


def _describe(exc: Exception, text: str) -> str:
    shown = text if len(text) <= 60 else text[:57] + "..."
    detail = str(exc).strip() or type(exc).__name__
    return f"template {shown!r}: {detail}"
