"""``reconciler run``: the long-running process that keeps every environment matching Git.

One process holds the pieces together: a trigger (a watcher on a local repository's refs, or a
fetch loop on a remote's mirror, nudged by webhooks), a work queue keyed by (environment,
workload), worker threads that hand its keys to the ``Reconciler`` (``daemon/reconcile.py``),
a scheduler for periodic resyncs that look for drift, the status reporters, previews of pull
requests and branches, and the HTTP server.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC
from functools import partial
from pathlib import Path

from apscheduler.schedulers.background import BackgroundScheduler

from reconciler.catalogue import Code
from reconciler.config.models import Config, Environment
from reconciler.daemon import api
from reconciler.daemon.http import ApiReaders, ApiServer, Handlers, ReadinessCheck, Webhooks
from reconciler.daemon.memory import tune_allocator
from reconciler.daemon.metrics import DaemonMetrics, create_metrics
from reconciler.daemon.queue import WorkQueue
from reconciler.daemon.reconcile import MAX_BATCH, Key, Reconciler, environment_of, workload_of
from reconciler.daemon.status import (
    reporters_for,
)
from reconciler.daemon.storewatch import POLL_SECONDS as STORE_POLL_SECONDS
from reconciler.daemon.storewatch import Mark, moved_under
from reconciler.daemon.webhooks import (
    DeliveryCache,
    ForgeEvent,
    Provider,
    PullRequestEvent,
    PushEvent,
)
from reconciler.engine.executor import SIGNAL_POLL
from reconciler.gitops.errors import GitError
from reconciler.gitops.mirror import FetchLoop, Mirror
from reconciler.gitops.repository import Repository
from reconciler.gitops.status import FanOut
from reconciler.gitops.status.preview_notes import write_preview_note
from reconciler.gitops.watch import RefWatcher
from reconciler.observability import logger, span
from reconciler.pipeline import open_source
from reconciler.preview import preview
from reconciler.preview.daemon import PreviewTarget, preview_pull_request
from reconciler.preview.markdown import to_markdown
from reconciler.providers.base import DriverError
from reconciler.store.envlock import environment_holders, workload_prefix
from reconciler.store.errors import StoreError
from reconciler.store.leases import LeaseManager, default_holder
from reconciler.store.store import Store
from reconciler.store.url import default_store_url
from reconciler.tree import matches

log = logger("reconciler.daemon")

POLL_SECONDS = 2.0
"""The fallback poll for refs the watcher cannot name; branches are seen within milliseconds."""

WEBHOOK_SECRET_ENV = "RECONCILER_WEBHOOK_SECRET"
"""One secret for every forge; ``RECONCILER_<FORGE>_WEBHOOK_SECRET`` overrides it per forge."""


@dataclass(frozen=True, kw_only=True)
class DaemonSettings:
    repo: Path | str
    """A local repository (work tree or bare), or the URL of a remote to mirror."""
    store_url: str | None = None
    listen: tuple[str, int] = ("127.0.0.1", 8080)
    branch: str | None = None
    workers: int = 2
    parallelism: int = 4
    holder: str = field(default_factory=default_holder)
    grace_period: float = 30.0
    target_url: str | None = None
    fetch_interval: float = 60.0
    mirror: Path | None = None
    """Where a remote is mirrored (default: under ~/.local/state/score-reconciler)."""
    lease_ttl: float = 30.0


def is_remote(repo: Path | str) -> bool:
    text = str(repo)
    return "://" in text or (text.startswith("git@") and ":" in text)


def mirror_path(url: str, given: Path | None) -> Path:
    if given is not None:
        return given
    state = Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state"))
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    return state / "score-reconciler" / "mirrors" / f"{digest}.git"


def webhook_secrets(environ: Mapping[str, str] = os.environ) -> dict[Provider, bytes]:
    secrets: dict[Provider, bytes] = {}
    shared = environ.get(WEBHOOK_SECRET_ENV, "")
    for provider in Provider:
        value = environ.get(f"RECONCILER_{str(provider).upper()}_WEBHOOK_SECRET", shared)
        if value:
            secrets[provider] = value.encode()
    return secrets


class Daemon:
    """Start with ``start()``, stop with ``stop()`` (SIGTERM does it in ``reconciler run``)."""

    def __init__(self, settings: DaemonSettings) -> None:
        self.settings = settings
        self._local = threading.local()
        self.remote = str(settings.repo) if is_remote(settings.repo) else None
        self._mirror: Mirror | None = None
        self._fetch: FetchLoop | None = None
        if self.remote is not None:
            if settings.branch is None:
                raise GitError(Code.REVISION_NOT_FOUND, "a remote repository needs --branch")
            self._mirror = Mirror(
                self.remote, mirror_path(self.remote, settings.mirror), branches=[settings.branch]
            )
            self._mirror.fetch()
            self.path = self._mirror.path
        else:
            self.path = Repository.open(Path(settings.repo)).path
        self.store = Store.open(settings.store_url or default_store_url(self.repo.common_dir))
        self.metrics: DaemonMetrics = create_metrics()
        self.queue: WorkQueue[Key] = WorkQueue(group=environment_of)
        self.metrics.queue_depth.set_function(self.queue.depth)
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._workers: list[threading.Thread] = []
        self._busy: Counter[str] = Counter()  # environments workers are on
        self._busy_lock = threading.Lock()
        self._marks: dict[str, Mark] = {}  # per environment, the store's marks after our work
        self._heads: dict[str, str | None] = {}
        self._previewed: dict[str, str] = {}
        self._scheduler = BackgroundScheduler(timezone=UTC)
        self.leases = LeaseManager(self.store, settings.holder, settings.lease_ttl)
        self.work = Reconciler(
            store=self.store,
            queue=self.queue,
            leases=self.leases,
            metrics=self.metrics,
            repo=lambda: self.repo,
            environments=self.environments,
            head=self._head,
            parallelism=settings.parallelism,
            target_url=settings.target_url,
            remote=self.remote,
        )
        self.server = ApiServer(settings.listen, self._handlers())
        self._poller: threading.Thread | None = None
        self._previews = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reconciler-preview")

    @property
    def repo(self) -> Repository:
        """This thread's own handle: a Repository (and pygit2) serves one thread at a time."""
        repo: Repository | None = getattr(self._local, "repo", None)
        if repo is None:
            repo = self._local.repo = Repository.open(self.path)
        return repo

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        tune_allocator()  # before any thread of ours allocates (daemon/memory.py)
        config = self.config()
        self._marks = self.store.marks()
        self.work.reporters = FanOut(
            reporters_for(self.repo, config, self.settings.target_url, remote=self.remote)
        )
        self.server.start()
        for name, env in config.sorted_environments():
            self._heads[name] = self._head(env)
            self.queue.add((name, ""))
            seconds = max(env.resync.seconds, 1.0)
            self._scheduler.add_job(self.queue.add, "interval", seconds=seconds, args=[(name, "")])
        self._scheduler.start()
        for i in range(self.settings.workers):
            thread = threading.Thread(target=self._work, name=f"reconciler-worker-{i}", daemon=True)
            thread.start()
            self._workers.append(thread)
        if self._mirror is not None:
            self._start_fetching(config)
        else:
            self._poller = threading.Thread(
                target=self._watch, name="reconciler-watch", daemon=True
            )
            self._poller.start()
        threading.Thread(target=self._renew, name="reconciler-leases", daemon=True).start()
        threading.Thread(
            target=self._watch_store, name="reconciler-store-watch", daemon=True
        ).start()
        log.info(
            "daemon started",
            listen=f"{self.settings.listen[0]}:{self.server.port}",
            repository=str(self.repo.path),
        )

    def stop(self) -> None:
        """Stop taking work, let running steps finish (bounded), checkpoint, close."""
        self._stopping.set()
        self.queue.shutdown()
        self.work.cancel()
        deadline = time.monotonic() + self.settings.grace_period
        for thread in self._workers:
            thread.join(max(deadline - time.monotonic(), 0.1))
        self._scheduler.shutdown(wait=False)
        if self._fetch is not None:
            self._fetch.stop()
        self._previews.shutdown(wait=False, cancel_futures=True)
        self.leases.release_all()
        if self.work.reporters is not None:
            self.work.reporters.close(5.0)
        self.server.stop()
        self.store.close()
        log.info("daemon stopped")

    def wait(self) -> None:
        """Until ``request_stop``; in slices, so that the main thread comes back to the
        interpreter and runs a signal handler whose signal the kernel gave another thread."""
        while not self._stopping.wait(SIGNAL_POLL):
            pass

    def request_stop(self) -> None:
        """Safe in a signal handler: only sets a flag that ``wait`` returns on."""
        self._stopping.set()

    # -- configuration and triggers ----------------------------------------------------------

    def config(self) -> Config:
        return open_source(self.repo, self._config_ref()).config

    def _config_ref(self) -> str:
        branch = self.settings.branch
        return f"refs/heads/{branch}" if branch else "HEAD"

    def _start_fetching(self, config: Config) -> None:
        """One fetch per tick (and per webhook) for every followed branch, not one per workload."""
        assert self._mirror is not None
        assert self.remote is not None
        followed = {self.settings.branch or ""} | {
            e.follows.removeprefix("refs/heads/")
            for _, e in config.sorted_environments()
            if e.follows.startswith("refs/heads/")
        }
        self._mirror = Mirror(self.remote, self._mirror.path, branches=sorted(followed - {""}))
        self._fetch = FetchLoop(
            self._mirror,
            on_change=lambda move: self._moved(),
            on_error=lambda exc: log.warning("fetch failed", code=exc.code.id, error=exc.message),
            interval=self.settings.fetch_interval,
        )
        self._fetch.start()

    def _renew(self) -> None:
        while not self._stopping.wait(self.leases.renew_interval):
            try:
                lost = self.leases.renew()
            except StoreError as exc:
                log.warning("lease renewal failed", code=exc.code.id, error=exc.message)
                continue
            except Exception:  # the renewals must go on: leases not renewed go to others
                log.exception("lease renewal crashed")
                continue
            for key in sorted(lost):
                log.warning("lease lost", code=Code.LEASE_LOST.id, lease=key)

    def environments(self) -> dict[str, Environment]:
        return dict(self.config().sorted_environments())

    def _head(self, env: Environment) -> str | None:
        follows = env.follows
        if follows == "HEAD" and self.settings.branch:
            follows = f"refs/heads/{self.settings.branch}"
        try:
            return self.repo.resolve(follows)
        except GitError:
            return None

    def _watch(self) -> None:
        """Enqueue an environment as soon as the ref it follows moves.

        watchfiles on the ref files answers within milliseconds for branches; a slow poll
        covers what it cannot name (``HEAD``, tags, refs). Either way only the followed refs
        count, so the daemon's own notes, status and deploy branches never trigger it.
        """
        follows = {e.follows for e in self.environments().values()}
        branches = sorted(
            f.removeprefix("refs/heads/") for f in follows if f.startswith("refs/heads/")
        )
        watcher = RefWatcher(self.repo, branches, lambda ref, sha: self._moved())
        try:
            watcher.start()
        except GitError as exc:
            log.warning("ref watcher unavailable; polling", code=exc.code.id, error=exc.message)
        try:
            while not self._stopping.wait(POLL_SECONDS):
                self._moved()
        finally:
            watcher.stop()

    def _moved(self) -> None:
        with self._lock:
            self._enqueue_moved()

    def _enqueue_moved(self) -> None:
        self._preview_branches()
        for name, env in self.environments().items():
            head = self._head(env)
            if head != self._heads.get(name):
                self._heads[name] = head
                self.queue.add((name, ""))

    def _on_webhook(self, event: ForgeEvent) -> bool:
        if isinstance(event, PullRequestEvent):
            self._previews.submit(self._preview, event)
            return True
        if not isinstance(event, PushEvent):
            return False
        followed = {e.follows for e in self.environments().values()}
        if self.settings.branch:
            followed.add(f"refs/heads/{self.settings.branch}")
        if event.ref not in followed and "HEAD" not in followed:
            return False
        if self._fetch is not None:
            self._fetch.trigger()
        else:
            self._moved()
        return True

    # -- work --------------------------------------------------------------------------------

    def _work(self) -> None:
        """Take a key and its environment's other ready workload keys, and process them; an
        environment is worked on by one worker at a time: two runs of one environment at once
        contend for the store's writer and the GIL, and each re-plans after the other's
        writes (a first reconcile of 1,000 workloads took 51 s with two, 23 s with one)."""
        while not self._stopping.is_set():
            key = self.queue.get(timeout=0.5, skip=self._busy_environment)
            if key is None:
                continue
            with self._busy_lock:  # a hint: two workers racing here both go on, as before
                self._busy[key[0]] += 1
            try:
                batch = [key]
                if key[1]:
                    batch += self.queue.take_ready(
                        partial(workload_of, key[0]), MAX_BATCH - 1, group=key[0]
                    )
                self.work.process(key[0], batch)
            finally:
                mark = self._mark_of(key[0])
                with self._busy_lock:
                    if mark is not None:
                        self._marks[key[0]] = mark
                    self._busy[key[0]] -= 1
                    if not self._busy[key[0]]:
                        del self._busy[key[0]]

    def _mark_of(self, environment: str) -> Mark | None:
        """The store's marks of ``environment`` now (None when the store cannot say: the
        watch then sees a move and queues the environment again, which is what it needs)."""
        try:
            return self.store.marks().get(environment, (None, None))
        except StoreError:
            return None

    def _watch_store(self) -> None:
        """Queue an environment that another process (``reconciler approve``, ``apply``...)
        wrote to, once that process is done, so that its verdict follows within seconds."""
        while not self._stopping.wait(STORE_POLL_SECONDS):
            try:
                current = self.store.marks()
                with self._busy_lock:
                    moved = moved_under(self._marks, current, self._busy)
                for name in moved:
                    if self._claimed(name):
                        continue  # its run goes on; look again at the next poll
                    with self._busy_lock:
                        if name in self._busy:
                            continue
                        self._marks[name] = current[name]
                    log.info("store changed by another process", environment=name)
                    self.queue.add((name, ""))
            except StoreError as exc:
                log.warning("store watch failed", code=exc.code.id, error=exc.message)
            except Exception:  # the watch must go on; a resync still catches up
                log.exception("store watch crashed")

    def _claimed(self, environment: str) -> bool:
        """Whether another process leases the environment or one of its workloads."""
        if environment_holders(self.leases, environment):
            return True
        return bool(self.leases.others(workload_prefix(environment)))

    def _busy_environment(self, key: Key) -> bool:
        """Whether another worker is on ``key``'s environment (called under the queue's lock)."""
        return key[0] in self._busy

    def _preview_branches(self) -> None:
        """Preview the heads of branches matching ``previews.branches`` that moved."""
        settings = self.config().previews
        if not settings.branches:
            return
        followed = sorted(e.follows for e in self.environments().values() if e.follows != "HEAD")
        base = settings.base or self.settings.branch or (followed[0] if followed else "HEAD")
        for branch, head in self.repo.branches().items():
            if branch.startswith("reconciler/") or not matches(branch, list(settings.branches)):
                continue
            if self._previewed.get(branch) != head:
                self._previewed[branch] = head
                self._previews.submit(self._preview_branch, branch, head, base)

    def _preview_branch(self, branch: str, head: str, base: str) -> None:
        with span("preview", branch=branch, revision=head):
            try:
                result = preview(self.repo, base, head, recorded=self.store)
                write_preview_note(self.repo, head, to_markdown(result))
                log.info("previewed branch", exit_code=result.exit_code)
            except (GitError, StoreError, DriverError) as exc:
                log.warning("preview failed", code=exc.code.id, error=exc.message)
            except Exception:  # a preview must never take the daemon down
                log.exception("preview crashed")

    def _preview(self, event: PullRequestEvent) -> None:
        """Preview a pull request's head and post it; nothing is applied for a pull request."""
        forge = self.config().reporters.forge
        target = None
        if forge is not None:
            target = PreviewTarget(
                kind=forge.kind,
                url=forge.url,
                repository=forge.repository,
                token_env=forge.token_env,
                target_url=self.settings.target_url,
            )
        with span("preview", pull_request=str(event.number), revision=event.head_sha):
            try:
                if self._mirror is not None:
                    prefix = "merge-requests" if event.provider == "gitlab" else "pull"
                    self._mirror.fetch_refs(
                        [
                            f"+refs/{prefix}/{event.number}/head:"
                            f"refs/reconciler/pull/{event.number}",
                            f"+refs/heads/{event.base_ref}:refs/heads/{event.base_ref}",
                        ]
                    )
                report = preview_pull_request(self.repo, event, target=target, recorded=self.store)
                log.info("previewed", exit_code=report.preview.exit_code)
            except (GitError, StoreError, DriverError) as exc:
                log.warning("preview failed", code=exc.code.id, error=exc.message)
            except Exception:  # a preview must never take the daemon down
                log.exception("preview crashed")

    # -- HTTP --------------------------------------------------------------------------------

    def _handlers(self) -> Handlers:
        return Handlers(
            metrics=self.metrics,
            webhooks=Webhooks(
                secrets=webhook_secrets(),
                on_event=self._on_webhook,
                deliveries=DeliveryCache(time.monotonic),
            ),
            api=ApiReaders(
                environments=lambda: api.environments(self.store, self.environments()),
                workloads=lambda: api.workloads(self.store, self.environments()),
                run=lambda run_id: api.run(self.store, run_id),
            ),
            readiness=(
                ReadinessCheck("store", self._store_ready),
                ReadinessCheck("repository", self._repository_ready),
            ),
        )

    def _store_ready(self) -> str | None:
        try:
            self.store.revision()
        except StoreError as exc:
            return f"{exc.code.id} {exc.message}"
        return None

    def _repository_ready(self) -> str | None:
        try:
            self.repo.resolve(self.settings.branch or "HEAD")
        except GitError as exc:
            return f"{exc.code.id} {exc.message}"
        return None
