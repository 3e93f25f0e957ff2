"""What the daemon's workers do with a key of the work queue.

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
Settling a commit and healing drift take the environment's lease (``environment/<env>``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager

from reconciler.catalogue import Code
from reconciler.config.models import Environment
from reconciler.daemon.memory import release_free_memory
from reconciler.daemon.metrics import DaemonMetrics
from reconciler.daemon.queue import WorkQueue
from reconciler.daemon.status import (
    commit_status,
    drift_status,
    environment_verdict,
    stopped_status,
)
from reconciler.engine import Executor, StepStatus, StoreCheckpointer
from reconciler.gitops.errors import GitError
from reconciler.gitops.repository import Repository
from reconciler.gitops.status import Failure, FanOut, Phase
from reconciler.observability import logger, span
from reconciler.pipeline import EnvironmentPlan, ParsedFiles, open_source, plan_environment
from reconciler.plan.scope import changed_workloads
from reconciler.providers.base import DriverError
from reconciler.runner import (
    RunOutcome,
    apply_environment,
    deletion_owners,
    new_run_id,
    republish_environment,
)
from reconciler.services import services_for
from reconciler.store.envlock import environment_holders
from reconciler.store.errors import StoreError
from reconciler.store.leases import LeaseManager
from reconciler.store.records import OPEN_RUN_STATUSES, RunRecord
from reconciler.store.store import Store

log = logger("reconciler.daemon")

Key = tuple[str, str]
"""(environment, workload); the workload "" stands for the environment itself."""

ENVIRONMENT_RUN = "*"
"""A stand-in workload for changes that no workload owns: a run of the whole environment."""

CLAIMED_RETRY = 2.0
"""Seconds before a workload is looked at again while a command holds its environment: its
verdict should follow the command's end closely, and asking is one small query."""

MAX_BATCH = 500
"""Workloads of one environment applied in one run at most: large enough that a first
reconcile is a few runs, small enough that other environments get a worker between them."""


class Reconciler:
    """The daemon's reconciling half, shared by its worker threads.

    ``repo`` gives the calling thread's own repository handle (pygit2 serves one thread at a
    time); ``environments`` and ``head`` read the configuration and the followed commits.
    ``reporters`` is set once the configuration is known.
    """

    def __init__(
        self,
        *,
        store: Store,
        queue: WorkQueue[Key],
        leases: LeaseManager,
        metrics: DaemonMetrics,
        repo: Callable[[], Repository],
        environments: Callable[[], dict[str, Environment]],
        head: Callable[[Environment], str | None],
        parallelism: int,
        target_url: str | None,
        remote: str | None,
    ) -> None:
        self.store = store
        self.queue = queue
        self.leases = leases
        self.metrics = metrics
        self._repo = repo
        self.environments = environments
        self._head = head
        self.parallelism = parallelism
        self.target_url = target_url
        self.remote = remote
        self.reporters: FanOut | None = None
        self._lock = threading.Lock()
        self._executors: set[Executor] = set()
        self._dispatched: dict[str, str] = {}  # environment -> the commit its keys were queued for
        self._verdicts: dict[str, tuple[str, Phase]] = {}  # environment -> last verdict reported
        self._stopped_on: dict[str, str] = {}  # environment -> commit whose reconcile stopped
        self._parsed: dict[str, tuple[str, ParsedFiles]] = {}

    @property
    def repo(self) -> Repository:
        return self._repo()

    def cancel(self) -> None:
        """Ask every running step to stop (SIGTERM): they finish, checkpoint and return."""
        with self._lock:
            for executor in self._executors:
                executor.cancel()

    def process(self, name: str, keys: Sequence[Key]) -> None:
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
        with self._verdict_on_error(name, commit):
            return self._dispatch(name, env, commit)

    def _dispatch(self, name: str, env: Environment, commit: str) -> bool:
        source = open_source(self.repo, commit)
        parsed = self._parsed_files(name, source.commit)
        planned = plan_environment(self.repo, self.store, source, name, env, parsed=parsed)
        if planned.plan is None or any(d.file == "reconciler.yaml" for d in planned.diagnostics):
            self._verdict(planned, commit, run_id=new_run_id())
            return True
        pending = self._pending(name, planned)
        fresh = self._dispatched.get(name) != commit
        self._dispatched[name] = commit
        log.debug("dispatched", environment=name, revision=commit, pending=len(pending))
        if pending:
            if fresh:
                self._report(name, commit, Phase.RUNNING, new_run_id())
            stuck = self._stuck_runs(name, commit, pending)
            waiting = _workloads_of(r for r in stuck if r.status == "WaitingApproval")
            for workload in sorted(pending):
                key = (name, workload)
                if waiting is None or workload in waiting:
                    continue  # ``reconciler approve`` carries it out, not a retry
                if fresh or not self.queue.failures(key):  # a resync does not cut a backoff short
                    self.queue.add(key)
            if stuck:
                self._verdict(planned, commit, run_id=stuck[0].id, failed=stuck)
            return True
        return self._settle(name, env, commit, planned)

    def _parsed_files(self, name: str, commit: str) -> ParsedFiles:
        """The Score files parsed at ``commit`` for environment ``name``, shared by the plans
        of that commit (the dispatch's, each run's, the settling one): until a first commit
        is settled, every plan of it is a full one, and without them the first run would parse
        and resolve every file again while the dispatch's builder state and actions were
        still alive, which is the daemon's peak of memory. A plan keeps only the files it
        used (``plan_environment``), so they go as the runs record their workloads."""
        with self._lock:
            found = self._parsed.get(name)
            if found is None or found[0] != commit:
                found = self._parsed[name] = (commit, ParsedFiles())
            return found[1]

    def _pending(self, name: str, planned: EnvironmentPlan) -> frozenset[str]:
        assert planned.plan is not None
        owners = deletion_owners(self.store, name, planned.plan)
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
        with self._verdict_on_error(name, commit):
            return self._reconcile_leased(name, env, commit, workloads)

    def _reconcile_leased(
        self, name: str, env: Environment, commit: str, workloads: Sequence[str]
    ) -> dict[str, bool]:
        leases = {f"workload/{name}/{w}": w for w in workloads}
        held = self.leases.try_acquire_many(leases)
        for lease, workload in leases.items():
            if lease not in held:
                self.queue.add_after((name, workload), self.leases.ttl / 2)
        mine = sorted(leases[lease] for lease in held)
        if not mine:
            return {}
        claimed = environment_holders(self.leases, name)
        if claimed:
            # A command (``reconciler apply``, ``approve``, ``destroy``) holds the environment:
            # its run is alive, and ours would race it. Look again once it may be done.
            self.leases.release_many(held)
            for workload in mine:
                self.queue.add_after((name, workload), CLAIMED_RETRY)
            log.info(
                "environment claimed by a command; waiting",
                environment=name,
                holder=sorted(set(claimed.values())),
            )
            return {}
        try:
            scope = None if ENVIRONMENT_RUN in mine else mine
            results = self._reconcile(name, env, commit, scope)
        finally:
            self.leases.release_many(held)
            release_free_memory()  # the run's churn, before the next run adds its own
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
            # A commit with a broken file is never recorded as reconciled (the next plan reads
            # that file again); its verdict, once said, settles it all the same.
            settled = self._stopped_on.get(name) != commit and (
                self.store.last_commit(name) == commit
                or (planned.failed and self._verdicts.get(name, ("",))[0] == commit)
            )
            if not settled:
                if not planned.failed:
                    self.store.set_last_commit(name, commit)
                    self.metrics.last_reconcile.labels(environment=name).set(time.time())
                self._verdict(planned, commit, run_id=self._latest_run(name, commit))
                return True
            log.debug("looking for drift", environment=name, revision=commit)
            return self._check_drift(name, env, commit)
        finally:
            self.leases.release(lease)

    def _close_stale_runs(self, name: str, commit: str) -> None:
        """Close the runs a dead process left open, now that nothing is left to do at
        ``commit``: runs of older commits, and runs of this one whose workloads other runs
        finished. A run whose workloads some replica still leases is alive and left alone."""
        for run in self.store.list_runs(name, limit=50):
            if run.commit == commit and run.status not in OPEN_RUN_STATUSES:
                continue
            if run.commit != commit and run.status not in (*OPEN_RUN_STATUSES, "WaitingApproval"):
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

    def _stuck_runs(self, name: str, commit: str, pending: frozenset[str]) -> list[RunRecord]:
        """Runs of this commit, of workloads still pending, that failed or wait for approval:
        the environment's verdict says so now rather than after their backoff."""
        return [
            run
            for run in self.store.list_runs(name, limit=20)
            if run.commit == commit
            and run.status in ("Failed", "WaitingApproval")
            and (run.scope is None or not pending.isdisjoint(run.scope))
        ]

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
            planned, commit, run_id=run_id, failed=failed, target_url=self.target_url
        )
        name = planned.environment
        with self._lock:
            if self._stopped_on.get(name) == commit:
                del self._stopped_on[name]
            if self._verdicts.get(name) == (commit, status.phase):
                return
            self._verdicts[name] = (commit, status.phase)
        log.info("verdict", environment=name, revision=commit, phase=str(status.phase))
        if self.reporters is not None:
            self.reporters.report(status)

    @contextmanager
    def _verdict_on_error(self, name: str, commit: str) -> Iterator[None]:
        """Say Failed on ``commit`` when its work stops on an error, then let it propagate
        (``process`` logs it and backs off). Without this verdict a commit whose reconcile
        stopped before any run could report would stay noted Running until the next commit."""
        try:
            yield
        except (StoreError, GitError, DriverError) as exc:
            self._stopped(name, commit, Failure(code=exc.code.id, message=str(exc)))
            raise
        except Exception as exc:
            message = f"{type(exc).__name__}; the daemon's log has the traceback"
            self._stopped(name, commit, Failure(code=Code.RECONCILE_CRASHED.id, message=message))
            raise

    def _stopped(self, name: str, commit: str, failure: Failure) -> None:
        """Report ``failure`` as the verdict on ``commit``, once until another verdict is said.

        The commit is then not settled until a verdict replaces this one: a reconcile that
        stopped after recording the commit, but before its verdict, says it on the retry."""
        with self._lock:
            if self._stopped_on.get(name) == commit:
                return
            self._stopped_on[name] = commit
            self._verdicts.pop(name, None)  # the retry's verdict is said, whatever it is
        log.info("verdict", environment=name, revision=commit, phase=str(Phase.FAILED))
        if self.reporters is not None:
            status = stopped_status(
                name, commit, failure, run_id=new_run_id(), target_url=self.target_url
            )
            self.reporters.report(status)

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
            if self.reporters is not None:
                target = self.target_url
                self.reporters.report(drift_status(name, commit, missing, trace_id, target))
                verdict = drift_status(name, commit, missing, trace_id, target, scope=())
                self.reporters.report(verdict)
        return True

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
            executor = Executor(StoreCheckpointer(self.store), parallelism=self.parallelism)
            parsed = self._parsed_files(name, source.commit)
            if scope is not None:
                parsed.keep(scope)
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
                    parsed=parsed,
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
        if self.reporters is not None:
            self.reporters.report(
                commit_status(
                    name,
                    commit,
                    phase,
                    run_id=trace_id,
                    target_url=self.target_url,
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
            target_url=self.target_url,
            run_id=outcome.run.id if outcome.run else trace_id,
            scope=scope,
        )
        if self.reporters is not None:
            self.reporters.report(status)
        env = outcome.environment
        self.metrics.runs.labels(environment=env, result=status.phase.value).inc()
        retries = sum(
            max(step.attempts - 1, 0)
            for result in outcome.results
            for step in result.steps.values()
        )
        if retries:
            self.metrics.step_retries.inc(retries)
        for workload, state in status.workloads.items():
            self.metrics.reconcile_duration.labels(environment=env).observe(seconds)
            self.metrics.count_sync(env, workload, status.phase.value)
            self.metrics.set_workload_status(env, workload, state.sync.value, state.health.value)


def _workloads_of(runs: Iterable[RunRecord]) -> frozenset[str] | None:
    """The workloads these runs cover; None when one of them covers the whole environment."""
    covered: set[str] = set()
    for run in runs:
        if run.scope is None:
            return None
        covered.update(run.scope)
    return frozenset(covered)


def environment_of(key: Key) -> str:
    """The queue's group of ``key``: the daemon's workers take an environment's keys together
    and pass over the environments another worker is applying."""
    return key[0]


def workload_of(environment: str, key: Key) -> bool:
    """Whether ``key`` is a workload's key of ``environment`` (for ``WorkQueue.take_ready``)."""
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
