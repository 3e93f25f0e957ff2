"""The Prometheus metrics the daemon exposes on ``/metrics``.

``create_metrics`` registers every metric on one explicit ``CollectorRegistry``: no global
registry, so tests and several daemons in one process never see each other's samples. The
composer hands the ``DaemonMetrics`` to the worker loop and to the HTTP server. Labels are
bounded by configuration (environments, workloads, providers) and fixed words: never a SHA,
a run id or a user.

Per workload there are two series, a counter of reconciles by phase and an info gauge, as
Argo CD has per application (``argocd_app_sync_total``, ``argocd_app_info``); the duration
histogram is per environment, as Argo CD's ``argocd_app_reconcile`` is per cluster and not
per application: a 13-bucket histogram per workload weighed about 3.7 KB in the daemon (37 MB
at 10,000 workloads) and made 16 series per workload for Prometheus to store, while the
durations of one environment's workloads are those of its runs (a run reconciles many).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

RECONCILE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
"""From a no-op plan (tens of milliseconds) to a database being created (minutes)."""

WEBHOOK_RESULTS = (
    "accepted",
    "ignored",
    "duplicate",
    "unauthorized",
    "invalid",
    "too_large",
    "not_configured",
    "error",
)
"""The values of ``result`` on ``reconciler_webhook_deliveries_total``."""


@dataclass(frozen=True, slots=True)
class DaemonMetrics:
    registry: CollectorRegistry
    reconcile_duration: Histogram
    sync: Counter
    workload_info: Gauge
    last_reconcile: Gauge
    queue_depth: Gauge
    runs: Counter
    drifted_resources: Gauge
    step_retries: Counter
    webhook_deliveries: Counter

    _statuses: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    """The statuses each workload's info series carries now, so that changing them costs
    one removal instead of a scan of every series (which made a reconcile quadratic)."""

    def set_workload_status(
        self, environment: str, workload: str, sync_status: str, health_status: str
    ) -> None:
        """Point the info gauge at the workload's current statuses, removing its old series so
        that one workload never shows as both Synced and OutOfSync. The queue serialises calls
        for one workload, so the read-then-remove below does not race."""
        key = (environment, workload)
        previous = self._statuses.get(key)
        if previous is not None and previous != (sync_status, health_status):
            self.workload_info.remove(environment, workload, *previous)
        self._statuses[key] = (sync_status, health_status)
        self.workload_info.labels(environment, workload, sync_status, health_status).set(1)


def create_metrics(registry: CollectorRegistry | None = None) -> DaemonMetrics:
    """Every metric of the daemon, on ``registry`` (a new one when not given)."""
    registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
    return DaemonMetrics(
        registry=registry,
        reconcile_duration=Histogram(
            "reconciler_reconcile_duration_seconds",
            "Time a reconcile of a workload took, observed once per workload reconciled.",
            ["environment"],
            buckets=RECONCILE_BUCKETS,
            registry=registry,
        ),
        sync=Counter(
            "reconciler_sync_total",
            "Reconciles that reached a phase (Succeeded, Failed, WaitingApproval, ...).",
            ["environment", "workload", "phase"],
            registry=registry,
        ),
        workload_info=Gauge(
            "reconciler_workload_info",
            "Always 1; the labels carry the workload's sync and health status.",
            ["environment", "workload", "sync_status", "health_status"],
            registry=registry,
        ),
        last_reconcile=Gauge(
            "reconciler_last_reconcile_timestamp_seconds",
            "Unix time at which the last reconcile of an environment finished.",
            ["environment"],
            registry=registry,
        ),
        queue_depth=Gauge(
            "reconciler_queue_depth",
            "Keys (environment, workload) waiting in the work queue, ready or backing off.",
            registry=registry,
        ),
        runs=Counter(
            "reconciler_runs_total",
            "Runs (applied plans) that finished, by result.",
            ["environment", "result"],
            registry=registry,
        ),
        drifted_resources=Gauge(
            "reconciler_drifted_resources",
            "Resources whose observed state differed from the recorded one at the last check.",
            ["environment"],
            registry=registry,
        ),
        step_retries=Counter(
            "reconciler_step_retries_total",
            "Step attempts that were retries after a retryable failure.",
            registry=registry,
        ),
        webhook_deliveries=Counter(
            "reconciler_webhook_deliveries_total",
            "Webhook deliveries received, by forge and by what became of them.",
            ["provider", "result"],
            registry=registry,
        ),
    )
