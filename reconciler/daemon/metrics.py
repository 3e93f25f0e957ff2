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

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

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


class WorkloadSeries(Collector):
    """``reconciler_sync_total`` and ``reconciler_workload_info``, the two series per workload,
    kept as plain values and turned into samples when scraped. A ``Counter`` or ``Gauge``
    child per workload is an object with its own lock and value objects: about 1.6 KB a
    workload for the two (16 MB at 10,000), against a few hundred bytes here. The samples are
    those the client's ``Counter`` (with its ``_created``) and ``Gauge`` gave."""

    SYNC = (
        "reconciler_sync_total",
        "Reconciles that reached a phase (Succeeded, Failed, WaitingApproval, ...).",
    )
    INFO = (
        "reconciler_workload_info",
        "Always 1; the labels carry the workload's sync and health status.",
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._syncs: dict[tuple[str, str, str], list[float]] = {}
        """(environment, workload, phase) -> [count, created (Unix time)]."""
        self._statuses: dict[tuple[str, str], tuple[str, str]] = {}
        """(environment, workload) -> (sync status, health status): the one info series."""

    def count_sync(self, environment: str, workload: str, phase: str) -> None:
        key = (environment, workload, phase)
        with self._lock:
            found = self._syncs.get(key)
            if found is None:
                self._syncs[key] = [1.0, time.time()]
            else:
                found[0] += 1.0

    def set_status(self, environment: str, workload: str, sync: str, health: str) -> None:
        """The workload's one info series carries these statuses from now on."""
        with self._lock:
            self._statuses[(environment, workload)] = (sync, health)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            syncs = [(key, value[0], value[1]) for key, value in self._syncs.items()]
            statuses = [(*key, *value) for key, value in self._statuses.items()]
        counter = CounterMetricFamily(*self.SYNC, labels=("environment", "workload", "phase"))
        for labels, count, created in syncs:
            counter.add_metric(labels, count, created=created)
        yield counter
        info = GaugeMetricFamily(
            *self.INFO, labels=("environment", "workload", "sync_status", "health_status")
        )
        for status in statuses:
            info.add_metric(status, 1.0)
        yield info

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(*self.SYNC, labels=("environment", "workload", "phase"))
        yield GaugeMetricFamily(
            *self.INFO, labels=("environment", "workload", "sync_status", "health_status")
        )


@dataclass(frozen=True, slots=True)
class DaemonMetrics:
    registry: CollectorRegistry
    reconcile_duration: Histogram
    workloads: WorkloadSeries
    last_reconcile: Gauge
    queue_depth: Gauge
    runs: Counter
    drifted_resources: Gauge
    step_retries: Counter
    webhook_deliveries: Counter

    def count_sync(self, environment: str, workload: str, phase: str) -> None:
        """One more reconcile of the workload that reached ``phase``."""
        self.workloads.count_sync(environment, workload, phase)

    def set_workload_status(
        self, environment: str, workload: str, sync_status: str, health_status: str
    ) -> None:
        """Point the workload's info series at its current statuses: one series per workload,
        never both Synced and OutOfSync."""
        self.workloads.set_status(environment, workload, sync_status, health_status)


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
        workloads=_registered(WorkloadSeries(), registry),
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


def _registered(collector: WorkloadSeries, registry: CollectorRegistry) -> WorkloadSeries:
    registry.register(collector)
    return collector
