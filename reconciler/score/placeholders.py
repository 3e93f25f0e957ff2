"""Score placeholders: ``${metadata.name}``, ``${resources.db.host}``, ``$$`` and ``$${x}``.

The rules are those of score-go's ``framework/substitution.go`` (as score-k8s applies them), so a
Score file means the same thing here as under the reference tools. ``desired/`` resolves
placeholders once resource outputs are known, ``plan/`` renders them with outputs still unknown
(``KNOWN_AFTER_APPLY``), and ``reconciler validate`` calls ``check_workload`` before any planning.
Pure: no I/O, no clock.

Where this module departs from score-go, on purpose:

- A placeholder that fails is left as written in the result (score-go drops it): the result is
  unusable either way, and the problems say why; keeping the text makes previews readable.
- Problems are values carrying a code and the path of the offending string, collected from every
  string rather than stopping at the first failing one.
"""

from __future__ import annotations

import base64
import datetime
import difflib
import enum
import functools
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final, Protocol, TypeAlias

from reconciler.catalogue import Code

__all__ = [
    "KNOWN_AFTER_APPLY",
    "KnownAfterApply",
    "LookupFailure",
    "PlaceholderProblem",
    "Resolver",
    "Substituted",
    "check_text",
    "check_workload",
    "find_refs",
    "render_value",
    "split_ref",
    "substitute",
    "substitute_string",
    "workload_resolver",
]

# Group 1 is everything after the first `$`; group 2 is the ref inside `${...}`. Leftmost-first
# alternation makes `$$` win over a lone `$`, exactly as Go's RE2 does for the same pattern.
_PLACEHOLDER: Final = re.compile(r"\$((?:\$?\{([^}]*)\})|\$)")

_ESCAPED_DOT: Final = "\\."
_NUL: Final = "\x00"

_UNKNOWN_ROOT: Final = "unknown reference root, use $$ to escape the substitution"


class KnownAfterApply(enum.Enum):
    """A value that only exists once the resource has been applied.

    An enum member rather than a bare ``object()`` so that ``is`` checks narrow the type for mypy
    and so that it survives copying and pickling as the same singleton.
    """

    KNOWN_AFTER_APPLY = "(known after apply)"

    def __str__(self) -> str:
        return self.value


KNOWN_AFTER_APPLY: Final = KnownAfterApply.KNOWN_AFTER_APPLY

Substituted: TypeAlias = str | KnownAfterApply
PathElement: TypeAlias = str | int
Path: TypeAlias = tuple[PathElement, ...]


@dataclass(frozen=True, slots=True)
class PlaceholderProblem:
    """One placeholder that cannot be resolved, at the path of the string that holds it."""

    path: Path
    code: Code
    message: str
    hint: str | None = None

    @property
    def location(self) -> str:
        return ".".join(str(element) for element in self.path)

    def __str__(self) -> str:
        return f"{self.location}: {self.message}" if self.path else self.message


class LookupFailure(Exception):
    """Raised by a resolver; the substituter turns it into a problem naming the placeholder."""

    def __init__(self, code: Code, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.hint = hint


class Resolver(Protocol):
    """Turns the parts of a ref into a value, or raises ``LookupFailure``."""

    def __call__(self, parts: list[str], /) -> object: ...


def split_ref(ref: str) -> list[str]:
    """Split a ref on dots; ``\\.`` stands for a dot inside a key (``key\\.com/x``)."""
    hidden = ref.replace(_ESCAPED_DOT, _NUL)
    return [part.replace(_NUL, ".") for part in hidden.split(".")]


@functools.lru_cache(maxsize=4096)
def _parts(ref: str) -> tuple[str, ...]:
    """``split_ref``, once per distinct ref: a repository repeats a few refs in every workload
    (``metadata.name``, ``resources.db.host``)."""
    return tuple(split_ref(ref))


def find_refs(text: str) -> list[str]:
    """The refs of the real placeholders in ``text``, in order; escaped ones are not refs."""
    return [m.group(2) for m in _PLACEHOLDER.finditer(text) if not m.group(1).startswith("$")]


def substitute_string(
    text: str, resolve: Resolver, path: Path = ()
) -> tuple[Substituted, list[PlaceholderProblem]]:
    """Replace every placeholder in ``text``; one unknown value makes the whole string unknown."""
    if "$" not in text:  # most strings: nothing to replace, no match object to build
        return text, []
    pieces: list[str] = []
    problems: list[PlaceholderProblem] = []
    pending = False
    for piece in _pieces(text) if len(text) <= _CUT_KEPT else _cut(text):
        if isinstance(piece, str):
            pieces.append(piece)
            continue
        written, ref, parts = piece
        try:
            rendered = render_value(resolve(list(parts)))
        except LookupFailure as failure:
            problems.append(
                PlaceholderProblem(
                    path, failure.code, f"invalid ref '{ref}': {failure.message}", failure.hint
                )
            )
            pieces.append(written)
            continue
        if rendered is KNOWN_AFTER_APPLY:
            pending = True
        else:
            pieces.append(rendered)
    return (KNOWN_AFTER_APPLY if pending else "".join(pieces)), problems


_Piece: TypeAlias = str | tuple[str, str, tuple[str, ...]]
"""Literal text, or a placeholder: as written, its ref, and the ref's parts."""

_CUT_KEPT: Final = 256
"""Texts up to this length are cut once (``_pieces``): variables, mostly, which repeat from
workload to workload; a file's content is cut each time rather than kept."""


def _cut(text: str) -> tuple[_Piece, ...]:
    """``text`` as literal pieces and placeholders, in order; ``$$`` and ``$${x}`` become the
    literal text they stand for (both drop the first dollar)."""
    pieces: list[_Piece] = []
    end = 0
    for match in _PLACEHOLDER.finditer(text):
        pieces.append(text[end : match.start()])
        end = match.end()
        if match.group(1).startswith("$"):
            pieces.append(match.group(0)[1:])
        else:
            ref: str = match.group(2)
            pieces.append((match.group(0), ref, _parts(ref)))
    pieces.append(text[end:])
    return tuple(p for p in pieces if p != "")


@functools.lru_cache(maxsize=4096)
def _pieces(text: str) -> tuple[_Piece, ...]:
    """``_cut``, once per distinct short text: a repository repeats the same variables
    (``${metadata.name}``, ``postgres://${resources.db.host}``) in every workload, and the
    placeholders of each are checked when it is loaded and resolved when it is built."""
    return _cut(text)


def substitute(
    value: object, resolve: Resolver, path: Path = ()
) -> tuple[object, list[PlaceholderProblem]]:
    """Substitute in every string of a tree of maps and lists; keys and other values stay as is."""
    if isinstance(value, str):
        return substitute_string(value, resolve, path)
    problems: list[PlaceholderProblem] = []
    if isinstance(value, Mapping):
        out: dict[object, object] = {}
        for key, item in _sorted_items(value):
            out[key], found = substitute(item, resolve, (*path, _path_element(key)))
            problems.extend(found)
        return out, problems
    if isinstance(value, list | tuple):
        items: list[object] = []
        for index, item in enumerate(value):
            new_item, found = substitute(item, resolve, (*path, index))
            items.append(new_item)
            problems.extend(found)
        return items, problems
    return value, problems


def render_value(value: object) -> Substituted:
    """A resolved value as it appears in a string: strings as they are, the rest as compact JSON.

    The JSON follows Go's ``json.Marshal``, which score-go uses, byte for byte: sorted keys, no
    spaces, ``<``, ``>`` and ``&`` escaped, integral floats without a fraction.
    """
    if isinstance(value, str):
        return value
    if value is KNOWN_AFTER_APPLY:  # every resource output in a first plan: no exception
        return value
    try:
        return _go_json(value)
    except _Pending:
        return KNOWN_AFTER_APPLY


# -- resolution ---------------------------------------------------------------------------------


def workload_resolver(
    metadata: Mapping[str, object],
    outputs: Mapping[str, Mapping[str, object] | None],
    uids: Mapping[str, str] | None = None,
) -> Resolver:
    """The resolver for one workload.

    ``outputs`` maps each declared resource name to its outputs, or to None while they are not
    known yet (any key then resolves to ``KNOWN_AFTER_APPLY``). With ``uids`` (volume sources),
    ``${resources.NAME}`` alone resolves to the resource's UID, as score-k8s does.
    """

    def resolve(parts: list[str], /) -> object:
        root, rest = parts[0], parts[1:]
        if root == "metadata":
            if not rest:
                raise LookupFailure(
                    Code.PLACEHOLDER_NEEDS_KEY, "requires at least a metadata key to lookup"
                )
            return _walk(metadata, rest, null_is_missing=False)
        if root == "resources":
            return _resolve_resource(outputs, uids, rest)
        raise LookupFailure(Code.PLACEHOLDER_UNKNOWN_ROOT, _UNKNOWN_ROOT)

    return resolve


def _resolve_resource(
    outputs: Mapping[str, Mapping[str, object] | None],
    uids: Mapping[str, str] | None,
    rest: list[str],
) -> object:
    if not rest:
        raise LookupFailure(
            Code.PLACEHOLDER_NEEDS_KEY, "requires at least a resource name to lookup"
        )
    name, keys = rest[0], rest[1:]
    if uids is not None and not keys:
        if name in uids:
            return uids[name]
        raise _unknown_resource(name, uids)
    if name not in outputs:
        raise _unknown_resource(name, outputs)
    if not keys:
        raise LookupFailure(Code.PLACEHOLDER_NEEDS_KEY, "at least one lookup key is required")
    resource_outputs = outputs[name]
    if resource_outputs is None:
        return KNOWN_AFTER_APPLY
    return _walk(resource_outputs, keys, null_is_missing=True)


def _unknown_resource(name: str, known: Iterable[str]) -> LookupFailure:
    message = f"no known resource '{name}'"
    return LookupFailure(Code.PLACEHOLDER_UNKNOWN_RESOURCE, message, _suggest(name, known))


def _walk(root: object, keys: Iterable[str], *, null_is_missing: bool) -> object:
    """Follow ``keys`` through nested maps.

    score-go reports a null met on the way as a missing key when walking resource outputs but as
    a non-map when walking metadata; ``null_is_missing`` keeps that difference.
    """
    value = root
    for key in keys:
        if value is KNOWN_AFTER_APPLY:
            return value
        if value is None and null_is_missing:
            raise _missing_key(key, ())
        if not isinstance(value, Mapping):
            raise LookupFailure(
                Code.PLACEHOLDER_NOT_A_MAP, f"cannot lookup key '{key}', context is not a map"
            )
        if key not in value:
            raise _missing_key(key, (str(k) for k in value))
        value = value[key]
    return value


def _missing_key(key: str, known: Iterable[str]) -> LookupFailure:
    return LookupFailure(
        Code.PLACEHOLDER_MISSING_KEY, f"key '{key}' not found", _suggest(key, known)
    )


def _suggest(word: str, known: Iterable[str]) -> str | None:
    """A "did you mean" hint when a known name is close to the one written."""
    close = difflib.get_close_matches(word, sorted(known), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None


# -- checking a workload document ---------------------------------------------------------------


def check_workload(data: Mapping[str, object]) -> list[PlaceholderProblem]:
    """Every placeholder problem in a workload document, before anything is planned.

    Metadata refs are resolved fully; resource refs are checked for a declared name and, outside
    volume sources, for at least one output key (the output keys themselves are unknown until
    provisioning). Parts of the wrong type are skipped: the schema
    pass reports those. ``command`` and ``args`` are never substituted (nor by score-k8s or
    score-compose), so they are not checked.
    """
    resources = _as_mapping(data.get("resources"))
    resolve, resolve_source = _checking_resolvers(
        _as_mapping(data.get("metadata")), (str(name) for name in resources)
    )
    problems: list[PlaceholderProblem] = []
    fine: set[str] = set()
    for name, container in _sorted_items(_as_mapping(data.get("containers"))):
        where: Path = ("containers", _path_element(name))
        problems.extend(
            _check_container(_as_mapping(container), where, resolve, resolve_source, fine)
        )
    for name, resource in _sorted_items(resources):
        spec = _as_mapping(resource)
        if "params" in spec:
            where = ("resources", _path_element(name), "params")
            problems.extend(substitute(spec["params"], resolve, where)[1])
    return problems


def check_text(
    text: str, metadata: Mapping[str, object], resources: Iterable[str], path: Path = ()
) -> list[PlaceholderProblem]:
    """The problems of one text expanded like ``content`` (a file's ``source``, read elsewhere)."""
    resolve, _ = _checking_resolvers(metadata, resources)
    return substitute_string(text, resolve, path)[1]


def _checking_resolvers(
    metadata: Mapping[Any, object], resources: Iterable[str]
) -> tuple[Resolver, Resolver]:
    """Resolvers for checking: every declared resource has outputs that are not known yet."""
    names = sorted(resources)
    unknown: dict[str, Mapping[str, object] | None] = dict.fromkeys(names)
    known_metadata = {str(k): v for k, v in metadata.items()}
    return (
        workload_resolver(known_metadata, unknown),
        workload_resolver(known_metadata, unknown, uids={name: name for name in names}),
    )


def _check_container(
    container: Mapping[object, object],
    where: Path,
    resolve: Resolver,
    resolve_source: Resolver,
    fine: set[str],
) -> list[PlaceholderProblem]:
    """The problems of one container's texts. ``fine`` holds the variables' texts this
    workload checked already and found none in: a workload's containers often share
    variables, and a text checks the same wherever it is in one workload."""
    problems: list[PlaceholderProblem] = []
    for key, value in _sorted_items(_as_mapping(container.get("variables"))):
        if isinstance(value, str) and "$" in value and value not in fine:  # no "$", no problem
            path = (*where, "variables", _path_element(key))
            found = substitute_string(value, resolve, path)[1]
            if found:
                problems.extend(found)
            else:
                fine.add(value)
    for key, file in _entries(container.get("files")):
        spec = _as_mapping(file)
        content = spec.get("content")
        if isinstance(content, str) and spec.get("noExpand") is not True:
            path = (*where, "files", key, "content")
            problems.extend(substitute_string(content, resolve, path)[1])
    for key, volume in _entries(container.get("volumes")):
        source = _as_mapping(volume).get("source")
        if isinstance(source, str):
            path = (*where, "volumes", key, "source")
            problems.extend(substitute_string(source, resolve_source, path)[1])
    return problems


def _entries(collection: object) -> list[tuple[PathElement, object]]:
    """Files and volumes: the map form keyed by target, or the deprecated list form by index."""
    if isinstance(collection, Mapping):
        return [(_path_element(k), v) for k, v in _sorted_items(collection)]
    if isinstance(collection, list):
        return list(enumerate(collection))
    return []


def _as_mapping(value: object) -> Mapping[object, object]:
    return value if isinstance(value, Mapping) else {}


def _sorted_items(mapping: Mapping[object, object]) -> list[tuple[object, object]]:
    # Keys from YAML may mix types (`1: x`); sorting on the text keeps the order total.
    return sorted(mapping.items(), key=lambda item: str(item[0]))


def _path_element(key: object) -> PathElement:
    return key if isinstance(key, str | int) and not isinstance(key, bool) else str(key)


# -- JSON as Go's json.Marshal writes it ----------------------------------------------------------


class _Pending(Exception):
    """Unwinds the encoder when a value inside the tree is not known yet."""


_GO_HTML_ESCAPES: Final = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


def _go_json(value: object) -> str:
    if value is KNOWN_AFTER_APPLY:
        raise _Pending
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _go_float(value)
    if isinstance(value, str):
        return _go_string(value)
    if isinstance(value, Mapping):
        members = sorted((str(k), v) for k, v in value.items())
        return "{" + ",".join(f"{_go_string(k)}:{_go_json(v)}" for k, v in members) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_go_json(item) for item in value) + "]"
    if isinstance(value, bytes):
        return _go_string(base64.b64encode(value).decode("ascii"))
    if isinstance(value, datetime.date):
        return _go_string(value.isoformat())
    return _go_string(str(value))


def _go_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False).translate(_GO_HTML_ESCAPES)


def _go_float(number: float) -> str:
    """Go writes floats plainly from 1e-6 to 1e21, and ``1e-7`` (not ``1e-07``) outside that."""
    if math.isnan(number) or math.isinf(number):
        # Go refuses these; a string keeps the result readable instead of failing the plan.
        return _go_string(repr(number))
    if number == 0:
        return "-0" if math.copysign(1.0, number) < 0 else "0"
    if 1e-6 <= abs(number) < 1e21:
        return format(Decimal(repr(number)), "f").removesuffix(".0")
    text = repr(number)
    mantissa, _, exponent = text.partition("e")
    sign, digits = exponent[0], exponent[1:].lstrip("0")
    return f"{mantissa}e{sign}{digits}"
