"""Full collections are held off while a plan is built, and come back after it.

A plan keeps everything it builds alive until it ends, so the full collections its growth
triggers walk the heap for nothing; young collections (which free the YAML loaders' cycles)
go on. Counted with the collector's own callbacks, never timed.
"""

from __future__ import annotations

import gc
import io
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from reconciler.cli import apply_cmd
from reconciler.gitops.repository import Repository
from reconciler.pipeline import open_source, plan_environment, select_environments
from reconciler.plan.collector import MAX_HOLD, _Hold, full_collections_held
from reconciler.store.store import Store
from tests.conftest import MakeRepo


@pytest.fixture
def thresholds() -> Iterator[None]:
    saved = gc.get_threshold()
    yield
    gc.set_threshold(*saved)


@pytest.mark.usefixtures("thresholds")
def test_the_third_threshold_is_out_of_reach_inside_and_back_after() -> None:
    gc.set_threshold(700, 10, 10)
    with full_collections_held():
        held = gc.get_threshold()
        with full_collections_held():
            assert gc.get_threshold() == held
        assert gc.get_threshold() == held
    assert held[:2] == (700, 10)
    assert held[2] > 10**9
    assert gc.get_threshold() == (700, 10, 10)


@pytest.mark.usefixtures("thresholds")
def test_overlapping_holders_on_two_threads_keep_it_until_the_last_leaves() -> None:
    gc.set_threshold(700, 10, 10)
    entered, release = threading.Event(), threading.Event()

    def other() -> None:
        with full_collections_held():
            entered.set()
            release.wait(5)

    thread = threading.Thread(target=other)
    with full_collections_held():
        thread.start()
        entered.wait(5)
    assert gc.get_threshold()[2] > 10**9  # the other thread still holds it
    release.set()
    thread.join(5)
    assert gc.get_threshold() == (700, 10, 10)


@pytest.mark.usefixtures("thresholds")
def test_plans_overlapping_for_long_still_get_a_full_collection_now_and_then() -> None:
    """The daemon's workers may plan back to back: the hold never reaches zero holders, so
    without a bound no full collection would ever run."""
    now = [0.0]
    hold = _Hold(clock=lambda: now[0])
    full: list[int] = []

    def count(phase: str, info: dict[str, Any]) -> None:
        if phase == "start" and info["generation"] == 2:
            full.append(1)

    gc.callbacks.append(count)
    try:
        hold.enter()  # a plan that stays on
        hold.enter()
        hold.leave()  # another ends at once: no full collection
        assert full == []
        now[0] += MAX_HOLD
        hold.enter()
        hold.leave()  # one ends after MAX_HOLD of holding: it makes one
        assert len(full) == 1
        hold.enter()
        hold.leave()  # and the next only after MAX_HOLD more
        assert len(full) == 1
        assert gc.get_threshold()[2] > 10**9  # still held for the plan that stays on
        hold.leave()
    finally:
        gc.callbacks.remove(count)
    assert gc.get_threshold()[2] < 10**9


@pytest.mark.usefixtures("thresholds")
def test_a_plan_makes_no_full_collection(make_repo: MakeRepo, tmp_path: Path) -> None:
    files = {
        f"apps/w{i}/score.yaml": (
            "apiVersion: score.dev/v1b1\n"
            f"metadata:\n  name: w{i}\n"
            "containers:\n  main:\n    image: nginx\n"
            "    variables:\n      NAME: ${metadata.name}\n"
        )
        for i in range(20)
    }
    repo = make_repo()
    repo.commit(files)
    store = Store.open(f"sqlite:///{tmp_path / 'state.db'}")
    repository = Repository.open(repo.root)
    source = open_source(repository, "HEAD")
    ((name, environment),) = select_environments(source.config, "default")
    started: list[tuple[int, bool]] = []

    def count(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":  # which generation, and whether a plan held full ones off
            started.append((info["generation"], gc.get_threshold()[2] > 10**9))

    gc.set_threshold(1, 1, 1)  # unheld, a full collection every few allocations
    gc.callbacks.append(count)
    try:
        result = plan_environment(repository, store, source, name, environment)
    finally:
        gc.callbacks.remove(count)
        after = gc.get_threshold()
        gc.set_threshold(700, 10, 10)
        store.close()
    assert not result.failed, result.diagnostics
    during = [generation for generation, held in started if held]
    assert len(during) > 100  # the plan's own: young collections went on
    assert 2 not in during
    assert after == (1, 1, 1)


@pytest.mark.usefixtures("thresholds")
def test_reconciler_apply_holds_full_collections_for_its_whole_run(
    make_repo: MakeRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command holds full collections for its whole run (plans, steps, records), not only
    its plans: it ends with the run. Seen from the runner's call: held before its first plan
    and still after its last, and given back once the command's run is over."""
    held: list[bool] = []
    real = apply_cmd.apply_environment

    def applying(*args: Any, **kwargs: Any) -> Any:
        held.append(gc.get_threshold()[2] > 10**9)  # before the run's first plan
        try:
            return real(*args, **kwargs)
        finally:
            held.append(gc.get_threshold()[2] > 10**9)  # after its last plan and step

    monkeypatch.setattr(apply_cmd, "apply_environment", applying)
    repo = make_repo()
    repo.commit(
        {
            f"apps/w{i}/score.yaml": (
                "apiVersion: score.dev/v1b1\n"
                f"metadata:\n  name: w{i}\n"
                "containers:\n  main:\n    image: nginx\n"
            )
            for i in range(3)
        }
    )
    gc.set_threshold(700, 10, 10)
    console = Console(file=io.StringIO())
    with Store.open(f"sqlite:///{tmp_path / 'state.db'}") as store:
        [outcome] = apply_cmd._run_one(
            store, repo.root, "HEAD", None, auto_approve=True, parallelism=2, console=console
        )
    assert outcome.status == "Succeeded", outcome.message
    assert held == [True, True]
    assert gc.get_threshold() == (700, 10, 10)
