"""Structured logs and traces, set up once per process.

Logs: structlog, JSON lines with ISO UTC timestamps when not on a terminal (the daemon's normal
case), a console renderer on a terminal; context such as environment, revision and trace id is
bound with contextvars so every line of a reconcile carries it. Traces: OpenTelemetry with
``service.name=reconciler``; spans are exported with OTLP over HTTP when
``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, and otherwise only give ids to the logs.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

import structlog
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

SERVICE_NAME = "reconciler"
_configured = False
_recorded = True
"""False once ``configure`` has set up tracing that records no span (no endpoint)."""


def configure(*, json: bool | None = None, level: str = "INFO") -> None:
    """Configure logging and tracing for this process (idempotent)."""
    global _configured  # noqa: PLW0603 - one process-wide setup, as logging itself is
    if _configured:
        return
    _configured = True
    as_json = json if json is not None else not sys.stderr.isatty()
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.dict_tracebacks
            if as_json
            else structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=level, stream=sys.stderr, format="%(name)s %(levelname)s %(message)s")
    for noisy in ("alembic", "apscheduler", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    _configure_tracing()


def _configure_tracing() -> None:
    global _recorded  # noqa: PLW0603 - set with the process's one tracer provider
    resource = Resource.create({"service.name": SERVICE_NAME})
    if not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        # Nothing would receive a span: each one still gets its ids (the logs' trace id), but
        # none records attributes and times, which halves what a run's step spans cost.
        trace.set_tracer_provider(TracerProvider(resource=resource, sampler=ALWAYS_OFF))
        _recorded = False
        return
    # Imported only when spans are exported: the exporter and protobuf are about 4 MiB and
    # 115 modules that a process without an endpoint would keep for nothing.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter,
    )

    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)


@cache
def tracer() -> trace.Tracer:
    """The process's tracer, got once: ``get_tracer`` makes a new one on every call (about a
    sixth of a span's cost, and a run opens one span per step). Got before ``configure``, it is
    OpenTelemetry's proxy, which follows the provider set later."""
    return trace.get_tracer(SERVICE_NAME)


@contextmanager
def span(name: str, **attributes: str) -> Iterator[str]:
    """A span whose trace id is bound into every log line written inside it.

    When ``configure`` set up tracing that records nothing, a span inside another one is not
    made: it would record nothing either, and its trace id, all the logs see of it, is its
    parent's. A run opens one per step, and making one (ids drawn, sampler asked, context
    set and reset) was most of a step span's cost. A span without a parent is still made:
    it draws the trace id that its children's logs share."""
    if not _recorded:
        parent = trace.get_current_span().get_span_context()
        if parent.is_valid:
            with _bound(format(parent.trace_id, "032x"), attributes) as trace_id:
                yield trace_id
            return
    with tracer().start_as_current_span(name, attributes=attributes) as current:
        made = current.get_span_context()
        with _bound(format(made.trace_id, "032x"), attributes) as trace_id:
            yield trace_id


@contextmanager
def _bound(trace_id: str, attributes: dict[str, str]) -> Iterator[str]:
    """The trace id and the span's attributes bound into the logs for the block, as
    ``structlog.contextvars.bound_contextvars`` binds them, and undone by resetting each
    variable to what it held before: the same values come back, without the copy of the whole
    context that ``bound_contextvars`` reads first to save them."""
    tokens = structlog.contextvars.bind_contextvars(trace_id=trace_id, **attributes)
    try:
        yield trace_id
    finally:
        structlog.contextvars.reset_contextvars(**tokens)


def logger(name: str = SERVICE_NAME) -> Any:
    return structlog.get_logger(name)
