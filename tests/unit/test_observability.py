"""Tracing set up by ``observability.configure``: the OTLP exporter only with an endpoint."""

from __future__ import annotations

import os
import subprocess
import sys

import structlog

from reconciler.observability import span

PROGRAM = """
import sys
from reconciler.observability import configure
configure(json=True)
print(any(m.startswith("opentelemetry.exporter") for m in sys.modules))
"""


def _printed(program: str, **env: str) -> str:
    """What ``program`` prints in a fresh interpreter with ``env`` as its only OTEL_ settings."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        check=True,
        env={**clean, **env},
    )
    return done.stdout


def _exporter_imported(**env: str) -> bool:
    return _printed(PROGRAM, **env).strip() == "True"


def test_the_exporter_is_imported_only_when_spans_are_exported() -> None:
    """The exporter and protobuf are about 4 MiB that a process without an endpoint keeps."""
    assert not _exporter_imported()
    assert _exporter_imported(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9")


SAMPLED = """
from reconciler.observability import configure, span
configure(json=True)
with span("outer") as outer:
    with span("inner") as inner:
        pass
from opentelemetry import trace
print(outer == inner, len(outer), int(outer, 16) != 0, trace.get_current_span().is_recording())
with span("x"):
    print(trace.get_current_span().is_recording())
"""


def test_without_an_endpoint_spans_give_trace_ids_but_record_nothing() -> None:
    """No span is recorded when none is exported, and the logs still get one trace id per
    reconcile, shared by its children."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", SAMPLED], capture_output=True, text=True, check=True, env=clean
    )
    assert done.stdout.split() == ["True", "32", "True", "False", "False"]


NESTED = """
import os, sys
import structlog
from opentelemetry import trace
from reconciler.observability import configure, span
configure(json=True)
with span("outer") as outer:
    outer_span = trace.get_current_span().get_span_context().span_id
    with span("inner", step="s1") as inner:
        bound = structlog.contextvars.get_contextvars()
        inner_span = trace.get_current_span().get_span_context().span_id
    after = structlog.contextvars.get_contextvars()
print(outer == inner == bound["trace_id"], bound["step"], inner_span == outer_span, "step" in after)
sys.stdout.flush()
os._exit(0)  # no exporter shutdown: nothing listens at the endpoint
"""


def _nested(**env: str) -> list[str]:
    return _printed(NESTED, **env).split()


def test_a_span_inside_another_is_made_only_when_spans_are_recorded() -> None:
    """Without an endpoint, a span inside another (a run's step) makes no span of its own:
    its logs get its parent's trace id and its attributes, as a span's would. With one, it is
    a span of its own in the same trace."""
    assert _nested() == ["True", "s1", "True", "False"]
    assert _nested(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9") == [
        "True",
        "s1",
        "False",
        "False",
    ]


def test_a_span_binds_its_attributes_for_its_block_and_restores_what_was_bound() -> None:
    """Inside a span, the logs carry its trace id and attributes; after it, what was bound
    before it is bound again, and what it added is gone."""
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(step="outer", environment="prod")
    try:
        with span("a step", step="inner", run_id="r1") as trace_id:
            assert structlog.contextvars.get_contextvars() == {
                "step": "inner",
                "environment": "prod",
                "run_id": "r1",
                "trace_id": trace_id,
            }
        assert structlog.contextvars.get_contextvars() == {"step": "outer", "environment": "prod"}
    finally:
        structlog.contextvars.clear_contextvars()
