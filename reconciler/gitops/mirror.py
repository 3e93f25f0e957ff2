"""A local bare mirror of a remote repository, and the loop that keeps it fresh.

When the reconciled repository lives on a forge, the daemon reads commits from a bare mirror it
owns (``Repository.open(mirror.path)``) and never from the network. ``Mirror.fetch`` brings the
watched branches up to date in one fetch, whatever the number of environments and workloads that
follow them, and says which heads moved. ``FetchLoop`` calls it on an interval (jittered, so that
replicas started together do not fetch together) and at once when ``trigger`` is called: the
webhook handler's way of saying "the forge has news".

The first fetch makes the mirror (``git init --bare`` then fetch, rather than a clone: a clone
that fails half-way leaves a folder that is neither empty nor a repository; an init that fetched
nothing is simply fetched again next time). Branches map to the same names in the mirror with
forced updates (``+refs/heads/B:refs/heads/B``) so that a force-push lands, and is reported as
such; nothing else in the mirror is touched, so the daemon's notes and status branch live there
undisturbed.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pygit2

from reconciler.catalogue import Code
from reconciler.gitops.errors import GitError

log = logging.getLogger("reconciler.gitops.mirror")

CONNECT_TIMEOUT = 10.0
IO_TIMEOUT = 60.0
STOP_TIMEOUT = 5.0
REMOTE_UNREACHABLE = Code.REMOTE_UNREACHABLE


@dataclass(frozen=True, slots=True)
class HeadMove:
    """A watched branch that moved in the mirror; ``old`` is None the first time it is seen.

    ``forced`` means the new head does not descend from the old one (a force-push or a reset):
    commits the daemon reconciled may no longer be on the branch.
    """

    branch: str
    old: str | None
    new: str
    forced: bool = False


def display_url(url: str) -> str:
    """``url`` without a password or token, for messages and logs.

    Over HTTP a user name alone is often the token itself (``https://TOKEN@forge/...``), so it
    is hidden too; ``ssh://git@host`` keeps its harmless user.
    """
    parts = urlsplit(url)
    secret_user = parts.scheme in ("http", "https") and parts.username is not None
    if parts.password is None and not secret_user:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = "***@" if parts.password is None else f"{parts.username}:***@"
    return urlunsplit(parts._replace(netloc=user + host))


class Mirror:
    """The bare mirror of ``url`` at ``path``, holding ``branches`` (short names).

    ``fetch`` serialises itself: two threads calling it fetch one after the other, never at once.
    libgit2's network timeouts are process-wide settings; the last ``Mirror`` made sets them.
    """

    def __init__(
        self,
        url: str,
        path: Path,
        *,
        branches: Sequence[str],
        connect_timeout: float = CONNECT_TIMEOUT,
        io_timeout: float = IO_TIMEOUT,
    ) -> None:
        self.url = url
        self.path = path
        self.branches = tuple(dict.fromkeys(branches))
        self._lock = threading.Lock()
        self._repo: pygit2.Repository | None = None
        pygit2.settings.server_connect_timeout = int(connect_timeout * 1000)
        pygit2.settings.server_timeout = int(io_timeout * 1000)

    def heads(self) -> dict[str, str]:
        """The mirror's heads of the watched branches it has (none before the first fetch)."""
        with self._lock:
            return self._heads(self._open())

    def fetch(self) -> dict[str, str]:
        """Fetch the watched branches; the ones whose head moved, with their new head."""
        return {move.branch: move.new for move in self.fetch_moves()}

    def fetch_moves(self) -> tuple[HeadMove, ...]:
        """Fetch the watched branches and say how each head that moved, moved.

        Raises ``GitError`` when the remote cannot be reached or refuses: the mirror is left as it
        was, and the next fetch tries again.
        """
        with self._lock:
            repo = self._open()
            before = self._heads(repo)
            refspecs = [f"+refs/heads/{b}:refs/heads/{b}" for b in self.branches]
            try:
                repo.remotes.create_anonymous(self.url).fetch(refspecs, message="reconciler fetch")
            except (pygit2.GitError, OSError) as exc:
                raise GitError(
                    REMOTE_UNREACHABLE, f"{display_url(self.url)}: fetch failed: {exc}"
                ) from exc
            after = self._heads(repo)
            return tuple(
                HeadMove(b, before.get(b), sha, self._forced(repo, before.get(b), sha))
                for b, sha in after.items()
                if before.get(b) != sha
            )

    def fetch_refs(self, refspecs: Sequence[str]) -> None:
        """Fetch other refs once (a pull request's head, ``+refs/pull/7/head:refs/...``)."""
        with self._lock:
            repo = self._open()
            try:
                repo.remotes.create_anonymous(self.url).fetch(
                    list(refspecs), message="reconciler fetch"
                )
            except (pygit2.GitError, OSError) as exc:
                raise GitError(
                    REMOTE_UNREACHABLE, f"{display_url(self.url)}: fetch failed: {exc}"
                ) from exc

    def _open(self) -> pygit2.Repository:
        if self._repo is not None:
            return self._repo
        try:
            found = pygit2.discover_repository(str(self.path)) if self.path.exists() else None
            if found is not None and Path(found).resolve() == self.path.resolve():
                self._repo = pygit2.Repository(found)
            elif self.path.exists() and any(self.path.iterdir()):
                raise GitError(
                    Code.MIRROR_PATH_INVALID,
                    f"{self.path}: not a bare repository and not empty; refusing to mirror there",
                )
            else:
                self._repo = pygit2.init_repository(str(self.path), bare=True)
        except pygit2.GitError as exc:
            raise GitError(Code.GIT_READ_FAILED, f"{self.path}: cannot open: {exc}") from exc
        except OSError as exc:
            raise GitError(Code.GIT_READ_FAILED, f"{self.path}: {exc.strerror}") from exc
        return self._repo

    def _heads(self, repo: pygit2.Repository) -> dict[str, str]:
        heads: dict[str, str] = {}
        try:
            for branch in self.branches:
                ref = repo.references.get(f"refs/heads/{branch}")
                if ref is not None:
                    heads[branch] = str(ref.target)
        except (pygit2.GitError, ValueError) as exc:  # a corrupt ref file in the mirror
            raise GitError(Code.GIT_READ_FAILED, f"{self.path}: cannot read heads: {exc}") from exc
        return heads

    @staticmethod
    def _forced(repo: pygit2.Repository, old: str | None, new: str) -> bool:
        if old is None:
            return False
        try:
            return not repo.descendant_of(new, old)
        except (KeyError, ValueError, pygit2.GitError):
            return True  # the old head is gone from the object database: not an ancestor


Clock = Callable[[], float]
Sleep = Callable[[threading.Event, float], None]
"""Wait until the event is set or the seconds pass (``Event.wait``, or a fake in tests)."""
Uniform = Callable[[float, float], float]


def _sleep(event: threading.Event, seconds: float) -> None:
    event.wait(seconds)


class FetchLoop:
    """Fetches ``mirror`` every ``interval`` seconds (± ``jitter`` of it) and whenever triggered.

    The first fetch happens as soon as the loop starts. ``on_change`` gets each ``HeadMove``;
    ``on_error`` gets the ``GitError`` of a failed fetch, which is retried at the next tick. A
    ``trigger`` during a fetch gets one more fetch right after it (the push it announces may have
    landed after the remote listed its refs); several triggers in a row get one fetch.
    """

    def __init__(
        self,
        mirror: Mirror,
        *,
        on_change: Callable[[HeadMove], None],
        on_error: Callable[[GitError], None] | None = None,
        interval: float = 60.0,
        jitter: float = 0.1,
        clock: Clock = time.monotonic,
        sleep: Sleep = _sleep,
        uniform: Uniform = random.uniform,
    ) -> None:
        if interval <= 0 or not 0 <= jitter < 1:
            raise ValueError("interval must be positive and jitter in [0, 1)")
        self.mirror = mirror
        self._on_change = on_change
        self._on_error = on_error
        self._interval = interval
        self._jitter = jitter
        self._clock = clock
        self._sleep = sleep
        self._uniform = uniform
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.fetches = 0
        self.failures = 0

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the fetch loop was already started")
        self._thread = threading.Thread(target=self._run, name="fetch-loop", daemon=True)
        self._thread.start()

    def trigger(self) -> None:
        """Fetch now (or right after the fetch under way)."""
        self._wake.set()

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop; a fetch under way is left to finish (bounded by the network timeouts)."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def next_delay(self) -> float:
        """The wait before the next periodic fetch: the interval, jittered."""
        spread = self._interval * self._jitter
        return self._interval + self._uniform(-spread, spread)

    def run_once(self) -> tuple[HeadMove, ...]:
        """One fetch, reported through the callbacks; no moves when it failed."""
        self.fetches += 1
        try:
            moves = self.mirror.fetch_moves()
        except GitError as error:
            self.failures += 1
            log.warning("%s", error)
            if self._on_error is not None:
                self._on_error(error)
            return ()
        for move in moves:
            try:
                self._on_change(move)
            except Exception:  # one failing callback must not end the loop
                log.exception("on_change(%s) failed", move)
        return moves

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()  # a trigger from now on asks for another fetch after this one
            self.run_once()
            deadline = self._clock() + self.next_delay()
            while not self._stopping.is_set() and not self._wake.is_set():
                remaining = deadline - self._clock()
                if remaining <= 0:
                    break
                self._sleep(self._wake, remaining)
