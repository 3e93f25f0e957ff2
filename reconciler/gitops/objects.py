"""Git objects built in memory, then stored together: loose when few, as one pack when many.

``commit.write_branch`` builds the trees of a deploy commit here. Writing each object as a
loose file costs a file creation per object, so the first deploy of a thousand workloads
(two files and a folder each) spent more in the file system than in rendering the files;
one pack file and its index cost two. Like ``git fetch`` (``fetch.unpackLimit``), fewer than
``PACK_THRESHOLD`` objects are written loose, so that small commits, the daemon's usual ones,
do not leave a pack each behind; the caller may ask for a pack anyway (a branch's first commit,
once per branch: a loose object costs about 16 system calls, a pack two files whatever its
size). Nothing is written before ``store``: a tree found unchanged costs no write at all.

Formats: gitformat-pack(5), version 2 packs and indexes, objects stored whole (no deltas).
"""

from __future__ import annotations

import hashlib
import os
import struct
import tempfile
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Final

import pygit2
from pygit2.enums import FileMode, ObjectType

PACK_THRESHOLD: Final = 100
"""Objects from which a write is one pack rather than loose files (git's unpack limit)."""

_PACK_TYPES: Final = {ObjectType.COMMIT: 1, ObjectType.TREE: 2, ObjectType.BLOB: 3}
_NAMES: Final = {ObjectType.TREE: b"tree", ObjectType.BLOB: b"blob"}
_LARGE_OFFSET: Final = 0x8000_0000

TreeEntry = tuple[bytes, pygit2.Oid, int]
"""A tree entry: name (as Git stores it: bytes, UTF-8 in practice), object id, file mode."""


class ObjectBuffer:
    """New blobs and trees of one commit, by id, until ``store`` writes them."""

    def __init__(self) -> None:
        self._objects: dict[bytes, tuple[ObjectType, bytes]] = {}

    def __len__(self) -> int:
        return len(self._objects)

    def blob(self, data: bytes) -> pygit2.Oid:
        return self._add(ObjectType.BLOB, data)

    def tree(self, entries: Iterable[TreeEntry]) -> pygit2.Oid:
        """A tree of ``entries`` (unique names), in git's order: by name, a folder's name
        compared as if it ended in ``/``."""
        ordered = sorted(entries, key=lambda e: e[0] + b"/" if e[2] == FileMode.TREE else e[0])
        data = b"".join(b"%o %s\0%s" % (mode, name, oid.raw) for name, oid, mode in ordered)
        return self._add(ObjectType.TREE, data)

    def tree_data(self, data: bytes) -> pygit2.Oid:
        """A tree of the given data, entries already in Git's order (``commit._spliced``)."""
        return self._add(ObjectType.TREE, data)

    def store(self, repo: pygit2.Repository, *, pack: bool = False) -> None:
        """Write every object into ``repo``: one pack from ``PACK_THRESHOLD`` objects on (or
        with ``pack``, when there are any), loose files below. Objects the repository has
        already may be written again."""
        if self._objects and (pack or len(self._objects) >= PACK_THRESHOLD):
            write_pack(_objects_dir(repo) / "pack", self._objects)
        else:
            for kind, data in self._objects.values():
                repo.odb.write(kind, data)
        self._objects.clear()

    def _add(self, kind: ObjectType, data: bytes) -> pygit2.Oid:
        raw = hashlib.sha1(b"%s %d\0" % (_NAMES[kind], len(data)))
        raw.update(data)
        digest = raw.digest()
        self._objects[digest] = (kind, data)
        return pygit2.Oid(raw=digest)


def write_pack(folder: Path, objects: dict[bytes, tuple[ObjectType, bytes]]) -> str:
    """Write ``objects`` (by raw id) as ``pack-<checksum>.pack`` and its ``.idx`` in ``folder``;
    the pack's checksum. The pack is renamed into place first and the index last, as git does:
    readers only see a pack through its index."""
    pack = hashlib.sha1()
    chunks = [b"PACK" + struct.pack(">II", 2, len(objects))]
    pack.update(chunks[0])
    offset = len(chunks[0])
    entries: list[tuple[bytes, int, int]] = []  # id, crc32, offset
    for oid, (kind, data) in objects.items():
        body = _entry_header(_PACK_TYPES[kind], len(data)) + zlib.compress(data)
        pack.update(body)
        chunks.append(body)
        entries.append((oid, zlib.crc32(body), offset))
        offset += len(body)
    checksum = pack.digest()
    chunks.append(checksum)
    name = f"pack-{checksum.hex()}"
    folder.mkdir(parents=True, exist_ok=True)
    _put(folder / f"{name}.pack", b"".join(chunks))
    _put(folder / f"{name}.idx", _index(sorted(entries), checksum))
    return checksum.hex()


def _entry_header(kind: int, size: int) -> bytes:
    """An object's type and size: 3 bits of type and 4 of size, then 7 bits of size a byte."""
    out = bytearray()
    byte = (kind << 4) | (size & 0x0F)
    size >>= 4
    while size:
        out.append(byte | 0x80)
        byte = size & 0x7F
        size >>= 7
    out.append(byte)
    return bytes(out)


def _index(entries: list[tuple[bytes, int, int]], pack_checksum: bytes) -> bytes:
    """A version 2 pack index of ``entries`` sorted by id."""
    fanout = [0] * 256
    for oid, _, _ in entries:
        fanout[oid[0]] += 1
    total = 0
    for i, count in enumerate(fanout):
        total += count
        fanout[i] = total
    small: list[int] = []
    large: list[int] = []
    for _, _, offset in entries:
        if offset < _LARGE_OFFSET:
            small.append(offset)
        else:
            small.append(_LARGE_OFFSET | len(large))
            large.append(offset)
    count = len(entries)
    body = b"".join(
        [
            b"\377tOc" + struct.pack(">I", 2),
            struct.pack(">256I", *fanout),
            *(oid for oid, _, _ in entries),
            struct.pack(f">{count}I", *(crc for _, crc, _ in entries)),
            struct.pack(f">{count}I", *small),
            struct.pack(f">{len(large)}Q", *large),
            pack_checksum,
        ]
    )
    return body + hashlib.sha1(body).digest()


def _put(path: Path, data: bytes) -> None:
    """Write ``path`` whole, read-only as git leaves pack files, through a temporary name."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="tmp_pack_")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(tmp, 0o444)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _objects_dir(repo: pygit2.Repository) -> Path:
    """The object database's folder, shared by every work tree of the repository."""
    git_dir = Path(repo.path)
    common = git_dir / "commondir"
    if common.is_file():
        git_dir = (git_dir / common.read_text().strip()).resolve()
    return git_dir / "objects"
