"""Tracing set up by ``observability.configure``: the OTLP exporter only with an endpoint."""

from __future__ import annotations

import os
import subprocess
import sys

PROGRAM = """
import sys
from reconciler.observability import configure
configure(json=True)
print(any(m.startswith("opentelemetry.exporter") for m in sys.modules))
"""


def _exporter_imported(**env: str) -> bool:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM],
        capture_output=True,
        text=True,
        check=True,
        env={**clean, **env},
    )
    return done.stdout.strip() == "True"


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
