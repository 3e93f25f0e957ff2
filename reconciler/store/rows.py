"""Records to rows and back: the one place that knows both the dataclasses and the columns.

``Store`` calls these; keeping them apart keeps the store's methods about transactions and
queries. Rows read back are turned into records with JSON objects key-sorted (the engine writes
JSON with sorted keys too), so that equal state always compares and renders equal.
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
import zlib
from collections.abc import Callable, ItemsView, Iterator, KeysView, Mapping, ValuesView
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row

from reconciler.deflate import deflated
from reconciler.store.records import (
    AuditRecord,
    EnvironmentRecord,
    ResourceRecord,
    RunRecord,
    StepRecord,
    WorkloadRecord,
)

GENESIS = "0" * 64


def canonical_json(value: object) -> str:
    """The one JSON spelling used for storage and hashing: sorted keys, no spaces, UTF-8.

    The engine's JSON serializer too: a ``Canonical`` value is written as the text it holds."""
    if type(value) is Canonical or type(value) is JsonText:
        return value.text
    return _CANONICAL.encode(value)


def _plain(value: object) -> Any:
    """A ``JsonText`` nested in a value being serialised, as the object it spells."""
    if type(value) is JsonText:
        return value.decoded()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_plain
)
"""The encoder ``json.dumps`` with these options builds for every call, made once (as
``desired.model`` makes its own): a run encodes small values by the ten thousand (a step's
outputs and dependencies, each record's JSON columns), and building it was most of their
cost. ``encode`` keeps nothing between calls, so threads share it."""


@dataclass(frozen=True, slots=True)
class Canonical:
    """A JSON column's value spelled once by ``canonical_json``: the row written and the
    record the store keeps for itself (``workload_as_read``) come from the same text, instead of
    serialising every spec twice per write."""

    text: str

    @classmethod
    def of(cls, value: object) -> Canonical:
        return cls(canonical_json(value))


_SHARED: dict[str, str] = {}
"""One object per distinct key or short string among decoded JSON values (see ``decode_json``)."""
_SHARED_LIMIT = 200_000
_SHARED_LENGTH = 64


def _shared_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    share = _SHARED.setdefault
    return {
        share(k, k): share(v, v) if type(v) is str and len(v) <= _SHARED_LENGTH else v
        for k, v in pairs
    }


_DECODER = json.JSONDecoder(object_pairs_hook=_shared_pairs)


def decode_json(text: str | bytes) -> Any:
    """``json.loads``, with the objects' keys and short string values shared between values.

    The store keeps an environment's decoded state (``Store.recorded``): thousands of specs and
    documents spelling the same keys (``containers``, ``image``, ...) and values; decoded apart,
    each row holds its own copy of every one, about half of what the state weighs. The table
    of shared strings is emptied when it grows past a bound (values that come and go)."""
    if len(_SHARED) > _SHARED_LIMIT:
        _SHARED.clear()
    if isinstance(text, str):
        return _DECODER.decode(text)
    return json.loads(bytes(text), object_pairs_hook=_shared_pairs)  # psycopg hands bytes


class JsonText(Mapping[str, Any]):
    """A JSON object kept as its canonical text (``canonical_json``) and decoded when read.

    The store keeps every workload record of an environment (``Store.recorded``), and two of
    its fields are large and rarely read: ``spec`` (read only to diff an update or a deletion)
    and ``source`` (read only to type the workload again). Decoded, they were most of what a
    kept record weighs (about 8 KB a workload, against about 3 KB of text, 1.2 KB once
    compressed: a text past ``_PACK_FROM`` characters is kept deflated, which costs about
    30 microseconds a kilobyte once, and 10 to inflate it on read). Reads decode the text each
    time, through a small cache of the last few decoded, so that a loop over one value
    (``dict(x)``, ``x[k]`` per key) decodes it once; the decoded object is shared by those
    readers and must not be changed, as the decoded records the store kept before.

    Two values compare equal when their texts are (canonical text is one spelling per value),
    else by their decoded objects; equal to a plain mapping of the same content."""

    __slots__ = ("_packed",)

    def __init__(self, text: str) -> None:
        self._packed: str | bytes = (
            deflated(text.encode("utf-8")) if len(text) >= _PACK_FROM else text
        )

    @property
    def text(self) -> str:
        """The canonical text (inflated when kept deflated)."""
        packed = self._packed
        if isinstance(packed, str):
            return packed
        return zlib.decompress(packed).decode("utf-8")

    @classmethod
    def of(cls, value: object) -> JsonText:
        """The value as canonical text (a ``JsonText`` is kept as it is)."""
        return value if type(value) is JsonText else cls(canonical_json(value))

    def decoded(self) -> dict[str, Any]:
        """The object the text spells (shared with other readers: do not change it)."""
        recent = _RECENT.entries
        for held, value in recent:
            if held is self:
                return value
        value = decode_json(self.text)
        recent.insert(0, (self, value))
        del recent[_RECENT_SIZE:]
        return value  # type: ignore[no-any-return]

    def __getitem__(self, key: str) -> Any:
        return self.decoded()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.decoded())

    def __len__(self) -> int:
        return len(self.decoded())

    def __contains__(self, key: object) -> bool:
        return key in self.decoded()

    def keys(self) -> KeysView[str]:
        return self.decoded().keys()

    def items(self) -> ItemsView[str, Any]:
        return self.decoded().items()

    def values(self) -> ValuesView[Any]:
        return self.decoded().values()

    def get(self, key: str, default: Any = None) -> Any:
        return self.decoded().get(key, default)

    def __bool__(self) -> bool:
        return self._packed != "{}"

    def __eq__(self, other: object) -> bool:
        if type(other) is JsonText and other._packed == self._packed:  # the same text
            return True
        if isinstance(other, Mapping):
            mine = self.decoded()
            return mine == (other.decoded() if type(other) is JsonText else dict(other))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # as a dict: equal values, different texts

    def __repr__(self) -> str:
        return repr(self.decoded())


_PACK_FROM = 256
"""Texts this long or longer are kept deflated (shorter ones gain too little)."""


class _Recent(threading.local):
    """Per thread, the last few ``JsonText`` values decoded, newest first (``decoded``)."""

    def __init__(self) -> None:
        self.entries: list[tuple[JsonText, dict[str, Any]]] = []


_RECENT = _Recent()
_RECENT_SIZE = 4


def json_text(value: object) -> JsonText:
    """A JSON column's value as read back, kept as text: the text itself when the driver hands
    it over undecoded (SQLite, and PostgreSQL's ``json`` keeps the text written), else the
    decoded value spelled again."""
    if isinstance(value, str):
        return JsonText(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return JsonText(bytes(value).decode("utf-8"))
    return JsonText.of(value)


def _m(row: Row[Any]) -> Mapping[Any, Any]:
    return row._mapping


def environment_record(row: Row[Any]) -> EnvironmentRecord:
    r = _m(row)
    return EnvironmentRecord(r["name"], r["last_commit"], r["last_reconciled_at"], r["updated_at"])


def workload_row(environment: str, record: WorkloadRecord, now: datetime) -> dict[str, Any]:
    return {
        "environment": environment,
        "name": record.name,
        "commit": record.commit,
        "file": record.file,
        "spec_hash": record.spec_hash,
        "spec": Canonical.of(record.spec),
        "sources": Canonical.of(record.sources),
        "source": Canonical.of(record.source),
        "status": record.status,
        "updated_at": now,
    }


def workload_record(row: Row[Any]) -> WorkloadRecord:
    """A workload as read; ``spec`` and ``source`` stay text (see ``JsonText``), read as text
    when the query asked for them so (``WORKLOAD_TEXT_COLUMNS``)."""
    return _workload(_m(row), _as_is, json_text)


def workload_as_read(values: Mapping[str, Any]) -> WorkloadRecord:
    """The record a read of the row ``values`` (from ``workload_row``) would give back: its JSON
    values as decoded from their stored text, not the caller's objects."""
    return _workload(values, _as_stored, _stored_text)


WORKLOAD_TEXT_COLUMNS = ("spec", "source")
"""The workload columns a record keeps as ``JsonText``: a query may read them as plain text."""


def _workload(
    r: Mapping[str, Any], json_value: Callable[[Any], Any], text_value: Callable[[Any], JsonText]
) -> WorkloadRecord:
    return WorkloadRecord(
        name=r["name"],
        commit=r["commit"],
        file=r["file"],
        spec_hash=_interned(r["spec_hash"]),
        spec=text_value(r["spec"]),
        sources=_kept(json_value(r["sources"])),
        source=text_value(r["source"]),
        status=r["status"],
        updated_at=r["updated_at"],
    )


def resource_row(environment: str, record: ResourceRecord, now: datetime) -> dict[str, Any]:
    return {
        "environment": environment,
        "uid": record.uid,
        "type": record.type,
        "class": record.class_,
        "res_id": record.res_id,
        "source_workload": record.source_workload,
        "provisioner": record.provisioner,
        "params_hash": record.params_hash,
        "params": Canonical.of(record.params),
        "state": Canonical.of(record.state),
        "outputs": Canonical.of(record.outputs),
        "secret_refs": Canonical.of(record.secret_refs),
        "status": record.status,
        "created_at": record.created_at or now,
        "updated_at": now,
    }


def resource_record(row: Row[Any]) -> ResourceRecord:
    """A resource as read; ``state`` stays text (see ``JsonText``): it holds the manifests a
    provisioner rendered, read only when the resource or its workload is applied again."""
    return _resource(_m(row), _as_is, json_text)


def resource_as_read(values: Mapping[str, Any]) -> ResourceRecord:
    """As ``workload_as_read``, for a row from ``resource_row``."""
    return _resource(values, _as_stored, _stored_text)


RESOURCE_TEXT_COLUMNS = ("state",)
"""The resource columns a record keeps as ``JsonText``."""


def _resource(
    r: Mapping[str, Any], json_value: Callable[[Any], Any], text_value: Callable[[Any], JsonText]
) -> ResourceRecord:
    return ResourceRecord(
        uid=r["uid"],
        type=r["type"],
        class_=r["class"],
        res_id=r["res_id"],
        source_workload=r["source_workload"],
        provisioner=r["provisioner"],
        params_hash=_interned(r["params_hash"]),
        params=_kept(json_value(r["params"])),
        state=text_value(r["state"]),
        outputs=_kept(json_value(r["outputs"])),
        secret_refs=_kept(json_value(r["secret_refs"])),
        status=r["status"],
        created_at=r["created_at"],
        updated_at=r["updated_at"],
    )


def run_row(record: RunRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "environment": record.environment,
        "commit": record.commit,
        "status": record.status,
        "trigger": record.trigger,
        "plan": None if record.plan is None else dict(record.plan),
        "trace_id": record.trace_id,
        "started_at": record.started_at,
        "finished_at": record.finished_at,
        "error_code": record.error_code,
        "message": record.message,
        "scope": None if record.scope is None else list(record.scope),
    }


def run_record(row: Row[Any]) -> RunRecord:
    return run_from(_m(row))


def run_from(values: Mapping[str, Any]) -> RunRecord:
    """A run from its columns by name (a row's mapping, or the store's own read of one)."""
    fields = dict(values)
    scope = fields.pop("scope", None)
    return RunRecord(**fields, scope=None if scope is None else tuple(scope))


def step_row(run_id: str, record: StepRecord) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "step_id": record.step_id,
        "kind": record.kind,
        "target": record.target,
        "action": record.action,
        "status": record.status,
        "attempt": record.attempt,
        "depends_on": list(record.depends_on),
        "started_at": record.started_at,
        "finished_at": record.finished_at,
        "error_code": record.error_code,
        "message": record.message,
        "outputs": dict(record.outputs),
        "log": record.log,
    }


def step_record(row: Row[Any]) -> StepRecord:
    fields = dict(_m(row))
    del fields["run_id"]
    return StepRecord(**fields)


def audit_row(record: AuditRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "at": record.at,
        "actor": record.actor,
        "action": record.action,
        "environment": record.environment,
        "subject": record.subject,
        "detail": dict(record.detail),
        "prev_hash": record.prev_hash,
        "hash": record.hash,
    }


def audit_record(row: Row[Any]) -> AuditRecord:
    return AuditRecord(**dict(_m(row)))


def audit_hash(prev_hash: str, row: Mapping[Any, Any]) -> str:
    """sha256 over the previous hash and the canonical JSON of the entry's own fields.

    The id is hashed too, so that rows cannot be renumbered; the timestamp in its ISO form with
    microseconds, which both databases keep exactly.
    """
    at: datetime = row["at"]
    fields = {
        "id": row["id"],
        "at": at.isoformat(timespec="microseconds"),
        "actor": row["actor"],
        "action": row["action"],
        "environment": row["environment"],
        "subject": row["subject"],
        "detail": row["detail"],
    }
    return hashlib.sha256((prev_hash + canonical_json(fields)).encode("utf-8")).hexdigest()


_EMPTY: dict[str, Any] = {}
"""The one empty mapping of every kept record's empty JSON field (read-only, as records are)."""


def _kept(value: Any) -> Any:
    """A record's decoded JSON field as kept: an empty one is ``_EMPTY``, a small one the
    first equal one kept (``_SMALL``). Most resources have no params or secrets, many the
    same outputs (a volume's source), and the store keeps a record of every one."""
    if type(value) is not dict:
        return value
    if not value:
        return _EMPTY
    if len(value) > _SMALL_KEYS:
        return value
    text = canonical_json(value)
    if len(text) > _SMALL_TEXT:
        return value
    if len(_SMALL) > _SMALL_LIMIT:
        _SMALL.clear()
    return _SMALL.setdefault(text, value)


_SMALL: dict[str, dict[str, Any]] = {}
_SMALL_KEYS = 2
_SMALL_TEXT = 48
_SMALL_LIMIT = 4096


def _interned(digest: str) -> str:
    """A digest read back, as the one object the planner's digests of equal values are
    (``desired.model.digest``): the store keeps a record of every workload and resource."""
    return sys.intern(digest)


def _as_is(value: Any) -> Any:
    return value


def _as_stored(value: Canonical) -> Any:
    text = value.text
    return {} if text == "{}" else decode_json(text)  # most resources' params: no decoding


def _stored_text(value: Canonical) -> JsonText:
    return JsonText(value.text)
