"""Which environments the daemon's store watch queues (``daemon/storewatch.py``)."""

from __future__ import annotations

from reconciler.daemon.storewatch import moved_under


def test_only_environments_moved_under_the_daemon_and_not_being_worked_on_are_queued() -> None:
    seen = {"staging": ("t1", "c1"), "production": ("t2", "c1"), "qa": ("t3", None)}
    current = {
        "staging": ("t9", "c1"),  # a command wrote its records
        "production": ("t2", "c2"),  # a command settled a commit
        "qa": ("t4", None),  # written, but this daemon's worker is on it
        "preview": ("t5", None),  # new in the store
    }
    assert moved_under(seen, current, busy={"qa"}) == ["preview", "production", "staging"]


def test_nothing_moved_means_nothing_queued() -> None:
    marks = {"staging": ("t1", "c1")}
    assert moved_under(marks, dict(marks), busy=()) == []
