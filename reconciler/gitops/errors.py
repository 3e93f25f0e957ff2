"""The one exception this package raises, so that callers never see pygit2's own.

Every pygit2 failure is translated where it happens (``raise GitError(...) from exc``) into a
catalogue code: the daemon maps codes to statuses in one place and never imports pygit2.
"""

from __future__ import annotations

from reconciler.catalogue import Code


class GitError(Exception):
    """A repository, revision or object that cannot be read, with the code that says which."""

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return self.message
