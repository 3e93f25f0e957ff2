"""Read one YAML document into plain data, remembering where every key and value stood.

Every file the reconciler reads from a repository (Score files, ``reconciler.yaml``, provisioners,
policies) comes through here, so that each later complaint can point at a line and column. The
document is composed into ruamel.yaml's node graph and then built into plain JSON-like values
(dict, list, str, int, float, bool, None) by our own walk, which lets us:

- record a 1-based position for each key and each value, addressed by its path from the root;
- refuse what would hurt a daemon: files over a size limit, deep nesting, alias expansion that
  grows without bound ("billion laughs"), duplicate keys, complex keys;
- turn every failure into a diagnostic rather than an exception.

Nothing here raises for bad input. It does no I/O: callers pass the bytes.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, cast

from ruamel.yaml import YAML
from ruamel.yaml.constructor import SafeConstructor
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import (
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.resolver import VersionedResolver

from reconciler.catalogue import Code
from reconciler.diagnostics import Diagnostic

Path = tuple[str | int, ...]

DEFAULT_MAX_BYTES = 1024 * 1024
"""Score files are small; Kubernetes caps an object at 1 MiB, and so do we for one file."""

MAX_DEPTH = 64
"""Deeper than any real Score or configuration file, shallow enough for recursion."""

MAX_NODES = 200_000
"""Upper bound on values built, counting every alias expansion: stops "billion laughs"."""

_JSON_SCALARS = (str, int, float, bool, type(None))

HAVE_LIBYAML = importlib.util.find_spec("_ruamel_yaml") is not None
"""ruamel.yaml.clib's extension module; absent on platforms without its wheels."""


@dataclass(frozen=True, slots=True)
class Mark:
    line: int
    column: int


@dataclass(frozen=True, slots=True)
class Positions:
    """1-based positions of keys and values, addressed by path from the document root."""

    keys: Mapping[Path, Mark] = field(default_factory=dict)
    values: Mapping[Path, Mark] = field(default_factory=dict)

    def key(self, path: Path) -> Mark | None:
        return self.keys.get(path)

    def value(self, path: Path) -> Mark | None:
        return self.values.get(path)

    def nearest(self, path: Path, *, prefer_key: bool = False) -> Mark:
        """The position of ``path``, or of its deepest ancestor that has one.

        A schema error about a missing key names a path that does not exist in the file; pointing
        at the mapping that should hold it is the most useful place.
        """
        probe = path
        while True:
            found = (self.keys.get(probe) if prefer_key else None) or self.values.get(probe)
            if found is None and not prefer_key:
                found = self.keys.get(probe)
            if found is not None:
                return found
            if not probe:
                return Mark(1, 1)
            probe = probe[:-1]


class DeferredPositions:
    """The positions of a document kept as the bytes it was read from, derived on demand.

    A document's positions take ten times the memory of its data (a path tuple and a mark per
    key and value) but are needed only to place a diagnostic. What is kept for later (the
    planner's per-workload state, over thousands of workloads) holds these instead: the bytes,
    parsed again on the rare diagnostic. The same bytes give the same positions.
    """

    __slots__ = ("_file", "_raw")

    def __init__(self, raw: bytes, file: str) -> None:
        self._raw = raw
        self._file = file

    @property
    def raw(self) -> bytes:
        """The bytes the document was read from."""
        return self._raw

    def _derived(self) -> Positions:
        _, positions, _ = load_yaml_value(self._raw, self._file)
        return positions

    @property
    def keys(self) -> Mapping[Path, Mark]:
        return self._derived().keys

    @property
    def values(self) -> Mapping[Path, Mark]:
        return self._derived().values

    def key(self, path: Path) -> Mark | None:
        return self._derived().key(path)

    def value(self, path: Path) -> Mark | None:
        return self._derived().value(path)

    def nearest(self, path: Path, *, prefer_key: bool = False) -> Mark:
        return self._derived().nearest(path, prefer_key=prefer_key)


_NO_DATA: dict[str, Any] = {}
"""The data of every placer (``YamlDocument.placer``): read-only, one per process."""


@dataclass(frozen=True, slots=True)
class YamlDocument:
    file: str
    data: dict[str, Any]
    positions: Positions | DeferredPositions

    def deferred(self, raw: bytes) -> YamlDocument:
        """This document holding ``raw`` (the bytes it was read from) instead of its positions:
        what to keep once the checks that need positions on every file have run."""
        return YamlDocument(self.file, self.data, DeferredPositions(raw, self.file))

    def placer(self) -> YamlDocument:
        """This document without its data: what places diagnostics in it, for what outlives
        the workload it was loaded for (the planner's declarations, over thousands of them).
        A document without data is its own placer (a loaded workload keeps one)."""
        if not self.data:
            return self
        return YamlDocument(self.file, _NO_DATA, self.positions)

    def diagnostic(
        self, code: Code, message: str, path: Path = (), *, on_key: bool = False, **kw: Any
    ) -> Diagnostic:
        """A diagnostic anchored at ``path`` (its key when ``on_key``) in this document."""
        mark = self.positions.nearest(path, prefer_key=on_key)
        return Diagnostic(code, message, file=self.file, line=mark.line, column=mark.column, **kw)


class _Refused(Exception):
    """Internal: the document is valid YAML but not something we build."""

    def __init__(self, code: Code, message: str, node: Node) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.mark = _mark(node)


def _mark(node: Node) -> Mark:
    return Mark(node.start_mark.line + 1, node.start_mark.column + 1)


class _Builder:
    """Builds plain values from composed nodes, counting alias expansions as it goes."""

    def __init__(self, constructor: Any) -> None:
        self._constructor = constructor
        self.keys: dict[Path, Mark] = {}
        self.values: dict[Path, Mark] = {}
        self._built = 0

    def build(self, node: Node, path: Path) -> Any:
        self._built += 1
        if self._built > MAX_NODES:
            raise _Refused(
                Code.YAML_TOO_COMPLEX, f"document expands to more than {MAX_NODES} values", node
            )
        if len(path) > MAX_DEPTH:
            raise _Refused(
                Code.YAML_TOO_COMPLEX, f"document is nested deeper than {MAX_DEPTH} levels", node
            )
        self.values.setdefault(path, _mark(node))
        if isinstance(node, MappingNode):
            return self._mapping(node, path)
        if isinstance(node, SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        return self._scalar(node)

    def _mapping(self, node: MappingNode, path: Path) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise _Refused(
                    Code.UNSUPPORTED_KEY, "merge keys ('<<') are not supported", key_node
                )
            if not isinstance(key_node, ScalarNode):
                raise _Refused(
                    Code.UNSUPPORTED_KEY, "a mapping key must be a plain value", key_node
                )
            # The key as written: `80:` names a port "80", not the integer 80.
            key = str(key_node.value)
            if key in result:
                first = self.keys[(*path, key)]
                raise _Refused(
                    Code.DUPLICATE_KEY,
                    f"duplicate key '{key}' (first defined at line {first.line})",
                    key_node,
                )
            self.keys[(*path, key)] = _mark(key_node)
            if (
                isinstance(value_node, ScalarNode)
                and value_node.value == ""
                and not value_node.style
            ):
                # `image:` with nothing after it: the empty value "starts" on the next line,
                # which would point a user at the wrong key.
                self.values[(*path, key)] = _mark(key_node)
            result[key] = self.build(value_node, (*path, key))
        return result

    def _scalar(self, node: Node) -> Any:
        value = self._constructor.construct_object(node, deep=True)
        # Timestamps, binary and other YAML types are not JSON values: keep the text as written.
        return value if isinstance(value, _JSON_SCALARS) else str(node.value)


def _decode(raw: bytes, file: str) -> tuple[str | None, list[Diagnostic]]:
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8"), []
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        message = f"byte 0x{raw[exc.start]:02x} at offset {exc.start} is not valid UTF-8"
        return None, [
            Diagnostic(Code.INVALID_ENCODING, message, file=file, line=line, column=column)
        ]


def _yaml_error(exc: Exception, file: str, text: str | None = None) -> Diagnostic:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if isinstance(exc, MarkedYAMLError):
        parts = [p for p in (exc.context, exc.problem) if p]
        message = "; ".join(parts) or str(exc)
    else:
        text = str(exc).strip()
        message = text.splitlines()[0] if text else type(exc).__name__
    line = mark.line + 1 if mark is not None else None
    column = mark.column + 1 if mark is not None else None
    if text is not None and line is not None:
        line, column = _within(text, line, column or 1)
    return Diagnostic(Code.YAML_SYNTAX, message, file=file, line=line, column=column)


def _within(text: str, line: int, column: int) -> tuple[int, int]:
    """A position inside the file: an error "at the end of the stream" points at the last
    character written, not at a line after it that an editor cannot show."""
    lines = text.splitlines() or [""]
    if line <= len(lines):
        return line, column
    return len(lines), len(lines[-1]) + 1


_YAML_1_2: Final = (1, 2)


def _libyaml_loader_class() -> type | None:
    """The class of ``_libyaml_loader``, or None without ruamel.yaml.clib."""
    if not HAVE_LIBYAML:
        return None
    from _ruamel_yaml import CParser  # type: ignore[import-not-found]  # noqa: PLC0415

    class LibyamlLoader(CParser, SafeConstructor, VersionedResolver):  # type: ignore[misc]
        """libyaml's parser with ruamel.yaml's safe constructor and YAML 1.2 resolver: what
        ``YAML(typ="safe").load`` puts together, built once instead of for every text.

        ruamel.yaml defines such a class anew for each load and fills a fresh table of
        resolver rules for it; and its resolver looks for the document's YAML version, for
        every scalar, by raising and catching two AttributeErrors. With libyaml's parser that
        version is always 1.2 (a ``%YAML`` directive does not reach ruamel's resolver), so it
        is fixed here and the rules are shared, read-only, by every instance.
        """

        _rules: Final[dict[Any, Any]] = {}

        def __init__(self, text: str) -> None:
            CParser.__init__(self, text)
            self._parser = self._composer = self
            SafeConstructor.__init__(self, loader=self)
            self.allow_duplicate_keys = False
            VersionedResolver.__init__(self, version=_YAML_1_2, loadumper=self)
            self._version_implicit_resolver = self._rules

        @property
        def processing_version(self) -> Any:
            return _YAML_1_2

    rules = LibyamlLoader("")
    rules._version_implicit_resolver = {}
    LibyamlLoader._rules.update({_YAML_1_2: rules.versioned_resolver})
    rules.dispose()
    # ruamel's ``resolve`` adds the rules for any first character to the list it got for the
    # value's first character, in place: harmless only while there are none, as in YAML 1.2.
    assert None not in LibyamlLoader._rules[_YAML_1_2]
    return LibyamlLoader


_LibyamlLoader = _libyaml_loader_class()


def _libyaml_loader(text: str) -> Any:
    """A loader of ``text`` through libyaml (callers ``dispose()`` it); one per text, so it is
    safe from any thread."""
    assert _LibyamlLoader is not None
    return _LibyamlLoader(text)


def nests_deeper_than(text: str, limit: int) -> bool:
    """Whether collections nest deeper than ``limit``, read from libyaml's event stream.

    libyaml's parser is a state machine with its own stack, so reading events is safe at any
    depth; only composing nodes from them recurses. A syntax error is left to the reader.
    """
    depth = 0
    parser = _libyaml_loader(text)
    try:
        while parser.check_event():
            event = parser.get_event()
            if isinstance(event, MappingStartEvent | SequenceStartEvent):
                depth += 1
                if depth > limit:
                    return True
            elif isinstance(event, MappingEndEvent | SequenceEndEvent):
                depth -= 1
    except YAMLError:
        return False  # composing reports the syntax error with its position
    finally:
        _release(parser)
    return False


def load_libyaml(text: str) -> Any:
    """The one document in ``text`` as plain values (``YAML(typ="safe").load``), through
    libyaml. Only for texts that ``nests_deeper_than`` finds shallow: libyaml composes nodes
    by recursion in C, which a deep enough text would take past the end of the stack."""
    loader = _libyaml_loader(text)
    try:
        return loader.get_single_data()
    finally:
        _release(loader)


def _release(loader: Any) -> None:
    """Dispose of a loader no one reads from again, and break its references to itself.

    The loader is its own parser, composer, and its constructor's and resolver's loader: a
    reference cycle, with its last event and their marks, that only the cyclic collector
    frees. Templates render a text per stage for every resource, and a plan reads every Score
    file twice (``nests_deeper_than``, ``_compose``): thousands of cycles per run, each counting
    towards the next collection. A loader ``_compose`` returns is its documents' constructor,
    and holds every node it constructed: released once they are built (``load_yaml_value``)."""
    loader.dispose()
    vars(loader).clear()


def _compose(text: str, file: str) -> tuple[list[Node], Any, list[Diagnostic]]:
    """The text's documents and a constructor for their scalars.

    libyaml (ruamel.yaml.clib, about 8 times faster) unless the text nests deeply: libyaml
    composes nodes recursively in C, and tens of thousands of nested collections (``[[[`` or
    ``- - -``) overflow the C stack and kill the process. Deep documents go to the pure-Python
    parser instead, whose ``RecursionError`` becomes a diagnostic.
    """
    try:
        if HAVE_LIBYAML and not nests_deeper_than(text, MAX_DEPTH):
            loader = _libyaml_loader(text)
            try:
                nodes = []
                while loader.check_node():
                    nodes.append(loader.get_node())
            finally:
                loader.dispose()
            return nodes, loader, []
        yaml = YAML(typ="safe", pure=True)
        return list(yaml.compose_all(text)), yaml.constructor, []
    except YAMLError as exc:
        return [], None, [_yaml_error(exc, file, text)]
    except RecursionError:
        message = "document is nested too deeply to read"
        return [], None, [Diagnostic(Code.YAML_TOO_COMPLEX, message, file=file, line=1, column=1)]


def load_yaml_value(
    raw: bytes, file: str, *, max_bytes: int = DEFAULT_MAX_BYTES
) -> tuple[Any, Positions, list[Diagnostic]]:
    """Read exactly one YAML document of any shape (a provisioner file is a list).

    Returns the value with its positions, or None with at least one diagnostic saying why.
    """
    empty = Positions()
    if len(raw) > max_bytes:
        message = f"file is {len(raw)} bytes; the limit is {max_bytes} bytes"
        return None, empty, [Diagnostic(Code.FILE_TOO_LARGE, message, file=file, line=1, column=1)]
    text, problems = _decode(raw, file)
    if text is None:
        return None, empty, problems
    nodes, constructor, problems = _compose(text, file)
    if problems:
        return None, empty, problems
    try:
        return _one_document(nodes, constructor, file)
    finally:
        if _LibyamlLoader is not None and isinstance(constructor, _LibyamlLoader):
            _release(constructor)


def _one_document(
    nodes: list[Node], constructor: Any, file: str
) -> tuple[Any, Positions, list[Diagnostic]]:
    empty = Positions()
    nodes = [n for n in nodes if n is not None]
    if not nodes:
        message = "file has no YAML document"
        return None, empty, [Diagnostic(Code.EMPTY_DOCUMENT, message, file=file, line=1, column=1)]
    if len(nodes) > 1:
        mark = _mark(nodes[1])
        message = f"file holds {len(nodes)} YAML documents; a file holds one"
        diag = Diagnostic(
            Code.MULTIPLE_DOCUMENTS, message, file=file, line=mark.line, column=mark.column
        )
        return None, empty, [diag]
    return _build(nodes[0], constructor, file)


def load_yaml(
    raw: bytes, file: str, *, max_bytes: int = DEFAULT_MAX_BYTES
) -> tuple[YamlDocument | None, list[Diagnostic]]:
    """Read exactly one YAML mapping document from ``raw``.

    Returns the document, or None with at least one diagnostic saying why there is none.
    ``file`` is how diagnostics name the file (a path relative to the repository root).
    """
    data, positions, problems = load_yaml_value(raw, file, max_bytes=max_bytes)
    if problems:
        return None, problems
    if not isinstance(data, dict):
        mark = positions.nearest(())
        kind = "a list" if isinstance(data, list) else "a single value"
        diag = Diagnostic(
            Code.NOT_A_MAPPING,
            f"document is {kind}, not a mapping",
            file=file,
            line=mark.line,
            column=mark.column,
        )
        return None, [diag]
    return YamlDocument(file, data, positions), []


def _build(root: Node, constructor: Any, file: str) -> tuple[Any, Positions, list[Diagnostic]]:
    builder = _Builder(constructor)
    empty = Positions()
    try:
        data = builder.build(root, ())
    except _Refused as exc:
        diag = Diagnostic(
            exc.code, exc.message, file=file, line=exc.mark.line, column=exc.mark.column
        )
        return None, empty, [diag]
    except (YAMLError, ValueError) as exc:  # scalar construction, e.g. an invalid !!binary
        return None, empty, [_yaml_error(exc, file)]
    except RecursionError:
        message = "document is nested too deeply to read"
        return (
            None,
            empty,
            [Diagnostic(Code.YAML_TOO_COMPLEX, message, file=file, line=1, column=1)],
        )
    return data, Positions(builder.keys, builder.values), []


class _NotPlain(Exception):
    """The text uses something ``load_plain`` leaves to the full reader."""


_STR_TAG: Final = "tag:yaml.org,2002:str"


def load_plain(text: str, max_depth: int) -> Any:
    """``load_libyaml(text)``, built straight from libyaml's events in one pass, for texts
    without anchors, aliases, explicit tags, merge keys or duplicate keys that nest at most
    ``max_depth`` deep; any other text (or a syntax error) is read by ``load_libyaml``, or by
    the pure-Python reader past ``max_depth``, so the value or the error is always theirs.

    Provisioner templates render a text per stage for every resource: checking its depth in
    one pass of events, composing nodes in another and constructing values from them through
    ruamel's generic constructor cost several times what building the values from the events
    does. Scalars are resolved and, but for strings, constructed exactly as the full reader does.
    """
    if HAVE_LIBYAML:
        try:
            return _plain_from_events(text, max_depth)
        except (_NotPlain, YAMLError):
            pass
        if not nests_deeper_than(text, max_depth):
            return load_libyaml(text)
    return YAML(typ="safe", pure=True).load(text)


def _plain_from_events(text: str, max_depth: int) -> Any:
    loader = _libyaml_loader(text)
    try:
        loader.get_event()  # the stream's start
        if not loader.check_event(DocumentStartEvent):
            return None  # an empty stream, as get_single_data reads it
        loader.get_event()
        value = _events_value(loader, max_depth)
        loader.get_event()  # the document's end
        if not loader.check_event(StreamEndEvent):
            raise _NotPlain  # a second document: the full reader says what is wrong
        return value
    finally:
        _release(loader)


def _events_value(loader: Any, max_depth: int) -> Any:
    """The value of the node whose events come next, iteratively (no recursion at any depth).
    Open collections are a stack of [container, key awaited or None]; a mapping's key is kept
    in the second slot until its value arrives.

    Events are told apart by their exact class (the parser makes no others): an alias, or
    anything unexpected, is left to the full reader. Tags are read as ``ctag``, what the
    ``tag`` property turns into text only to be compared with None."""
    stack: list[list[Any]] = []
    get_event = loader.get_event
    while True:
        event = get_event()
        kind = type(event)
        if kind is ScalarEvent:
            if event.anchor is not None or event.ctag is not None:
                raise _NotPlain
            value = _scalar(loader, event) if event.implicit[0] else event.value
        elif kind is MappingStartEvent or kind is SequenceStartEvent:
            if event.anchor is not None or event.ctag is not None or len(stack) >= max_depth:
                raise _NotPlain
            if stack and stack[-1][1] is _NO_KEY and type(stack[-1][0]) is dict:
                raise _NotPlain  # a collection as a key
            stack.append([{} if kind is MappingStartEvent else [], _NO_KEY])
            continue
        elif kind is MappingEndEvent or kind is SequenceEndEvent:
            value = stack.pop()[0]
        else:
            raise _NotPlain
        if not stack:
            return value
        top = stack[-1]
        container = top[0]
        if type(container) is list:
            container.append(value)
        elif top[1] is _NO_KEY:
            if value in container:
                raise _NotPlain  # a duplicate key: the full reader's error
            top[1] = value
        else:
            container[top[1]] = value
            top[1] = _NO_KEY


_NO_KEY: Final = object()
_PLAIN_RULES: Final[dict[str, list[tuple[str, Any]]]] = (
    {} if _LibyamlLoader is None else cast(Any, _LibyamlLoader)._rules[_YAML_1_2]
)
_MERGE_TAG: Final = "tag:yaml.org,2002:merge"
_INT_TAG: Final = "tag:yaml.org,2002:int"
_DECIMAL: Final = re.compile(r"[-+]?[0-9]+")


def _scalar(loader: Any, event: Any) -> Any:
    """The scalar's value as ruamel's composer and constructor make it: a merge key (``<<``)
    is left to them. The tag is resolved as ``VersionedResolver.resolve`` does (a quoted
    scalar is a string; a plain one takes the first rule for its first character that matches,
    else it is a string), from the YAML 1.2 rules ``_LibyamlLoader`` shares, without the
    ``Tag`` object and the rules' lookup it makes for every scalar."""
    value = event.value
    if not event.implicit[0]:
        return value
    tag = _STR_TAG
    for rule, pattern in _PLAIN_RULES.get(value[:1], ()):
        if pattern.match(value):
            tag = rule
            break
    if tag == _STR_TAG:
        return value
    if tag == _MERGE_TAG:
        raise _NotPlain
    if tag == _INT_TAG and _DECIMAL.fullmatch(value):
        return int(value)  # what ``construct_yaml_int`` makes of a decimal without ``_``
    node = ScalarNode(tag, event.value, event.start_mark, event.end_mark, style=event.style)
    return loader.construct_object(node, deep=True)
