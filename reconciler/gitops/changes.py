"""Which files a new commit changed, from a diff of two trees.

The reconciler reloads only what changed since the last reconciled commit, so this must cost in
proportion to the change. libgit2's tree diff (1.9) iterates every entry of both trees, about 8 ms
for 10,000 files however small the change; walking the two trees here instead skips every folder
whose id is the same on both sides, so a one-file commit reads only the folders on its path. No
blob is read: entries carry their ids.
"""

from __future__ import annotations

from dataclasses import dataclass

import pygit2
from pygit2.enums import FileMode

FILE_MODES = frozenset({FileMode.BLOB, FileMode.BLOB_EXECUTABLE, FileMode.LINK})
"""Entries that ``GitTree.files`` lists; submodules (commits) and absent sides are not files."""


@dataclass(frozen=True, slots=True)
class ChangeSet:
    """Repository paths (POSIX, relative to the root) that differ between two commits.

    A rename is a deletion plus an addition: what matters downstream is which paths to reload
    and which to forget, and rename detection would cost blob reads for no gain.
    """

    added: frozenset[str] = frozenset()
    modified: frozenset[str] = frozenset()
    deleted: frozenset[str] = frozenset()

    @property
    def all(self) -> frozenset[str]:
        return self.added | self.modified | self.deleted

    def __bool__(self) -> bool:
        return bool(self.added or self.modified or self.deleted)


def diff_trees(old: pygit2.Tree | None, new: pygit2.Tree) -> ChangeSet:
    """The change from ``old`` (None: an empty tree) to ``new``.

    A file that becomes a link (or the reverse) is one modification; a file that becomes a folder
    is the file deleted and the folder's files added.
    """
    found = _Found(set(), set(), set())
    _diff(old, new, "", found)
    return ChangeSet(frozenset(found.added), frozenset(found.modified), frozenset(found.deleted))


@dataclass(frozen=True, slots=True)
class _Found:
    added: set[str]
    modified: set[str]
    deleted: set[str]


def _diff(old: pygit2.Tree | None, new: pygit2.Tree | None, prefix: str, found: _Found) -> None:
    before = _entries(old)
    after = _entries(new)
    for name in before.keys() | after.keys():
        was = before.get(name)
        now = after.get(name)
        if (
            was is not None
            and now is not None
            and was.id == now.id
            and was.filemode == now.filemode
        ):
            continue  # the same blob, or the same folder all the way down
        path = prefix + name
        was_tree = was if isinstance(was, pygit2.Tree) else None
        now_tree = now if isinstance(now, pygit2.Tree) else None
        if was_tree is not None or now_tree is not None:
            _diff(was_tree, now_tree, path + "/", found)
        was_file = was is not None and was.filemode in FILE_MODES
        now_file = now is not None and now.filemode in FILE_MODES
        if was_file and now_file:
            found.modified.add(path)
        elif now_file:
            found.added.add(path)
        elif was_file:
            found.deleted.add(path)


def _entries(tree: pygit2.Tree | None) -> dict[str, pygit2.Object]:
    if tree is None:
        return {}
    return {obj.name: obj for obj in tree if obj.name is not None}
