"""The benchmark script still runs: its generator makes a repository that plans cleanly, and its
report names every figure. No timing is asserted (the figures are for docs/performance.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import run, synth
from reconciler.gitops.repository import Repository
from reconciler.yamldoc import load_yaml

pytestmark = pytest.mark.slow


def test_the_generator_is_reproducible_and_valid(tmp_path: Path) -> None:
    first = synth.generate(tmp_path / "a", 3, seed=7)
    second = synth.generate(tmp_path / "b", 3, seed=7)
    assert first.head == second.head  # same seed, same bytes, same commit
    tree = Repository.open(first.path).tree(first.head)
    assert len(first.score_files) == 3
    for path in first.score_files:
        doc, problems = load_yaml(tree.read(path), path)
        assert doc is not None, problems
        assert doc.data["resources"]["db"] == {"type": "postgres", "id": "group-0-db"}
    changed = synth.commit_change(first, 1)
    assert changed != second.head
    assert Repository.open(first.path).resolve("main") == changed


def test_the_report_has_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    args = ["--quick", "--sizes", "3", "--repetitions", "1", "--only", "full_plan,daemon_peak_rss"]
    run.main([*args, "--out", str(out)])
    report = json.loads(out.read_text())
    assert set(report["figures"]) == set(run.FIGURE_KEYS)
    assert {"cpu", "cores", "python"} <= set(report["machine"])
    full = report["figures"]["full_plan"]
    assert full["status"] == "measured"
    (measured,) = full["rows"]
    assert measured["size"] == 3
    assert {"measured", "reference", "ratio", "target", "met", "unit"} <= set(measured)
    assert measured["unit"] == "s"
    rss = report["figures"]["daemon_peak_rss"]
    assert rss["status"] == "measured"
    assert all(row["unit"] == "MiB" and row["measured"]["median"] > 0 for row in rss["rows"])
    printed = run.table_rows(report)
    assert any("MiB" in cell for line in printed for cell in line if line[0] == "daemon_peak_rss")
    assert not any(
        cell.endswith(" s") for line in printed if line[0] == "daemon_peak_rss" for cell in line
    )
    for key in set(run.FIGURE_KEYS) - {"full_plan", "daemon_peak_rss"}:
        assert report["figures"][key]["status"] == "skipped"


def test_a_first_reconcile_writes_the_emitters_bytes(tmp_path: Path) -> None:
    """Every file a first reconcile of the synthetic repository commits to the deploy branch
    is what libyaml's emitter writes for the objects it holds: the direct writer, and the
    forms it spells at a glance, change no byte of real manifests."""
    import yaml  # noqa: PLC0415

    from reconciler.engine import Executor, StoreCheckpointer  # noqa: PLC0415
    from reconciler.pipeline import open_source, select_environments  # noqa: PLC0415
    from reconciler.providers.kubernetes_objects import _emitted, sort_key  # noqa: PLC0415
    from reconciler.runner import apply_environment  # noqa: PLC0415
    from reconciler.services import services_for  # noqa: PLC0415
    from reconciler.store.store import Store  # noqa: PLC0415

    generated = synth.generate(tmp_path / "repo", 25, seed=7)
    store = Store.open(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        repo = Repository.open(generated.path)
        source = open_source(repo, generated.head)
        ((name, env),) = select_environments(source.config, synth.ENVIRONMENT)
        services = services_for(store, repo, name, env)
        outcome = apply_environment(
            repo,
            services,
            source,
            name,
            env,
            approved=True,
            executor=Executor(StoreCheckpointer(store)),
        )
    finally:
        store.close()
    assert outcome.status == "Succeeded", outcome.message
    repo = Repository.open(generated.path)
    tree = repo.tree(repo.branch_head(services.target.branch(name)) or "")
    files = sorted(tree.files())
    assert len(files) > 25
    for path in files:
        text = tree.read(path).decode()
        objects = list(yaml.safe_load_all(text))
        assert _emitted(sorted(objects, key=sort_key)) == text, path
