"""The status value: its JSON line, read back, and the values it refuses."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from reconciler.gitops.status import CommitStatus, Health, Phase
from tests.unit.status.support import FAILURE, SHA, status


def test_json_line_is_one_compact_object_with_sorted_keys() -> None:
    line = status(failures=(FAILURE,)).to_json_line()
    assert "\n" not in line
    assert ", " not in line
    assert '": ' not in line
    data = json.loads(line)
    assert list(data) == sorted(data)
    assert line.startswith('{"at":"2024-05-01T12:00:00.000Z"')
    assert data["failures"][0] == {
        "code": "RCN-1202",
        "file": "apps/web/score.yaml",
        "line": 12,
        "message": "containers.web.variables.DB: unknown resource 'db'",
        "severity": "error",
    }
    assert data["workloads"]["api"] == {
        "health": "Healthy",
        "message": "rolled out",
        "sync": "Synced",
    }
    assert data["summary"] == {"add": 1, "change": 2, "destroy": 0}


def test_json_line_reads_back_to_an_equal_status() -> None:
    original = status(failures=(FAILURE,), message="line\nbreak", target_url="https://x.test/1")
    assert CommitStatus.from_json_line(original.to_json_line()) == original


def test_time_is_kept_in_utc_to_the_millisecond() -> None:
    local = datetime(2024, 5, 1, 14, 0, 0, 123999, tzinfo=timezone(timedelta(hours=2)))
    assert status(at=local).to_dict()["at"] == "2024-05-01T12:00:00.123Z"


def test_lines_of_one_second_sort_in_the_order_they_were_written() -> None:
    """The verdict is a note's last line with ``"scope": []``: the ``Succeeded`` verdict written
    40 ms after the ``Running`` line must sort after it, though ``Healthy`` sorts before
    ``Progressing``."""
    start = datetime(2024, 5, 1, 12, 0, 0, 5000, tzinfo=UTC)
    running = status(at=start, phase=Phase.RUNNING, health=Health.PROGRESSING)
    succeeded = status(at=start + timedelta(milliseconds=40), phase=Phase.SUCCEEDED)
    lines = [running.to_json_line(), succeeded.to_json_line()]
    assert sorted(lines) == lines
    assert CommitStatus.from_json_line(lines[1]).at == start + timedelta(milliseconds=40)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("commit", "abc1234"),
        ("environment", "a/b"),
        ("at", datetime(2024, 1, 1)),
        ("workloads", {"_environment": None}),
    ],
)
def test_refuses_values_that_would_break_a_reporter(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=field if field != "workloads" else "workload"):
        status(**{field: value})


def test_context_names_the_environment() -> None:
    assert status(environment="staging", phase=Phase.PENDING).context == "reconciler/staging"
    assert SHA in status().to_json_line()
