"""Provisioner files: reading them strictly, and choosing the provisioner for a resource.

The format is score-k8s's (a YAML list of provisioner objects, ``template://`` or ``cmd://``),
with Jinja2 in place of Go templates and one extension, ``secret_outputs``, naming the outputs
that must never be shown or recorded in plain text. Loading is strict, as score-k8s's is: an
unknown key, a value of the wrong type or a template that does not parse is a positioned
diagnostic (``RCN-2004``), and every problem in every file is collected.

Who calls it: the planner's source stage with the repository's provisioner files in
``reconciler.yaml`` order and ``builtin_provisioner_files()`` last, so that the first match (see
``ProvisionerSet.match``) lets a repository override any built-in. Pure, except for
``builtin_provisioner_files``, which reads the files the package ships.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path as FsPath
from typing import Any, Final
from urllib.parse import urlsplit

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

import reconciler
from reconciler.catalogue import Code
from reconciler.desired.identity import ResourceUid, parse
from reconciler.diagnostics import Diagnostic
from reconciler.schemacheck import did_you_mean
from reconciler.yamldoc import Path, Positions, load_yaml_value

TEMPLATE_SCHEME: Final = "template"
CMD_SCHEME: Final = "cmd"
TEMPLATE_KEYS: Final = ("init", "state", "shared", "outputs", "manifests")
_LIST_KEYS: Final = ("supported_params", "expected_outputs", "secret_outputs")
_COMMON_KEYS: Final = ("uri", "type", "class", "id", "description", *_LIST_KEYS)
_KEYS: Final = {
    TEMPLATE_SCHEME: frozenset((*_COMMON_KEYS, *TEMPLATE_KEYS)),
    CMD_SCHEME: frozenset((*_COMMON_KEYS, "args")),
}
_TYPE_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,61}[A-Za-z0-9]")
_BUILTIN_FOLDER: Final = "providers"
_PACKAGE_DIR: Final = FsPath(reconciler.__file__).resolve().parent


@dataclass(frozen=True, slots=True)
class Provisioner:
    """One provisioner as declared; ``file``, ``line`` and ``column`` say where."""

    uri: str
    type: str
    class_: str | None = None
    id: str | None = None
    description: str = ""
    supported_params: tuple[str, ...] = ()
    expected_outputs: tuple[str, ...] = ()
    secret_outputs: tuple[str, ...] = ()
    templates: Mapping[str, str] = field(default_factory=dict)
    args: tuple[str, ...] = ()
    file: str = ""
    line: int = 0
    column: int = 0

    @property
    def scheme(self) -> str:
        return urlsplit(self.uri).scheme

    def matches(self, uid: ResourceUid) -> bool:
        """score-go's rule: the type must equal; class and id only where the provisioner sets
        them, so a provisioner without them serves every class and id of its type."""
        return (
            self.type == uid.type
            and (self.class_ is None or self.class_ == uid.class_)
            and (self.id is None or self.id == uid.id)
        )

    template_lines: tuple[tuple[str, int], ...] = ()

    def template_line(self, key: str) -> int:
        """The file line where template ``key``'s text starts (for template errors)."""
        return dict(self.template_lines).get(key, self.line)


@dataclass(frozen=True, slots=True)
class ProvisionerSet:
    """Provisioners in precedence order: the repository's files first, the built-ins last."""

    provisioners: tuple[Provisioner, ...] = ()
    by_type: Mapping[str, tuple[Provisioner, ...]] = field(
        init=False, repr=False, compare=False, hash=False
    )
    """The provisioners of each type, in precedence order: a match looks only at those of its
    type (a plan matches every resource; the built-ins alone are a score of provisioners)."""

    def __post_init__(self) -> None:
        by_type: dict[str, list[Provisioner]] = {}
        for provisioner in self.provisioners:
            by_type.setdefault(provisioner.type, []).append(provisioner)
        indexed = {kind: tuple(found) for kind, found in by_type.items()}
        object.__setattr__(self, "by_type", indexed)  # frozen: set once, here

    def match(self, uid: ResourceUid | str) -> Provisioner | None:
        """The first provisioner that matches ``uid``, or None."""
        target = uid if isinstance(uid, ResourceUid) else parse(uid)
        return next((p for p in self.by_type.get(target.type, ()) if p.matches(target)), None)

    def __iter__(self) -> Iterator[Provisioner]:
        return iter(self.provisioners)

    def __len__(self) -> int:
        return len(self.provisioners)


def builtin_provisioner_files() -> list[tuple[str, bytes]]:
    """The shipped built-in provisioner files, sorted by name, as ``(path, bytes)``.

    An installed wheel carries them in ``reconciler/_providers``; a source checkout has them in
    ``<project root>/providers``. Paths are given as ``builtin/<file>`` so that diagnostics never
    leak where the package happens to be installed. Read once per process, like the package's
    code: every plan asks for them, and listing and reading the folder was a fixed cost of
    every plan (a tenth of a resync that finds nothing to do).
    """
    return list(_builtin_files())


@cache
def _builtin_files() -> tuple[tuple[str, bytes], ...]:
    for folder in (_PACKAGE_DIR / "_providers", _PACKAGE_DIR.parent / _BUILTIN_FOLDER):
        if folder.is_dir():
            files = sorted(folder.glob("*.yaml"))
            return tuple((f"builtin/{f.name}", f.read_bytes()) for f in files)
    return ()


def load_provisioners(
    files: Sequence[tuple[str, bytes]],
) -> tuple[ProvisionerSet, list[Diagnostic]]:
    """Read provisioner files in precedence order; a file with errors contributes the entries
    that are valid, so one typo does not hide every other provisioner from the plan."""
    key = tuple((path, bytes(raw)) for path, raw in files)
    memo = _SETS.get(key)
    if memo is None:
        found: list[Provisioner] = []
        collected: list[Diagnostic] = []
        for path, raw in key:
            provisioners, file_problems = _loaded_file(path, raw)
            found.extend(provisioners)
            collected.extend(file_problems)
        memo = (ProvisionerSet(tuple(found)), tuple(collected))
        _remember(_SETS, key, memo)
    return memo[0], list(memo[1])


# Loaded files and sets, by content: a plan loads the same files as the plan before it, and
# parsing YAML and compiling templates is most of a small plan's fixed cost. The values are
# frozen, so sharing them is safe; the same files always give the same (identical) set.
_MEMO_LIMIT = 128
_FILES: dict[tuple[str, bytes], tuple[tuple[Provisioner, ...], tuple[Diagnostic, ...]]] = {}
_SETS: dict[tuple[tuple[str, bytes], ...], tuple[ProvisionerSet, tuple[Diagnostic, ...]]] = {}


def _remember(memo: dict[Any, Any], key: Any, value: Any) -> None:
    if len(memo) >= _MEMO_LIMIT:
        memo.clear()
    memo[key] = value


def _loaded_file(name: str, raw: bytes) -> tuple[tuple[Provisioner, ...], tuple[Diagnostic, ...]]:
    key = (name, raw)
    found = _FILES.get(key)
    if found is None:
        provisioners, problems = _load_file(name, raw)
        found = (tuple(provisioners), tuple(problems))
        _remember(_FILES, key, found)
    return found


# -- one file -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _File:
    name: str
    lines: tuple[str, ...]
    positions: Positions

    def at(self, path: Path, message: str, *, on_key: bool = False) -> Diagnostic:
        mark = self.positions.nearest(path, prefer_key=on_key)
        return Diagnostic(
            Code.PROVISIONER_INVALID,
            message,
            file=self.name,
            line=mark.line,
            column=mark.column,
        )

    def content_line(self, path: Path) -> int:
        """Where a string value's text begins: the line after a ``|`` or ``>`` indicator."""
        mark = self.positions.nearest(path)
        line = self.lines[mark.line - 1] if 0 < mark.line <= len(self.lines) else ""
        indicator = line[mark.column - 1 : mark.column]
        return mark.line + 1 if indicator in ("|", ">") else mark.line


def _load_file(name: str, raw: bytes) -> tuple[list[Provisioner], list[Diagnostic]]:
    data, positions, problems = _read_yaml(name, raw)
    if problems:
        return [], problems
    text = raw.decode("utf-8-sig")
    file = _File(name, tuple(text.splitlines()), positions)
    if data is None:
        return [], []
    if not isinstance(data, list):
        return [], [file.at((), "a provisioner file is a YAML list of provisioners")]
    provisioners: list[Provisioner] = []
    for index, entry in enumerate(data):
        provisioner, entry_problems = _entry(file, index, entry)
        problems.extend(entry_problems)
        if provisioner is not None:
            provisioners.append(provisioner)
    return provisioners, problems


def _read_yaml(name: str, raw: bytes) -> tuple[object, Positions, list[Diagnostic]]:
    """The file's single document, with positions; an empty file holds no provisioners."""
    data, positions, problems = load_yaml_value(raw, name)
    if [p.code for p in problems] == [Code.EMPTY_DOCUMENT]:
        return None, positions, []
    return data, positions, problems


def _entry(file: _File, index: int, entry: object) -> tuple[Provisioner | None, list[Diagnostic]]:
    where: Path = (index,)
    if not isinstance(entry, dict):
        return None, [file.at(where, f"[{index}]: a provisioner is a mapping of keys to values")]
    problems: list[Diagnostic] = []
    uri = _string(file, entry, where, "uri", problems, required=True)
    type_ = _string(file, entry, where, "type", problems, required=True)
    scheme = _check_uri(file, where, uri, problems) if uri is not None else None
    if type_ is not None and not _TYPE_PATTERN.fullmatch(type_):
        problems.append(
            file.at((*where, "type"), f"[{index}].type: '{type_}' is not a resource type")
        )
    allowed = _KEYS.get(scheme or "", _KEYS[TEMPLATE_SCHEME] | _KEYS[CMD_SCHEME])
    for key in sorted(set(entry) - allowed):
        problems.append(
            file.at((*where, key), _unknown_key(index, key, allowed, scheme), on_key=True)
        )
    lists = {key: _strings(file, entry, where, key, problems) for key in (*_LIST_KEYS, "args")}
    templates = {
        key: text
        for key in TEMPLATE_KEYS
        if (text := _string(file, entry, where, key, problems)) is not None
    }
    lines = tuple((key, file.content_line((*where, key))) for key in sorted(templates))
    for key, text in sorted(templates.items()):
        problems.extend(_check_template(file, where, key, text, dict(lines)[key]))
    problems.extend(_check_secret_outputs(file, where, lists))
    if uri is None or type_ is None or problems:
        return None, problems
    mark = file.positions.nearest(where)
    provisioner = Provisioner(
        uri=uri,
        type=type_,
        class_=_string(file, entry, where, "class", problems),
        id=_string(file, entry, where, "id", problems),
        description=_string(file, entry, where, "description", problems) or "",
        supported_params=lists["supported_params"],
        expected_outputs=lists["expected_outputs"],
        secret_outputs=lists["secret_outputs"],
        templates=templates,
        args=lists["args"],
        file=file.name,
        line=mark.line,
        column=mark.column,
        template_lines=lines,
    )
    return (provisioner, []) if not problems else (None, problems)


def _unknown_key(index: int, key: str, allowed: frozenset[str], scheme: str | None) -> str:
    message = f"[{index}].{key}: unknown key"
    if scheme == CMD_SCHEME and key in TEMPLATE_KEYS:
        return f"{message}; '{key}' is for template:// provisioners (a cmd:// one prints it)"
    guess = did_you_mean(key, sorted(allowed))
    return f"{message}; did you mean '{guess}'?" if guess else message


def _string(
    file: _File,
    entry: Mapping[str, Any],
    where: Path,
    key: str,
    problems: list[Diagnostic],
    *,
    required: bool = False,
) -> str | None:
    label = f"[{where[0]}].{key}"
    if key not in entry:
        if required:
            problems.append(file.at(where, f"[{where[0]}]: missing required key '{key}'"))
        return None
    value = entry[key]
    if not isinstance(value, str) or (required and not value):
        problems.append(file.at((*where, key), f"{label}: must be a non-empty string"))
        return None
    return value


def _strings(
    file: _File, entry: Mapping[str, Any], where: Path, key: str, problems: list[Diagnostic]
) -> tuple[str, ...]:
    value = entry.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problems.append(file.at((*where, key), f"[{where[0]}].{key}: must be a list of strings"))
        return ()
    return tuple(value)


def _check_uri(file: _File, where: Path, uri: str, problems: list[Diagnostic]) -> str | None:
    parts = urlsplit(uri)
    at = (*where, "uri")
    label = f"[{where[0]}].uri"
    if parts.scheme not in (TEMPLATE_SCHEME, CMD_SCHEME) or not uri.startswith(
        f"{parts.scheme}://"
    ):
        problems.append(file.at(at, f"{label}: '{uri}' must start with template:// or cmd://"))
        return None
    if parts.scheme == CMD_SCHEME:
        problem = _cmd_uri_problem(uri)
        if problem:
            problems.append(file.at(at, f"{label}: {problem}"))
    return parts.scheme


def _cmd_uri_problem(uri: str) -> str | None:
    """score-k8s's rules for ``cmd://``: a program on PATH, or a relative, home or absolute
    path; no user, port or query, which would mean nothing for a local program."""
    parts = urlsplit(uri)
    if parts.username or parts.password or parts.port or parts.query or parts.fragment:
        return f"'{uri}': a cmd:// uri takes no user, port, query or fragment"
    host = parts.netloc
    if host in ("", ".", "..", "~"):
        return None if parts.path else f"'{uri}': names no program"
    if parts.path:
        return f"'{uri}': a program looked up on PATH takes no path after it"
    return None


def _check_template(file: _File, where: Path, key: str, text: str, start: int) -> list[Diagnostic]:
    try:
        jinja_environment().parse(text)
    except jinja2.TemplateSyntaxError as exc:
        line = start + (exc.lineno or 1) - 1
        return [
            Diagnostic(
                Code.PROVISIONER_INVALID,
                f"[{where[0]}].{key}: template syntax error: {exc.message}",
                file=file.name,
                line=line,
                column=1,
            )
        ]
    return []


def _check_secret_outputs(
    file: _File, where: Path, lists: Mapping[str, tuple[str, ...]]
) -> list[Diagnostic]:
    expected = lists["expected_outputs"]
    if not expected:
        return []
    return [
        file.at(
            (*where, "secret_outputs", i),
            f"[{where[0]}].secret_outputs: '{key}' is not one of the expected_outputs",
        )
        for i, key in enumerate(lists["secret_outputs"])
        if key not in expected
    ]


# -- the template environment ----------------------------------------------------------------------


@cache
def jinja_environment() -> jinja2.Environment:
    """The one sandboxed environment every provisioner template is parsed and run in.

    Immutable sandbox: templates may read the data they are given but neither change it nor
    reach Python internals. Strict undefined: a misspelt name is an error, not an empty string.
    """
    environment = ImmutableSandboxedEnvironment(
        undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True
    )
    environment.policies["json.dumps_function"] = _json_dumps
    return environment


_SORTED_JSON: Final = json.JSONEncoder(sort_keys=True)
"""What ``json.dumps(value, sort_keys=True)`` builds for every call, made once (``encode``
keeps nothing between calls, so renders on several threads share it)."""


def _json_dumps(value: object, **options: Any) -> str:
    """``json.dumps`` for the ``tojson`` filter, which passes Jinja's ``json.dumps_kwargs``
    (``sort_keys=True``): with those, through an encoder made once. Templates call ``tojson``
    for most values they render (about seven per resource), and ``json.dumps`` with an option
    builds a new ``JSONEncoder`` each time, which cost more than encoding a short value. The
    same text either way; other options (``tojson(indent=2)``) go to ``json.dumps``."""
    if options == _SORT_KEYS:
        return _SORTED_JSON.encode(value)
    return json.dumps(value, **options)


_SORT_KEYS: Final = {"sort_keys": True}
