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
