"""``reconciler run``: the long-running process that keeps every environment matching Git.

One process holds the pieces together: a trigger (a watcher on a local repository's refs, or a
fetch loop on a remote's mirror, nudged by webhooks), a work queue of environments, worker
threads that apply each environment's followed commit with ``runner.apply_environment``, a
scheduler for periodic resyncs that look for drift, the status reporters, and the HTTP server.

The queue is keyed by environment: one run applies an environment's commit, because workloads of
an environment share resources; per-workload status comes from that run. With several replicas on
one PostgreSQL store, a lease per environment lets one replica at a time reconcile it.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler

from reconciler.catalogue import Code
from reconciler.config.models import Config, Environment
from reconciler.daemon.http import ApiReaders, ApiServer, Handlers, ReadinessCheck, Webhooks
from reconciler.daemon.metrics import DaemonMetrics, create_metrics
from reconciler.daemon.queue import WorkQueue
from reconciler.daemon.status import commit_status, drift_status, reporters_for
from reconciler.daemon.webhooks import (
    DeliveryCache,
    ForgeEvent,
    Provider,
    PullRequestEvent,
    PushEvent,
)
from reconciler.engine import Executor, StoreCheckpointer
from reconciler.gitops.errors import GitError
from reconciler.gitops.mirror import FetchLoop, Mirror
from reconciler.gitops.repository import Repository
from reconciler.gitops.status import FanOut, Phase
from reconciler.gitops.status.preview_notes import write_preview_note
from reconciler.gitops.watch import RefWatcher
from reconciler.observability import logger, span
from reconciler.pipeline import open_source
from reconciler.preview import preview
from reconciler.preview.daemon import PreviewTarget, preview_pull_request
from reconciler.preview.markdown import to_markdown
from reconciler.providers.base import DriverError
from reconciler.runner import RunOutcome, apply_environment, republish_environment
from reconciler.services import services_for
from reconciler.store.errors import StoreError
from reconciler.store.leases import LeaseManager
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
    holder: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
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
        self.store = Store.open(settings.store_url or default_store_url(self.repo.git_dir))
        self.metrics: DaemonMetrics = create_metrics()
        self.queue: WorkQueue[str] = WorkQueue()
        self.metrics.queue_depth.set_function(self.queue.depth)
        self._stopping = threading.Event()
        self._executors: set[Executor] = set()
        self._lock = threading.Lock()
        self._workers: list[threading.Thread] = []
        self._heads: dict[str, str | None] = {}
        self._previewed: dict[str, str] = {}
        self._scheduler = BackgroundScheduler(timezone=UTC)
        self._reporters: FanOut | None = None
        self.server = ApiServer(settings.listen, self._handlers())
        self.leases = LeaseManager(self.store, settings.holder, settings.lease_ttl)
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
        config = self.config()
        self._reporters = FanOut(
            reporters_for(self.repo, config, self.settings.target_url, remote=self.remote)
        )
        self.server.start()
        for name, env in config.sorted_environments():
            self._heads[name] = self._head(env)
            self.queue.add(name)
            seconds = max(env.resync.seconds, 1.0)
            self._scheduler.add_job(self.queue.add, "interval", seconds=seconds, args=[name])
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
        log.info(
            "daemon started",
            listen=f"{self.settings.listen[0]}:{self.server.port}",
            repository=str(self.repo.path),
        )

    def stop(self) -> None:
        """Stop taking work, let running steps finish (bounded), checkpoint, close."""
        self._stopping.set()
        self.queue.shutdown()
        with self._lock:
            for executor in self._executors:
                executor.cancel()
        deadline = time.monotonic() + self.settings.grace_period
        for thread in self._workers:
            thread.join(max(deadline - time.monotonic(), 0.1))
        self._scheduler.shutdown(wait=False)
        if self._fetch is not None:
            self._fetch.stop()
        self._previews.shutdown(wait=False, cancel_futures=True)
        self.leases.release_all()
        if self._reporters is not None:
            self._reporters.close(5.0)
        self.server.stop()
        self.store.close()
        log.info("daemon stopped")

    def wait(self) -> None:
        self._stopping.wait()

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
                self.queue.add(name)

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
        while not self._stopping.is_set():
            name = self.queue.get(timeout=0.5)
            if name is None:
                continue
            ok = True
            try:
                ok = self.reconcile(name)
            except (StoreError, GitError, DriverError) as exc:
                log.error("reconcile failed", environment=name, code=exc.code.id, error=str(exc))
                ok = False
            except Exception:  # a bug must not kill the worker: log it and back off
                log.exception("reconcile crashed", environment=name)
                ok = False
            finally:
                self.queue.done(name, ok=ok)

    def reconcile(self, name: str) -> bool:
        """Apply the commit environment ``name`` follows; False asks the queue to back off."""
        env = self.environments().get(name)
        if env is None:
            return True
        commit = self._head(env)
        if commit is None:
            log.warning("followed ref not found", environment=name, ref=env.follows)
            return True
        key = f"environment/{name}"
        if not self.leases.try_acquire(key):
            # Another replica holds it; look again once its lease could have run out.
            self.queue.add_after(name, self.leases.ttl / 2)
            return True
        try:
            if self.store.last_commit(name) == commit and self._settled(name, commit):
                # Reconciled already (here or by another replica): look for drift instead.
                return self._check_drift(name, env, commit)
            return self._reconcile(name, env, commit)
        finally:
            self.leases.release(key)

    def _check_drift(self, name: str, env: Environment, commit: str) -> bool:
        """Observe the target; report drift (OutOfSync) and, with ``self_heal``, correct it."""
        services = services_for(self.store, self.repo, name, env, actor="daemon")
        recorded = sorted(self.store.recorded(name).workloads)
        missing = [w for w in recorded if not services.target.observe(name, w).exists]
        self.metrics.drifted_resources.labels(environment=name).set(len(missing))
        if not missing:
            return True
        with span("resync", environment=name, revision=commit) as trace_id:
            log.warning("drift", workloads=missing, self_heal=env.self_heal)
            if env.self_heal:
                source = open_source(self.repo, commit)
                outcome = republish_environment(self.repo, services, source, name, env)
                self._finish(outcome, commit, trace_id, 0.0)
                return outcome.status == "Succeeded"
            if self._reporters is not None:
                self._reporters.report(
                    drift_status(name, commit, missing, trace_id, self.settings.target_url)
                )
        return True

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

    def _settled(self, name: str, commit: str) -> bool:
        runs = self.store.list_runs(name, limit=1)
        return not runs or runs[0].commit != commit or runs[0].status == "Succeeded"

    def _reconcile(self, name: str, env: Environment, commit: str) -> bool:
        started = time.monotonic()
        with span("reconcile", environment=name, revision=commit) as trace_id:
            source = open_source(self.repo, commit)
            self._report(name, commit, Phase.RUNNING, trace_id)
            services = services_for(self.store, self.repo, name, env, actor="daemon")
            executor = Executor(
                StoreCheckpointer(self.store), parallelism=self.settings.parallelism
            )
            with self._lock:
                self._executors.add(executor)
            try:
                outcome = apply_environment(
                    self.repo,
                    services,
                    source,
                    name,
                    env,
                    executor=executor,
                    trigger="daemon",
                    partial=True,
                )
            finally:
                with self._lock:
                    self._executors.discard(executor)
            self._finish(outcome, commit, trace_id, time.monotonic() - started)
        log.info(
            "reconciled",
            environment=name,
            revision=commit,
            status=outcome.status,
            message=outcome.message,
        )
        # Input errors will not go away by retrying; failed steps might.
        return outcome.error_code is None or outcome.error_code.value.number < 3000

    def _report(self, name: str, commit: str, phase: Phase, trace_id: str) -> None:
        if self._reporters is not None:
            self._reporters.report(
                commit_status(
                    name, commit, phase, run_id=trace_id, target_url=self.settings.target_url
                )
            )

    def _finish(self, outcome: RunOutcome, commit: str, trace_id: str, seconds: float) -> None:
        status = commit_status(
            outcome.environment,
            commit,
            None,
            outcome=outcome,
            target_url=self.settings.target_url,
            run_id=outcome.run.id if outcome.run else trace_id,
        )
        if self._reporters is not None:
            self._reporters.report(status)
        env = outcome.environment
        self.metrics.runs.labels(environment=env, result=status.phase.value).inc()
        self.metrics.last_reconcile.labels(environment=env).set(time.time())
        for workload, state in status.workloads.items():
            self.metrics.reconcile_duration.labels(environment=env, workload=workload).observe(
                seconds
            )
            self.metrics.sync.labels(
                environment=env, workload=workload, phase=status.phase.value
            ).inc()
            self.metrics.set_workload_status(env, workload, state.sync.value, state.health.value)

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
                environments=self._api_environments,
                workloads=self._api_workloads,
                run=self._api_run,
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

    def _api_environments(self) -> Sequence[dict[str, Any]]:
        known = {e.name: e for e in self.store.environments()}
        out = []
        for name, env in self.environments().items():
            record = known.get(name)
            out.append(
                {
                    "name": name,
                    "follows": env.follows,
                    "approval": env.approval,
                    "last_commit": record.last_commit if record else None,
                    "last_reconciled_at": _iso(record.last_reconciled_at) if record else None,
                }
            )
        return out

    def _api_workloads(self) -> Sequence[dict[str, Any]]:
        out = []
        for name in self.environments():
            for workload in self.store.recorded(name).workloads.values():
                out.append(
                    {
                        "environment": name,
                        "name": workload.name,
                        "commit": workload.commit,
                        "file": workload.file,
                        "status": workload.status,
                    }
                )
        return out

    def _api_run(self, run_id: str) -> dict[str, Any] | None:
        run = self.store.get_run(run_id)
        if run is None:
            return None
        steps = self.store.steps(run.id)
        return {
            "id": run.id,
            "environment": run.environment,
            "commit": run.commit,
            "status": run.status,
            "trigger": run.trigger,
            "started_at": _iso(run.started_at),
            "finished_at": _iso(run.finished_at),
            "error_code": run.error_code,
            "message": run.message,
            "steps": [
                {
                    "id": s.step_id,
                    "action": s.action,
                    "status": s.status,
                    "attempts": s.attempt,
                    "error_code": s.error_code,
                    "message": s.message,
                }
                for s in steps
            ],
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
