"""Check a YAML document against a JSON Schema and say what is wrong in words a user can act on.

jsonschema finds every violation; this module turns each into a coded diagnostic that points at
the offending key or value, names the path (``containers.web.image``), and where a name was
probably mistyped, suggests the closest known one. The schema stays the single definition of
what is valid: nothing here accepts or rejects on its own.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from functools import cache
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from pydantic import ValidationError as PydanticValidationError

from reconciler.catalogue import Code
from reconciler.diagnostics import Diagnostic
from reconciler.schemagate import Gate, compile_gate
from reconciler.yamldoc import Path, YamlDocument

PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
"""A key `format_path` writes after a dot; any other is quoted in brackets."""
_RFC1123_LABEL = "^[a-z0-9][a-z0-9-]{0,61}[a-z0-9]$"
_TYPE_NAMES = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
}


@cache
def _compiled(schema_json: str) -> tuple[Draft202012Validator, Gate | None]:
    schema = json.loads(schema_json)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema), compile_gate(schema)


_BY_IDENTITY: dict[int, tuple[Mapping[str, Any], Draft202012Validator, Gate | None]] = {}
_BY_IDENTITY_LIMIT = 64


def _compiled_for(schema: Mapping[str, Any]) -> tuple[Draft202012Validator, Gate | None]:
    """The validator and the yes/no gate (``schemagate``), built once per distinct schema.

    The loaders pass the same schema object for every file, so it is looked up by identity
    first (the entry keeps the object alive, so its id cannot be reused); another object with
    the same content still finds the validator through its JSON text.
    """
    found = _BY_IDENTITY.get(id(schema))
    if found is not None and found[0] is schema:
        return found[1], found[2]
    validator, gate = _compiled(json.dumps(schema, sort_keys=True))
    if len(_BY_IDENTITY) >= _BY_IDENTITY_LIMIT:
        _BY_IDENTITY.clear()
    _BY_IDENTITY[id(schema)] = (schema, validator, gate)
    return validator, gate


def validator_for(schema: Mapping[str, Any]) -> Draft202012Validator:
    """A compiled validator, built once per distinct schema."""
    return _compiled_for(schema)[0]


def format_path(path: Sequence[str | int]) -> str:
    """``containers.web.files["/etc/app.conf"]``: dotted where keys are plain, quoted otherwise."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif PLAIN_KEY.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part)}]"
    return out or "(document)"


def did_you_mean(word: str, known: Sequence[str]) -> str | None:
    """The closest known word, matched case-insensitively, if any is close enough."""
    lowered = {k.lower(): k for k in known}
    close = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[close[0]] if close else None


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


class _Translator:
    """Turns jsonschema errors for one document into diagnostics."""

    def __init__(
        self,
        doc: YamlDocument,
        patterns: Mapping[str, str],
        conflicts: Mapping[frozenset[str], Code],
    ) -> None:
        self.doc = doc
        self.patterns = patterns
        self.conflicts = conflicts

    def at(
        self, code: Code, message: str, path: Path, *, on_key: bool = False, **kw: Any
    ) -> Diagnostic:
        return self.doc.diagnostic(
            code, f"{format_path(path)}: {message}", path, on_key=on_key, **kw
        )

    def translate(self, error: ValidationError) -> Iterator[Diagnostic]:
        path: Path = tuple(error.absolute_path)
        if "propertyNames" in error.relative_schema_path and isinstance(error.instance, str):
            # A bad key: jsonschema reports it with the key as the instance, at the mapping.
            yield from self._bad_key(error, (*path, error.instance))
            return
        handler = getattr(self, f"_on_{error.validator}", None)
        if handler is not None:
            yield from handler(error, path)
        else:
            yield self.at(Code.SCHEMA_VIOLATION, error.message, path)

    # -- one method per JSON Schema keyword ------------------------------------------------------

    def _on_additionalProperties(self, error: ValidationError, path: Path) -> Iterator[Diagnostic]:
        known = sorted(error.schema.get("properties", {}))
        for key in sorted(set(error.instance) - set(known)):
            guess = did_you_mean(key, known)
            hint = f"did you mean '{guess}'?" if guess else None
            if hint is None and known:
                hint = "known fields: " + ", ".join(known)
            if key == "target":
                hint = (
                    "'target' belongs to the deprecated list form; in a map the key is the target"
                )
            yield self.at(
                Code.UNKNOWN_FIELD, f"unknown field '{key}'", (*path, key), on_key=True, hint=hint
            )

    def _on_required(self, error: ValidationError, path: Path) -> Iterator[Diagnostic]:
        for key in error.validator_value:
            if isinstance(error.instance, dict) and key not in error.instance:
                yield self.at(
                    Code.MISSING_FIELD, f"missing required field '{key}'", path, on_key=True
                )

    def _on_type(self, error: ValidationError, path: Path) -> Iterator[Diagnostic]:
        expected = error.validator_value
        names = [expected] if isinstance(expected, str) else list(expected)
        wanted = " or ".join(_TYPE_NAMES.get(n, n) for n in names)
        got = _TYPE_NAMES.get(_json_type(error.instance), "a value")
        hint = None
        if (
            "string" in names
            and isinstance(error.instance, int | float)
            and not isinstance(error.instance, bool)
        ):
            hint = f'quote the value to make it a string: "{self._source_text(path)}"'
        shown = (
            ""
            if error.instance is None or isinstance(error.instance, dict | list)
            else (f" ({_describe(error.instance)})")
        )
        yield self.at(
            Code.WRONG_TYPE,
            f"expected {wanted}, got {got}{shown}",
            path,
            hint=hint,
        )

    def _source_text(self, path: Path) -> str:
        value = _walk(self.doc.data, path)
        return str(value)

    def _on_pattern(self, error: ValidationError, path: Path) -> Iterator[Diagnostic]:
        if path == ("apiVersion",):
            yield self.at(
                Code.UNSUPPORTED_API_VERSION,
                f"unsupported apiVersion {_describe(error.instance)}",
                path,
            )
            return
        what = self.patterns.get(error.validator_value)
        if error.validator_value == _RFC1123_LABEL:
            yield self.at(
                Code.INVALID_NAME, f"{_describe(error.instance)} is not an RFC 1123 label", path
            )
            return
        message = (
            f"{_describe(error.instance)} is not {what}"
            if what
            else (f"{_describe(error.instance)} does not match the pattern {error.validator_value}")
        )
        yield self.at(Code.INVALID_FORMAT, message, path)

    def _on_const(self, error: ValidationError, path: Path) -> Iterator[Diagnostic]:
        code = Code.UNSUPPORTED_API_VERSION if path == ("apiVersion",) else Code.NOT_ALLOWED_VALUE
        expected = _describe(error.validator_value)
        message = f"{_describe(error.instance)} is not allowed; expected {expected}"
        yield self.at(code, message, path)

    def _on_enum(self, error: ValidationError, path: Path) -> Iterator[Diagnostic]:
        allowed = [str(v) for v in error.validator_value]
        guess = (
            did_you_mean(str(error.instance), allowed) if isinstance(error.instance, str) else None
        )
        hint = (
            f"did you mean '{guess}'? allowed: {', '.join(allowed)}"
            if guess
            else "allowed: " + ", ".join(allowed)
        )
        yield self.at(
            Code.NOT_ALLOWED_VALUE,
            f"{_describe(error.instance)} is not one of the allowed values",
            path,
            hint=hint,
        )

    def _bound(self, error: ValidationError, path: Path, relation: str) -> Iterator[Diagnostic]:
        yield self.at(
            Code.OUT_OF_RANGE,
            f"{_describe(error.instance)} {relation} {error.validator_value}",
            path,
        )

    def _on_minimum(self, error: ValidationError, path: Path) -> Iterator[Diagnostic]:
        yield from self._bound(error, path, "is less than the minimum")

    def _on_maximum(self, error: ValidationError, path: Path) -> Iterator[Diagnostic]:
        yield from self._bound(error, path, "is greater than the maximum")

    def _on_minLength(self, error: ValidationError, path: Path) -> Iterator[Diagnostic]:
        yield from self._length(error, path, "shorter than", "character")

    def _on_maxLength(self, error: ValidationError, path: Path) -> Iterator[Diagnostic]:
        yield from self._length(error, path, "longer than", "character")

    def _on_minProperties(self, error: ValidationError, path: Path) -> Iterator[Diagnostic]:
        n = error.validator_value
        yield self.at(Code.OUT_OF_RANGE, f"needs at least {n} entr{'y' if n == 1 else 'ies'}", path)

    def _on_minItems(self, error: ValidationError, path: Path) -> Iterator[Diagnostic]:
        yield self.at(Code.OUT_OF_RANGE, f"needs at least {error.validator_value} items", path)

    def _length(
        self, error: ValidationError, path: Path, relation: str, unit: str
    ) -> Iterator[Diagnostic]:
        n = error.validator_value
        code = Code.INVALID_NAME if self._is_name(error) else Code.OUT_OF_RANGE
        yield self.at(
            code,
            f"{_describe(error.instance)} is {relation} {n} {unit}{'' if n == 1 else 's'}",
            path,
        )

    @staticmethod
    def _is_name(error: ValidationError) -> bool:
        return bool(error.schema.get("pattern") == _RFC1123_LABEL)

    def _bad_key(self, error: ValidationError, key_path: Path) -> Iterator[Diagnostic]:
        name = _describe(error.instance)
        if (
            error.validator == "pattern" and error.validator_value == _RFC1123_LABEL
        ) or self._is_name(error):
            yield self.at(
                Code.INVALID_NAME, f"name {name} is not an RFC 1123 label", key_path, on_key=True
            )
            return
        yield self.at(
            Code.INVALID_FORMAT,
            f"key {name} is {self._pattern_words(error)}",
            key_path,
            on_key=True,
        )

    def _pattern_words(self, sub: ValidationError) -> str:
        if sub.validator == "pattern":
            what = self.patterns.get(sub.validator_value)
            return f"not {what}" if what else f"not matching {sub.validator_value}"
        if sub.validator == "minLength":
            return f"shorter than {sub.validator_value} characters"
        if sub.validator == "maxLength":
            return f"longer than {sub.validator_value} characters"
        return "not allowed"

    def _on_not(self, error: ValidationError, path: Path) -> Iterator[Diagnostic]:
        value = error.validator_value
        forbidden = list(value.get("required", [])) if isinstance(value, dict) else []
        if len(forbidden) > 1:
            # "not all of these together": keys that exclude each other.
            names = " and ".join(f"'{k}'" for k in forbidden)
            code = self.conflicts.get(frozenset(forbidden), Code.SCHEMA_VIOLATION)
            message = f"gives both {names}; give only one"
            yield self.at(code, message, (*path, forbidden[-1]), on_key=True)
            return
        if forbidden and isinstance(error.instance, dict):
            key = forbidden[0]
            yield self.at(
                Code.UNKNOWN_FIELD,
                f"unknown field '{key}'",
                (*path, key),
                on_key=True,
                hint=f"'{key}' belongs to the deprecated list form; a map's key is the {key}",
            )
            return
        yield self.at(Code.SCHEMA_VIOLATION, error.message, path)

    def _on_oneOf(self, error: ValidationError, path: Path) -> Iterator[Diagnostic]:
        yield from self._alternatives(error, path, exactly=True)

    def _on_anyOf(self, error: ValidationError, path: Path) -> Iterator[Diagnostic]:
        yield from self._alternatives(error, path, exactly=False)

    def _alternatives(
        self, error: ValidationError, path: Path, *, exactly: bool
    ) -> Iterator[Diagnostic]:
        branches: list[dict[str, Any]] = list(error.validator_value)
        required_only = [list(b["required"]) for b in branches if set(b) == {"required"}]
        if len(required_only) == len(branches) and isinstance(error.instance, dict):
            keys = [k for names in required_only for k in names]
            yield self._choice(error, path, keys, exactly=exactly)
            return
        # Alternatives by type (a deprecated list form or a map): explain the branch whose type
        # fits the value, as the user plainly meant that one.
        fitting = self._fitting_branch(error)
        if fitting is not None:
            for sub in fitting:
                yield from self.translate(sub)
            return
        kinds = sorted({str(b["type"]) for b in branches if isinstance(b.get("type"), str)})
        if kinds:
            wanted = " or ".join(_TYPE_NAMES.get(k, k) for k in kinds)
            got = _TYPE_NAMES.get(_json_type(error.instance), "a value")
            yield self.at(Code.WRONG_TYPE, f"expected {wanted}, got {got}", path)
            return
        yield self.at(Code.SCHEMA_VIOLATION, error.message, path)

    def _choice(
        self, error: ValidationError, path: Path, keys: list[str], *, exactly: bool
    ) -> Diagnostic:
        present = [k for k in keys if k in error.instance]
        names = ", ".join(f"'{k}'" for k in keys)
        if "content" in keys and "source" in keys:
            code = Code.FILE_CONTENT_CHOICE
        elif "httpGet" in keys:
            code = Code.PROBE_WITHOUT_HANDLER
        else:
            code = Code.SCHEMA_VIOLATION
        if present:
            given = " and ".join(f"'{k}'" for k in present)
            return self.at(
                code,
                f"gives {given}; give exactly one of {names}",
                (*path, present[-1]),
                on_key=True,
            )
        wanted = "exactly one" if exactly else "at least one"
        return self.at(code, f"needs {wanted} of {names}", path, on_key=True)

    @staticmethod
    def _fitting_branch(error: ValidationError) -> list[ValidationError] | None:
        groups: dict[int, list[ValidationError]] = {}
        for sub in error.context or []:
            groups.setdefault(int(sub.relative_schema_path[0]), []).append(sub)
        fitting = [
            subs
            for subs in groups.values()
            if not any(s.validator == "type" and not s.relative_path for s in subs)
        ]
        return fitting[0] if len(fitting) == 1 else None


def _walk(data: Any, path: Path) -> Any:
    for part in path:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def check(
    doc: YamlDocument,
    schema: Mapping[str, Any],
    patterns: Mapping[str, str] | None = None,
    conflicts: Mapping[frozenset[str], Code] | None = None,
) -> list[Diagnostic]:
    """Every schema violation in ``doc``, as positioned diagnostics.

    ``patterns`` maps regular expressions used in the schema to words for users ("a CPU
    quantity such as 500m or 2"), so that messages never show a raw regex when a name exists;
    ``conflicts`` gives the code for keys that exclude each other.
    """
    validator, gate = _compiled_for(schema)
    if gate is not None and gate(doc.data):
        return []  # valid: nothing to explain, and the gate is many times faster
    translator = _Translator(doc, patterns or {}, conflicts or {})
    errors = _without_redundant_lengths(validator.iter_errors(doc.data))
    return [d for error in errors for d in translator.translate(error)]


def _without_redundant_lengths(errors: Iterable[ValidationError]) -> list[ValidationError]:
    """Drop length errors where the same value also misses its pattern: one problem, one message.

    The Score schema bounds names both by pattern and by length; the pattern's words already say
    how long a name may be.
    """
    errors = list(errors)

    def where(e: ValidationError) -> tuple[object, ...]:
        key = (e.instance,) if "propertyNames" in e.relative_schema_path else ()
        return (*e.absolute_path, *key)

    patterned = {where(e) for e in errors if e.validator == "pattern"}
    kept = [
        e
        for e in errors
        if not (e.validator in {"minLength", "maxLength"} and where(e) in patterned)
    ]
    return sorted(kept, key=lambda e: [str(p) for p in where(e)])


def model_errors(
    doc: YamlDocument,
    exc: PydanticValidationError,
    codes: Mapping[str, Code] | None = None,
) -> list[Diagnostic]:
    """Diagnostics for what a pydantic model refused after the schema passed.

    The models add cross-field rules the schema cannot state; ``codes`` maps a rule's error type
    to its catalogue code. Errors get positions the same way as schema errors do.
    """
    out = []
    for err in exc.errors():
        path: Path = tuple(p for p in err["loc"] if isinstance(p, str | int))
        message = str(err["msg"]).removeprefix("Value error, ")
        code = (codes or {}).get(err["type"], Code.SCHEMA_VIOLATION)
        prefix = f"{format_path(path)}: " if path else ""
        out.append(doc.diagnostic(code, prefix + message, path))
    return out
