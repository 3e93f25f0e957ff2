"""Running a ``template://`` provisioner: init → state → shared → outputs → manifests.

The order and meaning are score-k8s's: ``init`` is rendered first and visible to the rest;
``state`` replaces the resource's recorded state; ``shared`` is JSON-merge-patched (RFC 7386)
into the state all resources share; then ``outputs`` (a map) and ``manifests`` (a list of
Kubernetes objects). Each template renders YAML; an empty render means an empty map or list.

Randomness is deterministic: ``random_password(n)`` and ``random_string(n)`` draw from a stream
keyed by the caller's seed, the stage and the call's position in it, so the same seed (the driver
keeps it in the recorded state) always gives the same passwords, and a new call added to
``outputs`` does not change what ``init`` draws. Who calls it: the template driver, and tests.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Final

import jinja2
from ruamel.yaml.error import YAMLError

from reconciler.catalogue import Code
from reconciler.desired.identity import ResourceUid
from reconciler.desired.provisioners import (
    TEMPLATE_SCHEME,
    Provisioner,
    jinja_environment,
)
from reconciler.diagnostics import Diagnostic
from reconciler.yamldoc import load_plain

_PASSWORD_ALPHABET: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_STRING_ALPHABET: Final = "abcdefghijklmnopqrstuvwxyz0123456789"
_MAX_RANDOM: Final = 4096
_MAX_RENDERED: Final = 1024 * 1024
_NAME_INVALID: Final = re.compile(r"[^a-z0-9-]+")


@dataclass(frozen=True, slots=True)
class TemplateInput:
    """What a provisioner sees of its resource and the world around it.

    ``state`` and ``shared`` are the recorded ones (empty the first time). ``workload_services``
    maps each workload to ``{service_name, ports: {name or port: {name, port, target_port,
    protocol}}}``; ``environment`` is ``{name, variables}``.
    """

    uid: ResourceUid
    params: Mapping[str, Any] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    source_workload: str = ""
    workload_services: Mapping[str, Any] = field(default_factory=dict)
    environment: Mapping[str, Any] = field(default_factory=dict)
    state: Mapping[str, Any] = field(default_factory=dict, repr=False)
    shared: Mapping[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True, slots=True)
class Rendered:
    """What a provisioner produced. Values may hold secrets: ``repr`` shows none of them."""

    uri: str
    init: Mapping[str, Any] = field(default_factory=dict, repr=False)
    state: Mapping[str, Any] = field(default_factory=dict, repr=False)
    shared: Mapping[str, Any] = field(default_factory=dict, repr=False)
    outputs: Mapping[str, Any] = field(default_factory=dict, repr=False)
    manifests: tuple[Mapping[str, Any], ...] = field(default=(), repr=False)


class RenderError(Exception):
    """A template failed; ``diagnostic`` points at the template in the provisioner file."""

    def __init__(self, provisioner: Provisioner, stage: str, message: str, line: int) -> None:
        super().__init__(f"{provisioner.uri}: {stage}: {message}")
        self.diagnostic = Diagnostic(
            Code.PROVISIONER_TEMPLATE_ERROR,
            f"provisioner '{provisioner.uri}' {stage}: {message}",
            file=provisioner.file or None,
            line=line or None,
            column=1 if line else None,
        )


class _TemplateFailed(Exception):
    """Raised by ``fail(message)`` inside a template."""


def render(provisioner: Provisioner, data: TemplateInput, seed: str) -> Rendered:
    """Evaluate the provisioner's templates in order; ``RenderError`` when one fails."""
    if provisioner.scheme != TEMPLATE_SCHEME:
        raise RenderError(provisioner, "uri", "only template:// provisioners render", 0)
    uid = data.uid
    context: dict[str, Any] = {
        "uid": str(uid),
        "type": uid.type,
        "class": uid.class_,
        "id": uid.id,
        "params": _plain(data.params),
        "metadata": _plain(data.metadata),
        "source_workload": data.source_workload,
        "workload_services": _services_copy.of(data.workload_services),
        "environment": {"name": "", "variables": {}, **_plain(data.environment)},
        "init": {},
        "state": _plain(data.state),
        "shared": _plain(data.shared),
    }
    # The uid is part of the stream's key, so one seed shared by mistake still gives every
    # resource its own passwords.
    key = f"{seed}\x00{uid}"
    for stage in ("init", "state"):
        context[stage] = _map(provisioner, stage, context, key)
    context["shared"] = merge_patch(context["shared"], _map(provisioner, "shared", context, key))
    outputs = _map(provisioner, "outputs", context, key)
    manifests = _rendered(provisioner, "manifests", context, key, [])
    if not isinstance(manifests, list) or not all(isinstance(m, dict) for m in manifests):
        line = provisioner.template_line("manifests")
        raise RenderError(provisioner, "manifests", "must render a YAML list of objects", line)
    return Rendered(
        uri=provisioner.uri,
        init=context["init"],
        state=context["state"],
        shared=context["shared"],
        outputs=outputs,
        manifests=tuple(manifests),
    )


def merge_patch(target: object, patch: object) -> Any:
    """RFC 7386: maps merge recursively, ``null`` deletes a key, anything else replaces."""
    if not isinstance(patch, Mapping):
        return _plain(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _map(provisioner: Provisioner, stage: str, context: Mapping[str, Any], seed: str) -> Any:
    value = _rendered(provisioner, stage, context, seed, {})
    if not isinstance(value, dict):
        line = provisioner.template_line(stage)
        raise RenderError(provisioner, stage, "must render a YAML map", line)
    return value


def _rendered(
    provisioner: Provisioner, stage: str, context: Mapping[str, Any], seed: str, empty: object
) -> Any:
    source = provisioner.templates.get(stage)
    if source is None:
        return empty
    line = provisioner.template_line(stage)
    helpers = _helpers(seed, stage)
    try:
        template = _compiled(source)
        text = template.render({**context, **helpers})
    except jinja2.TemplateError as exc:
        lineno = getattr(exc, "lineno", None)
        raise RenderError(provisioner, stage, _words(exc), line + (lineno or 1) - 1) from exc
    except (_TemplateFailed, ValueError, TypeError, ArithmeticError, LookupError) as exc:
        raise RenderError(provisioner, stage, _words(exc), line) from exc
    if len(text) > _MAX_RENDERED:
        raise RenderError(provisioner, stage, "rendered more than 1 MiB", line)
    if not text.strip():
        return empty
    try:
        return _plain(_load(text))
    except YAMLError as exc:
        message = f"rendered text is not valid YAML: {str(exc).splitlines()[0]}"
        raise RenderError(provisioner, stage, message, line) from exc


@lru_cache(maxsize=1024)
def _compiled(source: str) -> jinja2.Template:
    """A template compiled once per process: the same few provisioner templates render for
    every resource, and compiling one costs more than rendering it. Compiled templates are
    immutable and safe to render from several threads at once.

    Its globals are flattened into one dict: Jinja keeps them as a ``ChainMap`` of the
    template's and the environment's (which never change once made), and copies them into
    every render's context, which for a ``ChainMap`` means a Python call per name."""
    template = _environment().from_string(source)
    template.globals = dict(template.globals)
    return template


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja_environment()


_C_MAX_DEPTH: Final = 64


def _load(text: str) -> Any:
    """A rendered text's value: libyaml reads it (several times faster than the pure-Python
    reader, and the one Score files are read with), unless it nests deeper than
    ``_C_MAX_DEPTH``: libyaml builds nodes by recursion in C, which a deep enough text would
    take past the end of the thread's stack; the pure-Python reader raises instead.
    ``load_plain`` builds the value from libyaml's events in one pass when it can."""
    return load_plain(text, _C_MAX_DEPTH)


def _words(exc: BaseException) -> str:
    text = str(exc).strip()
    return text or type(exc).__name__


class _SharedCopy:
    """``_plain(services)``, copied once per desired state rather than once per resource.

    Every resource of an environment sees the services of every workload: copying them for
    each render made a run's rendering grow with the square of its workloads. The copy is
    shared by later renders of the same mapping (a desired state is never changed once built),
    which is safe because the immutable sandbox lets no template change a dict or a list.
    The mapping is held, so that its ``id`` cannot be reused while it is remembered; the pair
    is replaced in one assignment, so threads see an old pair or a new one, never a mix. A
    mapping that is plain already (what ``desired.build`` makes: dicts with text keys, lists
    and scalars) is its own copy: templates only read it, and a second copy of every
    workload's services stayed in memory for as long as it was remembered (about 0.9 KB a
    workload, held by the daemon between runs).
    """

    def __init__(self) -> None:
        self._last: tuple[object, Any] = (object(), {})

    def of(self, services: Mapping[str, Any]) -> Any:
        source, plain = self._last
        if source is not services:
            plain = services if _is_plain(services) else _plain(services)
            self._last = (services, plain)
        return plain


_services_copy = _SharedCopy()


def _is_plain(value: object) -> bool:
    """Whether ``_plain(value)`` would equal ``value`` in type and content: dicts with text
    keys, lists and JSON scalars all the way down."""
    if type(value) is dict:
        return all(type(k) is str and _is_plain(v) for k, v in value.items())
    if type(value) is list:
        return all(_is_plain(v) for v in value)
    return type(value) in (str, int, float, bool) or value is None


def _plain(value: object) -> Any:
    """JSON-like copies, so that templates and callers never share a mutable value.

    Exact dicts, lists, strings and numbers, what a rendered text reads back as, are told
    apart by their type first: asking ``isinstance`` of the abstract ``Mapping`` for every
    value was most of the copy's cost."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or kind is float or value is None:
        return value
    if kind is dict:
        return {k if type(k) is str else str(k): _plain(v) for k, v in value.items()}  # type: ignore[attr-defined]
    if kind is list:
        return [_plain(v) for v in value]  # type: ignore[attr-defined]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


# -- helpers available to templates --------------------------------------------------------------


def _helpers(seed: str, stage: str) -> dict[str, Callable[..., Any]]:
    draw = _Stream(seed, stage)
    return {
        "random_password": lambda n=16: draw.choose(_PASSWORD_ALPHABET, n),
        "random_string": lambda n=8: draw.choose(_STRING_ALPHABET, n),
        "short_hash": short_hash,
        "k8s_name": k8s_name,
        "b64encode": lambda text: base64.b64encode(str(text).encode()).decode("ascii"),
        "regex_match": _regex_match,
        "fail": _fail,
    }


class _Stream:
    """A deterministic stream of choices: SHA-256 in counter mode over seed, stage and call."""

    def __init__(self, seed: str, stage: str) -> None:
        self._seed = seed
        self._stage = stage
        self._calls = 0

    def choose(self, alphabet: str, length: object) -> str:
        if not isinstance(length, int) or isinstance(length, bool) or not 0 < length <= _MAX_RANDOM:
            raise ValueError(f"length must be an integer from 1 to {_MAX_RANDOM}")
        self._calls += 1
        limit = 256 - 256 % len(alphabet)  # rejection sampling keeps every character equally likely
        out: list[str] = []
        block = 0
        while len(out) < length:
            key = f"{self._seed}\x00{self._stage}\x00{self._calls}\x00{block}".encode()
            block += 1
            out.extend(
                alphabet[b % len(alphabet)] for b in hashlib.sha256(key).digest() if b < limit
            )
        return "".join(out[:length])


def short_hash(value: object, length: int = 8) -> str:
    """Lower-case hex of SHA-256 of the text: stable names that never change between runs."""
    return hashlib.sha256(str(value).encode()).hexdigest()[: max(1, min(int(length), 64))]


def k8s_name(*parts: object) -> str:
    """An RFC 1123 name from ``parts``, readable, unique and at most 63 characters.

    The parts are lower-cased and cleaned; a hash of the parts as given keeps two names apart
    that clean to the same text (``redis.default#a.b`` and ``redis.default#a-b``).
    """
    joined = "-".join(str(p) for p in parts)
    readable = _NAME_INVALID.sub("-", joined.lower()).strip("-")[:54].rstrip("-")
    digest = short_hash(json.dumps([str(p) for p in parts]), 8)
    return f"{readable}-{digest}" if readable else digest


def _regex_match(pattern: str, text: object) -> bool:
    """Whether ``pattern`` matches anywhere in ``text``, as Go's ``regexp.MatchString``."""
    return re.search(pattern, str(text)) is not None


def _fail(message: object) -> None:
    raise _TemplateFailed(str(message))
