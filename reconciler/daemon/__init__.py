"""The daemon's building blocks: forge webhooks, the HTTP server, the work queue and metrics.

``reconciler run`` composes them: webhooks and watchers add (environment, workload) keys to the
``WorkQueue``; worker threads take keys and reconcile; the ``ApiServer`` serves probes, metrics,
webhooks and ``/api/v1`` from the same process. docs/api.md describes the HTTP interface.
"""

from reconciler.daemon.http import ApiReaders, ApiServer, Handlers, Limits, ReadinessCheck, Webhooks
from reconciler.daemon.metrics import DaemonMetrics, create_metrics
from reconciler.daemon.problems import FieldError, Problem
from reconciler.daemon.queue import Clock, SystemClock, WorkQueue
from reconciler.daemon.webhooks import (
    DeliveryCache,
    ForgeEvent,
    Ignored,
    Provider,
    PullRequestAction,
    PullRequestEvent,
    PushEvent,
    WebhookEvent,
)

__all__ = [
    "ApiReaders",
    "ApiServer",
    "Clock",
    "DaemonMetrics",
    "DeliveryCache",
    "FieldError",
    "ForgeEvent",
    "Handlers",
    "Ignored",
    "Limits",
    "Problem",
    "Provider",
    "PullRequestAction",
    "PullRequestEvent",
    "PushEvent",
    "ReadinessCheck",
    "SystemClock",
    "WebhookEvent",
    "Webhooks",
    "WorkQueue",
    "create_metrics",
]
