"""``reconciler run``: the long-running process that keeps every environment matching Git.

One process holds the pieces together: a trigger (a watcher on a local repository's refs, or a
fetch loop on a remote's mirror, nudged by webhooks), a work queue, worker threads that apply
each environment's followed commit with ``runner.apply_environment``, a scheduler for periodic
resyncs that look for drift, the status reporters, and the HTTP server.

The queue is keyed by (environment, workload). The key of an environment itself (workload "")
plans the environment's followed commit and queues the keys of the workloads it changes; a
worker that takes a workload's key takes the other ready keys of that environment along and
applies them in one run scoped to them (``apply_environment(scope=...)``), so a commit touching
one workload of a thousand runs that one, and a first reconcile is not a thousand runs. Each
workload backs off on its own after a failure. When no workload has changes left, the
environment's key records the commit as reconciled, reports the environment's verdict (the
forge's status), and looks for drift.

With several replicas on one PostgreSQL store, each workload is leased (``workload/<env>/<name>``)
by the replica that applies it, so each is reconciled by one replica at a time; a replica that
dies stops renewing its leases, and its workloads go to the others within the lease's ttl.
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
from functools import partial
from pathlib import Path
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler

from reconciler.catalogue import Code
from reconciler.config.models import Config, Environment
from reconciler.daemon.http import ApiReaders, ApiServer, Handlers, ReadinessCheck, Webhooks
from reconciler.daemon.metrics import DaemonMetrics, create_metrics
from reconciler.daemon.queue import WorkQueue
from reconciler.daemon.status import (
    commit_status,
    drift_status,
    environment_verdict,
    reporters_for,
)
from reconciler.daemon.webhooks import (
    DeliveryCache,
    ForgeEvent,
    Provider,
    PullRequestEvent,
    PushEvent,
)
from reconciler.engine import Executor, StepStatus, StoreCheckpointer
from reconciler.gitops.errors import GitError
from reconciler.gitops.mirror import FetchLoop, Mirror
from reconciler.gitops.repository import Repository
from reconciler.gitops.status import FanOut, Phase
from reconciler.gitops.status.preview_notes import write_preview_note
from reconciler.gitops.watch import RefWatcher
from reconciler.observability import logger, span
from reconciler.pipeline import EnvironmentPlan, open_source, plan_environment
from reconciler.plan.model import ActionKind, Subject
from reconciler.plan.scope import changed_workloads
from reconciler.preview import preview
from reconciler.preview.daemon import PreviewTarget, preview_pull_request
from reconciler.preview.markdown import to_markdown
from reconciler.providers.base import DriverError
from reconciler.runner import (
    RunOutcome,
    apply_environment,
    new_run_id,
    republish_environment,
)
from reconciler.services import services_for
from reconciler.store.errors import StoreError
from reconciler.store.leases import LeaseManager
from reconciler.store.records import RunRecord
from reconciler.store.store import Store
from reconciler.store.url import default_store_url
from reconciler.tree import matches

log = logger("reconciler.daemon")

Key = tuple[str, str]
"""(environment, workload); the workload "" stands for the environment itself."""

ENVIRONMENT_RUN = "*"
"""A stand-in workload for changes that no workload owns: a run of the whole environment."""

MAX_BATCH = 500
"""Workloads of one environment applied in one run at most: large enough that a first
reconcile is a few runs, small enough that other environments get a worker between them."""

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
        self.queue: WorkQueue[Key] = WorkQueue()
        self.metrics.queue_depth.set_function(self.queue.depth)
        self._stopping = threading.Event()
        self._executors: set[Executor] = set()
        self._lock = threading.Lock()
        self._workers: list[threading.Thread] = []
        self._heads: dict[str, str | None] = {}
        self._dispatched: dict[str, str] = {}  # environment -> the commit its keys were queued for
        self._verdicts: dict[str, tuple[str, Phase]] = {}  # environment -> last verdict reported
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
        while not self._stopping.is_set():
            key = self.queue.get(timeout=0.5)
            if key is None:
                continue
            batch = [key]
            if key[1]:
                batch += self.queue.take_ready(partial(_workload_of, key[0]), MAX_BATCH - 1)
            self._process(key[0], batch)

    def _process(self, name: str, keys: Sequence[Key]) -> None:
        """Dispatch an environment or reconcile a batch of its workloads, then finish the keys
        with the answer for each (False backs off)."""
        results: Mapping[str, bool] = {}
        try:
            if keys[0][1]:
                results = self.reconcile(name, [k[1] for k in keys])
            else:
                results = {"": self.dispatch(name)}
        except (StoreError, GitError, DriverError) as exc:
            log.error("reconcile failed", environment=name, code=exc.code.id, error=str(exc))
            results = {k[1]: False for k in keys}
        except Exception:  # a bug must not kill the worker: log it and back off
            log.exception("reconcile crashed", environment=name)
            results = {k[1]: False for k in keys}
        finally:
            for key in keys:
                self.queue.done(key, ok=results.get(key[1], True))

    def dispatch(self, name: str) -> bool:
        """Plan the commit environment ``name`` follows and queue the workloads it changes; with
        none left, settle the commit (record it, report the verdict) and look for drift."""
        env = self.environments().get(name)
        if env is None:
            return True
        commit = self._head(env)
        if commit is None:
            log.warning("followed ref not found", environment=name, ref=env.follows)
            return True
        source = open_source(self.repo, commit)
        planned = plan_environment(self.repo, self.store, source, name, env)
        if planned.plan is None or any(d.file == "reconciler.yaml" for d in planned.diagnostics):
            self._verdict(planned, commit, run_id=new_run_id())
            return True
        pending = self._pending(name, planned)
        fresh = self._dispatched.get(name) != commit
        self._dispatched[name] = commit
        if pending:
            if fresh:
                self._report(name, commit, Phase.RUNNING, new_run_id())
            for workload in sorted(pending):
                key = (name, workload)
                if fresh or not self.queue.failures(key):  # a resync does not cut a backoff short
                    self.queue.add(key)
            self._report_failures(name, commit, planned, pending)
            return True
        return self._settle(name, env, commit, planned)

    def _pending(self, name: str, planned: EnvironmentPlan) -> frozenset[str]:
        assert planned.plan is not None
        deleting = [
            a.id
            for a in planned.plan.changes()
            if a.kind is Subject.RESOURCE and a.action is ActionKind.DELETE
        ]
        owners = {
            uid: record.source_workload or ""
            for uid, record in self.store.resources_of(name, deleting).items()
        }
        pending = changed_workloads(planned.plan, planned.desired, owners)
        if not pending and planned.plan.summary.has_changes:
            # Changes no workload owns (a resource nobody brought): the environment's own run.
            pending = frozenset({ENVIRONMENT_RUN})
        return pending

    def reconcile(self, name: str, workloads: Sequence[str]) -> dict[str, bool]:
        """Apply ``workloads`` of environment ``name`` in one run: those this replica can lease.

        Per workload, False asks the queue to back off. A workload another replica holds is
        looked at again once that lease could have run out; it will have nothing left to do
        if the other replica finished it.
        """
        env = self.environments().get(name)
        if env is None:
            return {}
        commit = self._head(env)
        if commit is None:
            return {}
        leases = {f"workload/{name}/{w}": w for w in workloads}
        held = self.leases.try_acquire_many(leases)
        for lease, workload in leases.items():
            if lease not in held:
                self.queue.add_after((name, workload), self.leases.ttl / 2)
        mine = sorted(leases[lease] for lease in held)
        if not mine:
            return {}
        try:
            scope = None if ENVIRONMENT_RUN in mine else mine
            results = self._reconcile(name, env, commit, scope)
        finally:
            self.leases.release_many(held)
        self.queue.add((name, ""))  # settle the commit once nothing is left
        return results

    def _settle(self, name: str, env: Environment, commit: str, planned: EnvironmentPlan) -> bool:
        """No workload has changes left: record the commit as reconciled and report the
        environment's verdict, once; on a commit settled before, look for drift instead."""
        lease = f"environment/{name}"
        if not self.leases.try_acquire(lease):
            # Another replica settles it or heals drift; look again once its lease could end.
            self.queue.add_after((name, ""), self.leases.ttl / 2)
            return True
        try:
            self._close_stale_runs(name, commit)
            settled = self.store.last_commit(name) == commit
            if not settled and not planned.failed:
                self.store.set_last_commit(name, commit)
                self.metrics.last_reconcile.labels(environment=name).set(time.time())
            if not settled or planned.failed:
                self._verdict(planned, commit, run_id=self._latest_run(name, commit))
            if settled:
                return self._check_drift(name, env, commit)
            return True
        finally:
            self.leases.release(lease)

    def _close_stale_runs(self, name: str, commit: str) -> None:
        """Close the runs a dead process left open, now that nothing is left to do at
        ``commit``: runs of older commits, and runs of this one whose workloads other runs
        finished. A run whose workloads some replica still leases is alive and left alone."""
        for run in self.store.list_runs(name, limit=50):
            if run.commit == commit and run.status not in ("Pending", "Running"):
                continue
            if run.commit != commit and run.status not in ("Pending", "Running", "WaitingApproval"):
                continue
            if run.scope is None:
                if run.commit == commit:
                    continue  # an unscoped run (``reconciler apply``) of this commit: its own
            elif self.leases.taken(f"workload/{name}/{w}" for w in run.scope):
                continue
            message = (
                f"superseded by {commit[:7]}"
                if run.commit != commit
                else "its workloads were reconciled by other runs"
            )
            self.store.update_run(run.id, status="Failed", message=message, finished=True)
            log.info("closed a stale run", run_id=run.id, environment=name, reason=message)

    def _latest_run(self, name: str, commit: str) -> str:
        runs = self.store.list_runs(name, limit=1)
        return runs[0].id if runs and runs[0].commit == commit else new_run_id()

    def _report_failures(
        self, name: str, commit: str, planned: EnvironmentPlan, pending: frozenset[str]
    ) -> None:
        """While workloads are left: if runs of them failed (or wait for approval) on this
        commit, the environment's verdict says so now rather than after their backoff."""
        stuck = [
            run
            for run in self.store.list_runs(name, limit=20)
            if run.commit == commit
            and run.status in ("Failed", "WaitingApproval")
            and (run.scope is None or not pending.isdisjoint(run.scope))
        ]
        if stuck:
            self._verdict(planned, commit, run_id=stuck[0].id, failed=stuck)

    def _verdict(
        self,
        planned: EnvironmentPlan,
        commit: str,
        *,
        run_id: str,
        failed: Sequence[RunRecord] = (),
    ) -> None:
        """Report the environment's verdict on ``commit``, unless it was the last one said."""
        status = environment_verdict(
            planned, commit, run_id=run_id, failed=failed, target_url=self.settings.target_url
        )
        name = planned.environment
        with self._lock:
            if self._verdicts.get(name) == (commit, status.phase):
                return
            self._verdicts[name] = (commit, status.phase)
        log.info("verdict", environment=name, revision=commit, phase=str(status.phase))
        if self._reporters is not None:
            self._reporters.report(status)

    def _check_drift(self, name: str, env: Environment, commit: str) -> bool:
        """Observe the target; report drift (OutOfSync) and, with ``self_heal``, correct it."""
        services = services_for(
            self.store, self.repo, name, env, actor="daemon", remote=self.remote
        )
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
                self._finish(outcome, commit, trace_id, 0.0, scope=missing)
                if outcome.status == "Succeeded":
                    self._verdicts.pop(name, None)  # say it is healthy again
                    self.queue.add((name, ""))
                    return True
                return False
            if self._reporters is not None:
                target = self.settings.target_url
                self._reporters.report(drift_status(name, commit, missing, trace_id, target))
                verdict = drift_status(name, commit, missing, trace_id, target, scope=())
                self._reporters.report(verdict)
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

    def _reconcile(
        self, name: str, env: Environment, commit: str, scope: Sequence[str] | None
    ) -> dict[str, bool]:
        started = time.monotonic()
        size = str(len(scope)) if scope is not None else "all"
        with span("reconcile", environment=name, revision=commit, workloads=size) as trace_id:
            source = open_source(self.repo, commit)
            services = services_for(
                self.store, self.repo, name, env, actor="daemon", remote=self.remote
            )
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
                    scope=scope,
                )
            finally:
                with self._lock:
                    self._executors.discard(executor)
            if outcome.run is not None:  # else nothing was left to do: another replica did it
                self._finish(outcome, commit, trace_id, time.monotonic() - started, scope=scope)
        log.info(
            "reconciled",
            environment=name,
            revision=commit,
            workloads=size,
            status=outcome.status,
            message=outcome.message,
        )
        return _results(outcome, scope or ())

    def _report(self, name: str, commit: str, phase: Phase, trace_id: str) -> None:
        if self._reporters is not None:
            self._reporters.report(
                commit_status(
                    name,
                    commit,
                    phase,
                    run_id=trace_id,
                    target_url=self.settings.target_url,
                    scope=(),
                )
            )

    def _finish(
        self,
        outcome: RunOutcome,
        commit: str,
        trace_id: str,
        seconds: float,
        *,
        scope: Sequence[str] | None,
    ) -> None:
        """Report a run of some workloads (notes, status branch) and count it."""
        status = commit_status(
            outcome.environment,
            commit,
            None,
            outcome=outcome,
            target_url=self.settings.target_url,
            run_id=outcome.run.id if outcome.run else trace_id,
            scope=scope,
        )
        if self._reporters is not None:
            self._reporters.report(status)
        env = outcome.environment
        self.metrics.runs.labels(environment=env, result=status.phase.value).inc()
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


def _workload_of(environment: str, key: Key) -> bool:
    return key[0] == environment and bool(key[1])


def _results(outcome: RunOutcome, scope: Sequence[str]) -> dict[str, bool]:
    """Per workload of the run: False when it should be retried after a backoff.

    Input errors do not go away by retrying (a push fixes them, and a push queues the workload
    again); a failed run leaves the workloads whose own step did not succeed to retry.
    """
    if outcome.status in ("Succeeded", "WaitingApproval") or outcome.run is None:
        return dict.fromkeys(scope, True)
    if outcome.error_code is not None and outcome.error_code.value.number < 3000:
        return dict.fromkeys(scope, True)
    done = {
        step_id.removeprefix("workload:")
        for result in outcome.results
        for step_id, step in result.steps.items()
        if step.status is StepStatus.SUCCEEDED and step_id.startswith("workload:")
    }
    return {workload: workload in done for workload in scope}
