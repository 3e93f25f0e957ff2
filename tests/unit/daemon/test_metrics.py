"""The daemon's metrics: names per the conventions, an explicit registry, one info series."""

from __future__ import annotations

from prometheus_client import generate_latest

from reconciler.daemon.metrics import create_metrics

NAMES = (
    "reconciler_reconcile_duration_seconds",
    "reconciler_sync_total",
    "reconciler_workload_info",
    "reconciler_last_reconcile_timestamp_seconds",
    "reconciler_queue_depth",
    "reconciler_runs_total",
    "reconciler_drifted_resources",
    "reconciler_step_retries_total",
    "reconciler_webhook_deliveries_total",
)


def test_every_metric_is_on_the_given_registry_with_its_conventional_name() -> None:
    metrics = create_metrics()
    metrics.reconcile_duration.labels("prod").observe(0.3)
    metrics.count_sync("prod", "shop", "Succeeded")
    metrics.last_reconcile.labels("prod").set(1.7e9)
    metrics.runs.labels("prod", "Failed").inc()
    metrics.drifted_resources.labels("prod").set(2)
    metrics.step_retries.inc()
    metrics.webhook_deliveries.labels("gitea", "accepted").inc()
    metrics.set_workload_status("prod", "shop", "Synced", "Healthy")
    text = generate_latest(metrics.registry).decode()
    for name in NAMES:
        assert f"# TYPE {name} " in text
    assert 'reconciler_sync_total{environment="prod",phase="Succeeded",workload="shop"} 1.0' in text


def test_two_sets_of_metrics_do_not_share_state() -> None:
    first, second = create_metrics(), create_metrics()
    first.step_retries.inc()
    assert "reconciler_step_retries_total 1.0" in generate_latest(first.registry).decode()
    assert "reconciler_step_retries_total 0.0" in generate_latest(second.registry).decode()


def test_a_workload_has_one_info_series_whose_labels_follow_its_status() -> None:
    metrics = create_metrics()
    metrics.set_workload_status("prod", "shop", "Synced", "Healthy")
    metrics.set_workload_status("prod", "cart", "Synced", "Healthy")
    metrics.set_workload_status("prod", "shop", "OutOfSync", "Degraded")
    samples = {
        (s.labels["workload"], s.labels["sync_status"], s.labels["health_status"])
        for family in metrics.registry.collect()
        if family.name == "reconciler_workload_info"
        for s in family.samples
    }
    assert samples == {("shop", "OutOfSync", "Degraded"), ("cart", "Synced", "Healthy")}


def test_durations_are_per_environment_not_per_workload() -> None:
    """A histogram per workload was 16 series each (3.7 KB in the daemon): per environment,
    as Argo CD's reconcile histogram; the per-workload series are the counter and the info."""
    metrics = create_metrics()
    assert metrics.reconcile_duration._labelnames == ("environment",)
    for _ in range(3):
        metrics.reconcile_duration.labels("prod").observe(0.3)
    text = generate_latest(metrics.registry).decode()
    assert 'reconciler_reconcile_duration_seconds_count{environment="prod"} 3.0' in text


def test_the_per_workload_series_read_as_the_client_counter_and_gauge_gave_them() -> None:
    """Kept as plain values (a client child per workload weighed about 1.6 KB), exposed as
    before: a counter with its created time, an info gauge of 1."""
    metrics = create_metrics()
    for _ in range(2):
        metrics.count_sync("prod", "shop", "Succeeded")
    metrics.count_sync("prod", "shop", "Failed")
    metrics.set_workload_status("prod", "shop", "Synced", "Healthy")
    lines = generate_latest(metrics.registry).decode().splitlines()
    assert "# TYPE reconciler_sync_total counter" in lines
    assert (
        'reconciler_sync_total{environment="prod",phase="Succeeded",workload="shop"} 2.0' in lines
    )
    assert 'reconciler_sync_total{environment="prod",phase="Failed",workload="shop"} 1.0' in lines
    created = [x for x in lines if x.startswith("reconciler_sync_created{")]
    assert len(created) == 2
    assert "# TYPE reconciler_workload_info gauge" in lines
    info = [x for x in lines if x.startswith("reconciler_workload_info{")]
    assert info == [
        'reconciler_workload_info{environment="prod",health_status="Healthy",'
        'sync_status="Synced",workload="shop"} 1.0'
    ]
