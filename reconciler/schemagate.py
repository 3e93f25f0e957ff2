"""A yes/no JSON Schema check compiled into Python closures: the fast path of ``schemacheck``.

Almost every file the reconciler reads is valid, and for a valid file jsonschema's
``iter_errors`` still walks every keyword through its generic dispatch: in a full plan that was
about a fifth of the time, more than half of what parsing the same files costs. ``compile_gate``
turns a schema into one predicate that answers only "valid or not"; ``schemacheck.check`` asks
it first and runs jsonschema (which explains each problem) only when the answer is no. So the
diagnostics are jsonschema's, unchanged, and the gate can only make a valid file faster.
A Score file goes further: ``score.loader`` types it first, and the models accept exactly
what the Score schema accepts, so only a file they refuse reaches ``schemacheck.check``; the
gate's valid answers now come from ``reconciler.yaml`` and workflow files.

The gate implements the keywords the project's schemas use, with jsonschema's Draft 2020-12
semantics (a bool is not an integer, ``pattern`` searches, keywords for one type ignore other
types). A schema using anything else (or an ``enum`` of non-strings, where equality gets subtle)
does not compile: ``compile_gate`` returns None and the caller uses jsonschema alone. The tests
compare the gate with jsonschema on the conformance corpus and on generated documents.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

Gate = Callable[[Any], bool]

_ANNOTATIONS = frozenset(
    {"$schema", "$id", "$defs", "$comment", "title", "description", "default", "deprecated"}
    | {"examples", "readOnly", "writeOnly"}
)


class _Unsupported(Exception):
    """The schema uses a keyword (or a form of one) the gate does not implement."""


def compile_gate(schema: Mapping[str, Any]) -> Gate | None:
    """A predicate equal to ``Draft202012Validator(schema).is_valid``, or None when the schema
    uses something the gate does not implement."""
    try:
        return _Compiler(schema).compile(schema)
    except _Unsupported:
        return None


def _is_integer(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": _is_integer,
    "number": _is_number,
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


class _Compiler:
    """Compiles one schema document; ``$ref``s into its ``$defs`` are compiled once each."""

    def __init__(self, root: Mapping[str, Any]) -> None:
        self._root = root
        self._refs: dict[str, Gate] = {}
        self._compiling: dict[str, list[Gate]] = {}
        """Definitions being compiled: a reference met inside its own goes through a cell."""

    def compile(self, schema: Any) -> Gate:
        if schema is True:
            return lambda _: True
        if schema is False:
            return lambda _: False
        if not isinstance(schema, Mapping):
            raise _Unsupported(repr(schema))
        keywords = {k: v for k, v in schema.items() if k not in _ANNOTATIONS}
        for keyword in keywords:
            if keyword not in _KEYWORDS:
                raise _Unsupported(keyword)
        checks: list[Gate] = []
        fused: frozenset[str] = frozenset()
        if keywords.get("type") == "object" and not _OBJECT_KEYWORDS.isdisjoint(keywords):
            checks.append(self._object(keywords))
            fused = _OBJECT_KEYWORDS | {"type"}
        elif keywords.get("type") == "string" and not _STRING_KEYWORDS.isdisjoint(keywords):
            checks.append(_string(keywords))
            fused = _STRING_KEYWORDS | {"type"}
        for keyword, value in keywords.items():
            if keyword not in fused:
                checks.append(_KEYWORDS[keyword](self, value, schema))
        return _all(checks)

    def _object(self, keywords: Mapping[str, Any]) -> Gate:
        """``type: object`` with its object keywords as one loop over the object's items: a
        Score document is mostly such objects, and one pass costs a fraction of a closure and
        a generator per keyword (the same answers: each keyword is a test of every item)."""
        properties = {
            name: self.compile(sub) for name, sub in keywords.get("properties", {}).items()
        }
        required = tuple(keywords.get("required", ()))
        least = keywords.get("minProperties", 0)
        extra = keywords.get("additionalProperties", True)
        others = None if extra is True or extra is False else self.compile(extra)
        closed = extra is False
        names = self.compile(keywords["propertyNames"]) if "propertyNames" in keywords else None

        def check(v: Any) -> bool:
            if not isinstance(v, dict) or len(v) < least:
                return False
            for name in required:
                if name not in v:
                    return False
            for key, item in v.items():
                gate = properties.get(key)
                if gate is not None:
                    if not gate(item):
                        return False
                elif closed or (others is not None and not others(item)):
                    return False
                if names is not None and not names(key):
                    return False
            return True

        return check

    def ref(self, target: Any) -> Gate:
        if not isinstance(target, str) or not target.startswith("#/$defs/"):
            raise _Unsupported(f"$ref {target!r}")
        found = self._refs.get(target)
        if found is not None:
            return found
        pending = self._compiling.get(target)
        if pending is not None:  # a recursive definition sees itself, through its cell
            return _later(pending)
        name = target.removeprefix("#/$defs/")
        definitions = self._root.get("$defs", {})
        if name not in definitions:
            raise _Unsupported(f"$ref {target!r}")
        cell = self._compiling[target] = []
        gate = self.compile(definitions[name])
        cell.append(gate)
        del self._compiling[target]
        self._refs[target] = gate  # the others call it directly
        return gate


def _later(cell: list[Gate]) -> Gate:
    """The gate that ``cell`` will hold once its definition is compiled."""

    def later(value: Any) -> bool:  # cell[0] does not exist yet: looked up on each call
        return cell[0](value)

    return later


_OBJECT_KEYWORDS = frozenset(
    {"properties", "additionalProperties", "required", "propertyNames", "minProperties"}
)
_STRING_KEYWORDS = frozenset({"pattern", "minLength", "maxLength"})


def _string(keywords: Mapping[str, Any]) -> Gate:
    """``type: string`` with its length and pattern as one test."""
    shortest = keywords.get("minLength", 0)
    longest = keywords.get("maxLength")
    search = re.compile(keywords["pattern"]).search if "pattern" in keywords else None

    def check(v: Any) -> bool:
        if not isinstance(v, str):
            return False
        if len(v) < shortest or (longest is not None and len(v) > longest):
            return False
        return search is None or search(v) is not None

    return check


def _all(checks: list[Gate]) -> Gate:
    if not checks:
        return lambda _: True
    if len(checks) == 1:
        return checks[0]
    if len(checks) == 2:
        first, second = checks
        return lambda v: first(v) and second(v)

    def every(v: Any) -> bool:  # a loop: all() would build a generator per value checked
        for check in checks:  # noqa: SIM110
            if not check(v):
                return False
        return True

    return every


# -- keywords: each takes (compiler, its value, the whole schema) and returns a gate ------------


def _type(_: _Compiler, value: Any, __: Mapping[str, Any]) -> Gate:
    names = [value] if isinstance(value, str) else list(value)
    if any(n not in _TYPES for n in names):
        raise _Unsupported(f"type {value!r}")
    tests = [_TYPES[n] for n in names]
    if len(tests) == 1:
        return tests[0]
    return lambda v: any(t(v) for t in tests)


def _strings(value: Any, keyword: str) -> frozenset[str]:
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(v, str) for v in values):
        raise _Unsupported(keyword)
    return frozenset(values)


def _enum(_: _Compiler, value: Any, __: Mapping[str, Any]) -> Gate:
    allowed = _strings(value, "enum")
    return lambda v: isinstance(v, str) and v in allowed


def _const(_: _Compiler, value: Any, __: Mapping[str, Any]) -> Gate:
    (allowed,) = _strings(value, "const")
    return lambda v: isinstance(v, str) and v == allowed


def _pattern(_: _Compiler, value: Any, __: Mapping[str, Any]) -> Gate:
    search = re.compile(value).search
    return lambda v: not isinstance(v, str) or search(v) is not None


def _min_length(_: _Compiler, value: Any, __: Mapping[str, Any]) -> Gate:
    return lambda v: not isinstance(v, str) or len(v) >= value


def _max_length(_: _Compiler, value: Any, __: Mapping[str, Any]) -> Gate:
    return lambda v: not isinstance(v, str) or len(v) <= value


def _minimum(_: _Compiler, value: Any, __: Mapping[str, Any]) -> Gate:
    return lambda v: not _is_number(v) or v >= value


def _maximum(_: _Compiler, value: Any, __: Mapping[str, Any]) -> Gate:
    return lambda v: not _is_number(v) or v <= value


def _min_properties(_: _Compiler, value: Any, __: Mapping[str, Any]) -> Gate:
    return lambda v: not isinstance(v, dict) or len(v) >= value


def _required(_: _Compiler, value: Any, __: Mapping[str, Any]) -> Gate:
    names = tuple(value)
    return lambda v: not isinstance(v, dict) or all(n in v for n in names)


def _properties(compiler: _Compiler, value: Any, _: Mapping[str, Any]) -> Gate:
    gates = {name: compiler.compile(sub) for name, sub in value.items()}

    def check(v: Any) -> bool:
        if not isinstance(v, dict):
            return True
        return all(gate(v[name]) for name, gate in gates.items() if name in v)

    return check


def _additional_properties(compiler: _Compiler, value: Any, schema: Mapping[str, Any]) -> Gate:
    if "patternProperties" in schema:
        raise _Unsupported("patternProperties")
    known = frozenset(schema.get("properties", {}))
    gate = compiler.compile(value)
    if value is False:
        return lambda v: not isinstance(v, dict) or known.issuperset(v)
    return lambda v: (
        not isinstance(v, dict) or all(gate(item) for key, item in v.items() if key not in known)
    )


def _property_names(compiler: _Compiler, value: Any, _: Mapping[str, Any]) -> Gate:
    gate = compiler.compile(value)
    return lambda v: not isinstance(v, dict) or all(gate(key) for key in v)


def _items(compiler: _Compiler, value: Any, schema: Mapping[str, Any]) -> Gate:
    if "prefixItems" in schema or isinstance(value, list):
        raise _Unsupported("items as a list, or prefixItems")
    gate = compiler.compile(value)

    def check(v: Any) -> bool:
        if isinstance(v, list):
            for item in v:
                if not gate(item):
                    return False
        return True

    return check


def _one_of(compiler: _Compiler, value: Any, _: Mapping[str, Any]) -> Gate:
    gates = [compiler.compile(sub) for sub in value]
    return lambda v: sum(1 for gate in gates if gate(v)) == 1


def _any_of(compiler: _Compiler, value: Any, _: Mapping[str, Any]) -> Gate:
    gates = [compiler.compile(sub) for sub in value]
    return lambda v: any(gate(v) for gate in gates)


def _all_of(compiler: _Compiler, value: Any, _: Mapping[str, Any]) -> Gate:
    return _all([compiler.compile(sub) for sub in value])


def _not(compiler: _Compiler, value: Any, _: Mapping[str, Any]) -> Gate:
    gate = compiler.compile(value)
    return lambda v: not gate(v)


def _ref(compiler: _Compiler, value: Any, _: Mapping[str, Any]) -> Gate:
    return compiler.ref(value)


_KEYWORDS: dict[str, Callable[[_Compiler, Any, Mapping[str, Any]], Gate]] = {
    "type": _type,
    "enum": _enum,
    "const": _const,
    "pattern": _pattern,
    "minLength": _min_length,
    "maxLength": _max_length,
    "minimum": _minimum,
    "maximum": _maximum,
    "minProperties": _min_properties,
    "required": _required,
    "properties": _properties,
    "additionalProperties": _additional_properties,
    "propertyNames": _property_names,
    "items": _items,
    "oneOf": _one_of,
    "anyOf": _any_of,
    "allOf": _all_of,
    "not": _not,
    "$ref": _ref,
}
