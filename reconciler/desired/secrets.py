"""Secret values as references, so that no password travels in plain text past planning.

A provisioner's secret output (``password``, ``secret_key``...) is recorded in the state as a
reference ``secret://<environment>/<uid>/<key>``; the value itself stays with the driver that
holds it. Where a secret ends up inside a larger string (``redis://user:PASSWORD@host``), the
reference is embedded between markers, in the spirit of score-k8s's ``🔐💬...💬🔐``, so that the
manifests renderer can later turn the variable into a ``secretKeyRef`` and every renderer of
plans can hide it. Pure functions; who calls them: ``desired.build``, the drivers, the planner.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Final

SCHEME: Final = "secret://"
MARK_OPEN: Final = "🔐💬"
MARK_CLOSE: Final = "💬🔐"
SENSITIVE: Final = "(sensitive value)"

# A reference never holds whitespace nor the closing marker, so the shortest match is the ref.
_REF: Final = re.compile(r"secret://[^\s/]+/[^\s/]+/[^\s/💬🔐]+")
_MARKED: Final = re.compile(re.escape(MARK_OPEN) + r"(secret://.+?)" + re.escape(MARK_CLOSE))


def secret_ref(environment: str, uid: str, key: str) -> str:
    """The reference to output ``key`` of resource ``uid`` in ``environment``."""
    return f"{SCHEME}{environment}/{uid}/{key}"


def is_ref(value: object) -> bool:
    """Whether ``value`` is exactly one secret reference."""
    return isinstance(value, str) and _REF.fullmatch(value) is not None


def parse_ref(ref: str) -> tuple[str, str, str]:
    """``(environment, uid, key)`` of a reference; ``ValueError`` if it is not one."""
    if not is_ref(ref):
        raise ValueError(f"not a secret reference: {ref!r}")
    environment, uid, key = ref.removeprefix(SCHEME).split("/")
    return environment, uid, key


def embed(ref: str) -> str:
    """The reference as it stands inside a string: between markers no Score value contains."""
    return f"{MARK_OPEN}{ref}{MARK_CLOSE}"


def refs_in(text: str) -> list[str]:
    """Every embedded reference in ``text``, in order (a bare reference counts as one)."""
    found = _MARKED.findall(text)
    if not found and is_ref(text):
        return [text]
    return list(found)


def contains_secret(value: object) -> bool:
    """Whether a value (recursively) holds a reference or a marker."""
    if isinstance(value, str):
        return bool(refs_in(value))
    if isinstance(value, Mapping):
        return any(contains_secret(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(contains_secret(v) for v in value)
    return False


def redact(value: object) -> object:
    """``value`` with every reference and marker replaced by ``(sensitive value)``.

    Only the marked part of a string is replaced: ``redis://app:(sensitive value)@host`` still
    tells a reader of a plan what changed, and it holds nothing secret.
    """
    if isinstance(value, str):
        if SCHEME not in value:  # most strings: neither a reference nor a marked one
            return value
        return SENSITIVE if is_ref(value) else _MARKED.sub(SENSITIVE, value)
    if isinstance(value, Mapping):
        return {k: redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


def split_outputs(
    outputs: Mapping[str, object], secret_keys: Sequence[str], environment: str, uid: str
) -> tuple[dict[str, object], dict[str, object]]:
    """Split rendered outputs into what may be recorded and shown, and the secret values.

    The first map holds every output, with each secret one replaced by its reference; the second
    holds the secret values themselves, keyed by output key, for the driver to keep.
    """
    public: dict[str, object] = {}
    hidden: dict[str, object] = {}
    for key in sorted(outputs):
        if key in secret_keys:
            public[key] = secret_ref(environment, uid, key)
            hidden[key] = outputs[key]
        else:
            public[key] = outputs[key]
    return public, hidden


def embed_refs(value: object) -> object:
    """Recorded outputs as placeholders see them: each bare reference turned into a marker.

    A dict with nothing to turn is returned itself, not copied: the planner keeps a view of
    every recorded resource's outputs, beside the record that holds them already."""
    if isinstance(value, str):
        return embed(value) if is_ref(value) else value
    if isinstance(value, Mapping):
        embedded = {k: embed_refs(v) for k, v in value.items()}
        if type(value) is dict and all(embedded[k] is v for k, v in value.items()):
            return value
        return embedded
    if isinstance(value, list | tuple):
        return [embed_refs(v) for v in value]
    return value
