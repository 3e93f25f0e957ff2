"""The desired state of one environment: what the repository at one commit asks for.

Values only, built by ``desired.build`` and read by the planner, which diffs them against the
recorded state. Everything is JSON-able and deterministic (sorted walks, hashes of canonical
JSON), so the same commit always yields the same bytes. Nothing here holds a secret: secret
outputs appear only as ``secret://`` references or as markers inside strings (``secrets.py``).
"""

from __future__ import annotations

import hashlib
import json
import sys
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from reconciler.deflate import deflated

_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
_IN_ORDER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
"""The encoders ``json.dumps`` would make for these options on every call (it keeps one only
for its defaults): made once, they spell every value the same, a few microseconds sooner
(every workload and resource of a plan is hashed, and every workload packed)."""


def canonical_json(value: object) -> str:
    """Sorted keys, no spaces, UTF-8 as is: one text per value, for hashes and comparisons."""
    return _CANONICAL.encode(value)


def digest(value: object) -> str:
    """``sha256:<hex>`` of the canonical JSON; what the planner compares to spot a change.

    Interned: a digest is kept by the desired state, the diff's memo and the store's record
    of the same workload or resource (three copies of 71 characters each), and many resources
    have the same params (one digest for every resource without any, known beforehand)."""
    if type(value) is dict and not value:
        return _EMPTY_DIGEST
    return _digest(value)


def _digest(value: object) -> str:
    return sys.intern("sha256:" + hashlib.sha256(canonical_json(value).encode()).hexdigest())


_EMPTY_DIGEST = _digest({})


@dataclass(frozen=True, slots=True)
class DesiredResource:
    """One resource, after priming, matching and placeholder resolution.

    ``params`` are resolved in the source workload's context; a value that needs an output not
    known yet is the string ``(known after apply)``. ``provisioner`` is the matched uri, or ""
    when none matched (an error diagnostic says so).
    """

    uid: str
    type: str
    class_: str
    id: str
    source_workload: str
    consumers: tuple[str, ...]
    provisioner: str
    params: dict[str, Any] = field(hash=False)
    metadata: dict[str, Any] = field(hash=False)
    depends_on: tuple[str, ...]
    shared: bool
    params_hash: str
    secret_outputs: tuple[str, ...] = ()
    expected_outputs: tuple[str, ...] = ()

    def to_data(self) -> dict[str, Any]:
        return {
            "uid": self.uid,
            "type": self.type,
            "class": self.class_,
            "id": self.id,
            "source_workload": self.source_workload,
            "consumers": list(self.consumers),
            "provisioner": self.provisioner,
            "params": self.params,
            "metadata": self.metadata,
            "depends_on": list(self.depends_on),
            "shared": self.shared,
            "params_hash": self.params_hash,
            "secret_outputs": list(self.secret_outputs),
            "expected_outputs": list(self.expected_outputs),
        }


PACK_FROM = 256
"""Texts from this many characters are kept deflated (``packed``)."""


def packed(value: object) -> str | bytes:
    """``value`` (JSON data) as its JSON text, deflated from ``PACK_FROM`` characters (zlib
    level 1: about a third of the text), keys in their order: what ``unpacked`` gives back
    equals ``value``, maps in the same order."""
    text = _IN_ORDER.encode(value)
    if len(text) < PACK_FROM:
        return text
    return deflated(text.encode("utf-8"))


def unpacked(kept: str | bytes) -> Any:
    """A fresh copy of the value ``packed`` kept."""
    return json.loads(zlib.decompress(kept) if isinstance(kept, bytes) else kept)


@dataclass(frozen=True, slots=True, init=False)
class DesiredWorkload:
    """One workload with its placeholders resolved.

    ``spec`` is the normalised Score document (files and volumes as maps) without its
    ``resources`` section, which ``resources`` replaces by name → uid: variables and file
    contents resolved (unless ``noExpand``), a ``source`` file inlined as ``content``, volume
    sources as uids; ``command`` and ``args`` as written, as score-k8s leaves them.

    The spec is kept as its JSON text (``packed``) and decoded, a fresh copy, each time it is
    read: the incremental builder keeps every workload's desired value between plans (the
    daemon, for its life), and decoded specs were the largest part of that (about 6 KB a
    workload against under 1 KB deflated), while a spec is read only to diff a creation or an
    update, to apply the workload and to record it; ``spec_hash`` says whether it changed.
    """

    name: str
    file: str
    packed_spec: str | bytes
    resources: dict[str, str] = field(hash=False)
    depends_on: tuple[str, ...]
    spec_hash: str
    sources: tuple[str, ...]

    def __init__(
        self,
        *,
        name: str,
        file: str,
        spec: dict[str, Any],
        resources: dict[str, str],
        depends_on: tuple[str, ...],
        spec_hash: str,
        sources: tuple[str, ...],
    ) -> None:
        setattr_ = object.__setattr__  # frozen: set once, here
        setattr_(self, "name", name)
        setattr_(self, "file", file)
        setattr_(self, "packed_spec", packed(spec))
        setattr_(self, "resources", resources)
        setattr_(self, "depends_on", depends_on)
        setattr_(self, "spec_hash", spec_hash)
        setattr_(self, "sources", sources)

    @property
    def spec(self) -> dict[str, Any]:
        """The resolved document, decoded anew on each read (a copy the reader may change)."""
        found: dict[str, Any] = unpacked(self.packed_spec)
        return found

    def to_data(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "file": self.file,
            "spec": self.spec,
            "resources": dict(sorted(self.resources.items())),
            "depends_on": list(self.depends_on),
            "spec_hash": self.spec_hash,
            "sources": list(self.sources),
        }


@dataclass(frozen=True, slots=True)
class DesiredState:
    """Resources in dependency order (sorted waves), workloads sorted by name.

    ``workload_services`` is what provisioners see as ``workload_services``: per workload, its
    service name and ports keyed by name and by port number as text; ``variables`` are the
    environment's, which provisioners see as ``environment.variables``.
    """

    environment: str
    resources: Sequence[DesiredResource]
    """A tuple, or a ``Chunked`` from the incremental builder (equal to the tuple)."""
    workloads: Sequence[DesiredWorkload]
    workload_services: dict[str, Any] = field(default_factory=dict, hash=False)
    variables: dict[str, str] = field(default_factory=dict, hash=False)

    def resource(self, uid: str) -> DesiredResource | None:
        """One resource, by a scan: index ``resources`` to look up many."""
        return next((r for r in self.resources if r.uid == uid), None)

    def workload(self, name: str) -> DesiredWorkload | None:
        """One workload, by a scan: index ``workloads`` to look up many."""
        return next((w for w in self.workloads if w.name == name), None)

    def to_data(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "resources": [r.to_data() for r in self.resources],
            "workloads": [w.to_data() for w in self.workloads],
            "workload_services": self.workload_services,
            "variables": self.variables,
        }

    def to_json(self) -> str:
        return canonical_json(self.to_data())
