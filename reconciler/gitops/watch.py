"""Watching a local repository's refs: a push or a commit becomes a callback within milliseconds.

``reconciler run --repo PATH`` starts one ``RefWatcher`` on the repository it reconciles; the
callback adds the environments that follow the moved branch to the work queue. File events are
only a hint: after each batch the watched branches' heads are read again with pygit2 and only a
head that actually moved is reported. So the daemon's own writes (notes, the status branch,
deploy branches), ``git gc`` packing refs and lock files that come and go cost one cheap re-read
and never a reconcile.

The whole Git directory is watched recursively (refs live in ``refs/heads/**``, ``packed-refs``
and, for repositories in the reftable format, ``reftable/``; ``HEAD`` sits at the top) and a
filter passes only those paths on: a single watch survives Git replacing ``packed-refs`` by
rename, which a watch on that file alone would not. A slow periodic re-read (``rescan``) backs
the events up, for file systems whose events get lost (network mounts, an inotify queue that
overflowed).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import watchfiles

from reconciler.catalogue import Code
from reconciler.gitops.errors import GitError
from reconciler.gitops.repository import Repository

log = logging.getLogger("reconciler.gitops.watch")

DEBOUNCE_MS = 50
"""Longest wait to group a burst of events; watchfiles' own default (1,600 ms) would be most of
the "within a second" the daemon promises for a local push."""
STEP_MS = 10
"""Quiet time that ends a batch early: one ``git commit`` writes its ref within a millisecond or
two of the objects, so 10 ms of silence means the batch is complete."""
RESCAN_SECONDS = 5.0
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
IGNORE_PREFIXES = ("refs/notes/", "refs/heads/reconciler/")
_REF_FILES = frozenset({"HEAD", "packed-refs"})

OnChange = Callable[[str, str], None]
OnError = Callable[[GitError], None]


class _StopSignal:
    """The ``stop_event`` watchfiles polls from its Rust loop every ``step``.

    Its first poll happens once the file-system watches exist, which is the moment ``start`` waits
    for: a commit after ``start`` returns is never missed. ``armed`` is set then.
    """

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.armed = threading.Event()

    def is_set(self) -> bool:
        self.armed.set()
        return self.stop.is_set()


class RefWatcher:
    """Calls ``on_change(branch, new_sha)`` from its own thread when a watched branch moves.

    ``branches`` are short names (``main``, ``release/1.x``). A branch that is deleted is not
    reported; when it comes back, its new head is. ``on_change`` should be quick (add a key to the
    queue): events that arrive while it runs are batched for the next re-read.
    """

    def __init__(
        self,
        repo: Repository,
        branches: Sequence[str],
        on_change: OnChange,
        *,
        ignore_prefixes: Sequence[str] = IGNORE_PREFIXES,
        on_error: OnError | None = None,
        rescan: float = RESCAN_SECONDS,
    ) -> None:
        # Branches live in the common Git directory; a linked work tree's HEAD lives in its
        # own, which is a folder of the common one: watching the common one sees both.
        self._git_dir = repo.common_dir.resolve()
        own = repo.git_dir.resolve()
        self._own_head = (
            (own / "HEAD").relative_to(self._git_dir).as_posix()
            if own != self._git_dir and own.is_relative_to(self._git_dir)
            else "HEAD"
        )
        self._branches = tuple(dict.fromkeys(branches))
        self._on_change = on_change
        self._on_error = on_error
        self._ignore = tuple(ignore_prefixes)
        self._rescan_ms = max(1, int(rescan * 1000))
        # A repository of our own: Repository asks for one per thread.
        self._repo = Repository.open(own)
        self._heads: dict[str, str | None] = {}
        self._checking = threading.Lock()  # ``start`` and the thread both re-read
        self._signal = _StopSignal()
        self._thread: threading.Thread | None = None

    @property
    def heads(self) -> dict[str, str | None]:
        """The heads last read, by branch (None: the branch does not exist)."""
        return dict(self._heads)

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Read the current heads, start watching, and return once the watches are in place.

        A head that moves between the first read and the watches taking hold is reported then.
        """
        if self._thread is not None:
            raise RuntimeError("the watcher was already started")
        self._heads = self._read_heads()
        self._thread = threading.Thread(target=self._run, name="ref-watcher", daemon=True)
        self._thread.start()
        if not self._signal.armed.wait(timeout):
            self.stop()
            raise GitError(Code.WATCH_FAILED, f"{self._git_dir}: file-system watches did not start")
        self._check()

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop within one ``step`` (10 ms) of the call, plus the callback running, if any."""
        self._signal.stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        try:
            for _ in watchfiles.watch(
                self._git_dir,
                watch_filter=self._relevant,
                debounce=DEBOUNCE_MS,
                step=STEP_MS,
                stop_event=self._signal,
                rust_timeout=self._rescan_ms,
                yield_on_timeout=True,  # an empty batch: the periodic re-read
                raise_interrupt=False,
            ):
                self._check()
        except Exception as exc:  # the Git directory vanished, a watch limit was reached
            log.exception("watching %s stopped", self._git_dir)
            self._report(GitError(Code.WATCH_FAILED, f"{self._git_dir}: watch failed: {exc}"))
        finally:
            self._signal.armed.set()  # never leave ``start`` waiting for a thread that died

    def _relevant(self, change: watchfiles.Change, path: str) -> bool:
        try:
            rel = Path(path).relative_to(self._git_dir).as_posix()
        except ValueError:
            return False
        if rel in _REF_FILES or rel == self._own_head or rel.startswith("reftable/"):
            return True
        return rel.startswith("refs/heads/") and not rel.startswith(self._ignore)

    def _check(self) -> None:
        """Re-read the heads and report each branch whose head moved to a commit."""
        with self._checking:
            self._check_locked()

    def _check_locked(self) -> None:
        try:
            current = self._read_heads()
        except GitError as error:
            self._report(error)
            return
        moved = [b for b in self._branches if current[b] != self._heads.get(b)]
        self._heads = current
        for branch in moved:
            sha = current[branch]
            if sha is None:
                continue
            try:
                self._on_change(branch, sha)
            except Exception:  # one failing callback must not end the watch
                log.exception("on_change(%s, %s) failed", branch, sha)

    def _read_heads(self) -> dict[str, str | None]:
        return {branch: self._repo.branch_head(branch) for branch in self._branches}

    def _report(self, error: GitError) -> None:
        log.warning("%s", error)
        if self._on_error is not None:
            self._on_error(error)
