"""One commit's files as a ``reconciler.tree.Tree``, read from the object database on demand.

Planning a commit must not need a checkout (bare repositories work the same) and must not pay for
files it never looks at: ``read`` looks one path up through libgit2 (each folder on the way is one
tree object), and only ``files`` walks the whole tree, once, keeping the flattened map for every
later lookup. Blob contents are read only when asked for.

Symbolic links are followed the way a checkout would follow them, but only while they stay in the
tree: an absolute target, or a ``..`` that climbs above the root, "leads out" (``resolve`` gives
None, ``read`` raises ``PermissionError``). Chains longer than ``MAX_LINK_HOPS`` and loops are
reported as missing files (``FileNotFoundError`` with ``errno.ELOOP``) so callers that handle a
missing file handle them too.
"""

from __future__ import annotations

import errno
import os
from collections import deque
from collections.abc import Iterator
from typing import NamedTuple

import pygit2
from pygit2.enums import FileMode, ObjectType

from reconciler.catalogue import Code
from reconciler.gitops.errors import GitError
from reconciler.tree import SKIPPED_DIRS

MAX_LINK_HOPS = 8
"""Links followed while resolving one path; deeper chains are almost surely loops."""


class Entry(NamedTuple):
    """A tree entry as the walk and lookups keep it: cheap, with no object loaded."""

    id: pygit2.Oid
    mode: int


FOLDER = Entry(pygit2.Oid(hex="0" * 40), int(FileMode.TREE))
"""Stands for a folder already walked through while resolving; its id is never read."""
FILE_BLOBS = frozenset({int(FileMode.BLOB), int(FileMode.BLOB_EXECUTABLE)})
NOT_FILES = frozenset({int(FileMode.TREE), int(FileMode.COMMIT)})


class GitTree:
    """The files of one commit; satisfies ``reconciler.tree.Tree``.

    ``files`` lists what a work tree walk (``DirectoryTree``) would list for the same checkout:
    blobs and links to files, sorted by path, without submodules, links to folders, or the tool
    folders in ``SKIPPED_DIRS``; so validating a commit and its checkout agree.
    """

    def __init__(self, repo: pygit2.Repository, commit: str, root: pygit2.Tree) -> None:
        self.commit = commit
        self._repo = repo
        self._odb = repo.odb
        self._root = root
        self._flat: dict[str, Entry] | None = None
        self._shown: list[str] = []
        self._files: tuple[str, ...] | None = None
        self._folders: dict[str, pygit2.Tree] = {}

    @property
    def tree_id(self) -> str:
        """The id of the commit's root tree: equal ids, equal files (a cache key that commits
        changing nothing under the root share)."""
        return str(self._root.id)

    def files(self) -> Iterator[str]:
        if self._files is None:
            self._files = tuple(sorted(self._listed()))
        yield from self._files

    def read(self, path: str) -> bytes:
        found = self._follow(path)
        if found is None:
            raise PermissionError(errno.EACCES, "link leads outside the repository", path)
        if found[1].mode in NOT_FILES:
            raise FileNotFoundError(errno.EISDIR, "is a folder, not a file", path)
        return self._blob(found[1].id, path)

    def resolve(self, path: str) -> str | None:
        found = self._follow(path)
        return None if found is None else found[0]

    def blob_id(self, path: str) -> str | None:
        """The id of the blob ``read(path)`` returns: equal ids, equal bytes (a cache key)."""
        try:
            found = self._follow(path)
        except FileNotFoundError:
            return None
        if found is None or found[1].mode not in FILE_BLOBS:
            return None
        return str(found[1].id)

    def exists(self, path: str) -> bool:
        """Whether ``read(path)`` would return bytes (a file, directly or through links)."""
        return self.blob_id(path) is not None

    # -- walking -------------------------------------------------------------------------------

    def _flattened(self) -> dict[str, Entry]:
        if self._flat is None:
            flat: dict[str, Entry] = {}
            shown: list[str] = []
            try:
                _walk(self._root, "", flat, shown)
            except pygit2.GitError as exc:
                raise GitError(
                    Code.GIT_READ_FAILED, f"commit {self.commit[:7]}: cannot walk its tree: {exc}"
                ) from exc
            self._flat, self._shown = flat, shown
        return self._flat

    def _listed(self) -> Iterator[str]:
        flat = self._flattened()
        for path in self._shown:
            mode = flat[path].mode
            if mode in FILE_BLOBS or (mode == FileMode.LINK and self._links_to_file(path)):
                yield path

    def _links_to_file(self, path: str) -> bool:
        try:
            found = self._follow(path)
        except FileNotFoundError:
            return True  # a dangling link is still a file entry, as in a checkout
        return found is None or found[1].mode not in NOT_FILES

    # -- looking up ----------------------------------------------------------------------------

    def _entry(self, path: str) -> Entry | None:
        """One path's entry: from the flattened map once walked, else looked up in its folder
        (each folder read once: a lookup by the whole path reads every folder on the way
        again, and a folder of hundreds of entries is not kept by libgit2's object cache)."""
        if self._flat is not None:
            return self._flat.get(path)
        parent, _, name = path.rpartition("/")
        try:
            folder = self._folder(parent)
            obj = None if folder is None else folder[name]
        except KeyError:
            return None
        except pygit2.GitError as exc:
            raise GitError(Code.GIT_READ_FAILED, f"{path}: cannot look it up: {exc}") from exc
        return None if obj is None else Entry(obj.id, int(obj.filemode))

    def _folder(self, path: str) -> pygit2.Tree | None:
        """The tree object of the folder at ``path`` ("" is the root); None when it is not a
        folder. Raises ``KeyError`` when a folder on the way has no such entry."""
        if not path:
            return self._root
        found = self._folders.get(path)
        if found is None:
            parent, _, name = path.rpartition("/")
            above = self._folder(parent)
            obj = None if above is None else above[name]
            if not isinstance(obj, pygit2.Tree):
                return None
            found = self._folders[path] = obj
        return found

    def _follow(self, path: str) -> tuple[str, Entry] | None:
        """``path`` with every link followed and its entry; None once it leaves the tree."""
        if path.startswith("/"):
            return None
        if self._flat is not None and not path.startswith(".") and "/." not in path:
            # Once walked, a path of plain names found in the map is reached through folders
            # only (``_walk`` descends into trees, never links): nothing to follow on the way.
            # A full plan reads every Score file this way.
            found = self._flat.get(path)
            if found is not None and found.mode != FileMode.LINK:
                return path, found
        parts = deque(_split(path))
        done: list[str] = []
        entry = FOLDER
        hops = 0
        while parts:
            name = parts.popleft()
            if entry.mode != FileMode.TREE:
                raise FileNotFoundError(errno.ENOTDIR, "not a folder", path)
            if name == "..":
                if not done:
                    return None
                done.pop()
                continue
            entry = self._known("/".join([*done, name]), path)
            if entry.mode != FileMode.LINK:
                done.append(name)
                continue
            hops += 1
            if hops > MAX_LINK_HOPS:
                raise FileNotFoundError(errno.ELOOP, "too many levels of symbolic links", path)
            target = os.fsdecode(self._blob(entry.id, path))
            if target.startswith("/"):
                return None
            parts.extendleft(reversed(_split(target)))
            entry = FOLDER
        return "/".join(done), entry

    def _known(self, path: str, asked: str) -> Entry:
        entry = self._entry(path)
        if entry is None:
            raise FileNotFoundError(errno.ENOENT, "no such file in the commit", asked)
        return entry

    def _blob(self, oid: pygit2.Oid, path: str) -> bytes:
        """The blob's bytes, read from the object database: no ``Blob`` object is made, nor
        kept in the repository's object cache (a plan reads each file once), which costs
        about 40 % of a read."""
        try:
            kind, data = self._odb.read(oid)
        except (KeyError, pygit2.GitError) as exc:
            raise GitError(Code.GIT_READ_FAILED, f"{path}: cannot read blob {oid}: {exc}") from exc
        if kind != ObjectType.BLOB:
            raise GitError(Code.GIT_READ_FAILED, f"{path}: object {oid} is not a blob")
        return data


def _split(path: str) -> list[str]:
    return [part for part in path.split("/") if part not in ("", ".")]


def _walk(tree: pygit2.Tree, prefix: str, out: dict[str, Entry], shown: list[str] | None) -> None:
    """Flatten ``tree`` into ``out``, folders included (links need them to resolve).

    Everything is flattened, so lookups agree before and after a walk; ``shown`` collects the
    non-folder paths outside ``SKIPPED_DIRS``, the candidates for ``files``.
    """
    for obj in tree:
        name = obj.name
        if name is None:  # only objects looked up by id lack a name; tree entries never do
            continue
        path = prefix + name
        mode = int(obj.filemode)
        out[path] = Entry(obj.id, mode)
        if mode == FileMode.TREE:
            assert isinstance(obj, pygit2.Tree)
            _walk(obj, path + "/", out, None if name in SKIPPED_DIRS else shown)
        elif shown is not None:
            shown.append(path)
