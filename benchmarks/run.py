"""Measure the reconciler's performance targets, each next to a reference from the same run.

    python benchmarks/run.py [--quick] [--sizes 10,1000,10000] [--out results.json] [--seed N]

Absolute timings depend on the machine and on whoever else is using it; a ratio to a reference
measured seconds earlier, on the same machine, on the same data, does not (much). So each figure
here is a pair: the thing we care about and the floor it should stay close to (parsing the same
files, the same rows through the raw driver, a full plan). ``docs/performance.md`` explains each
figure and keeps the latest full results.

Figures are registered with ``@figure``; one that needs parts still being built is a function
raising ``NotMeasuredYet`` with the reason, so that measuring it later means writing that one
function. ``--only`` runs a subset (the others are reported as skipped).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import psycopg
from rich.console import Console
from rich.table import Table

if __name__ == "__main__" and not __package__:  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import synth
from reconciler.gitops.repository import Repository
from reconciler.pipeline import (
    EnvironmentPlan,
    open_source,
    plan_environment,
    record_desired,
    resource_record,
    select_environments,
)
from reconciler.plan.collector import full_collections_held
from reconciler.score.loader import load_workload
from reconciler.store.records import ResourceRecord
from reconciler.store.rows import canonical_json, resource_row
from reconciler.store.store import Store
from reconciler.yamldoc import load_yaml

DEFAULT_SIZES = (10, 1000, 10000)
QUICK_SIZES = (10, 200)
DEFAULT_SEED = 20240601
PG_SERVER = "postgresql://postgres@127.0.0.1:5432"

FULL_PLAN_TARGET = 2.0
INCREMENTAL_TARGET = 2.0
NOOP_TARGET = 0.05


class NotMeasuredYet(Exception):
    """A figure whose subject does not exist yet; the message says what it waits for."""


@dataclass(slots=True)
class Sample:
    """Repeated measurements of one thing: the median is the figure, the rest shows the spread.

    Timings are seconds; a row whose figure is something else (memory) says so in ``unit``.
    """

    seconds: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def as_json(self) -> dict[str, Any]:
        return {
            "median": round(self.median, 6),
            "min": round(min(self.seconds), 6),
            "max": round(max(self.seconds), 6),
            "repetitions": len(self.seconds),
        }


def timed(
    run: Callable[[], object], repetitions: int, setup: Callable[[], object] | None = None
) -> Sample:
    """Time ``run`` ``repetitions`` times; ``setup`` (untimed) prepares each repetition.

    A collection before each repetition keeps garbage left by the previous one from being
    charged to this one; collections the run itself triggers stay in, as they would in the daemon.
    """
    return Sample([_once(run, setup) for _ in range(repetitions)])


def timed_in_turns(
    first: Callable[[], object],
    second: Callable[[], object],
    repetitions: int,
    first_setup: Callable[[], object] | None = None,
    second_setup: Callable[[], object] | None = None,
) -> tuple[Sample, Sample]:
    """``timed`` for a figure and its reference together: a repetition of each in turn, which
    goes first swapped each time. This machine's speed moves by a tenth or more within a
    minute, and a ratio of two samples taken one after the other took that move whole.

    One round of each runs first, untimed: a process's first plan also compiles the schemas
    and the built-in provisioners' templates (about four times a plan of 10), once per
    process, and as one repetition of 9 it made the median the upper of the middle two."""
    _once(first, first_setup)
    _once(second, second_setup)
    seconds: tuple[list[float], list[float]] = ([], [])
    for repetition in range(repetitions):
        for which in (0, 1) if repetition % 2 == 0 else (1, 0):
            if which == 0:
                seconds[0].append(_once(first, first_setup))
            else:
                seconds[1].append(_once(second, second_setup))
    return Sample(seconds[0]), Sample(seconds[1])


def _once(run: Callable[[], object], setup: Callable[[], object] | None) -> float:
    if setup is not None:
        setup()
    gc.collect()
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


# -- the repositories and stores the figures share --------------------------------------------


@dataclass(slots=True)
class Prepared:
    """One size's synthetic repository, its first commit, and (once asked for) a store where
    that commit is recorded as reconciled: built once, shared by the figures that need them."""

    synth: synth.SynthRepo
    base: str
    blobs: list[tuple[str, bytes]]
    records: list[ResourceRecord] | None = None
    recorded_store: Store | None = None
    changed: str | None = None


@dataclass(slots=True)
class Bench:
    """What every figure function gets: the options and lazily prepared data per size."""

    sizes: tuple[int, ...]
    seed: int
    quick: bool
    workdir: Path
    repetitions_override: int | None = None
    log: Callable[[str], None] = print
    _prepared: dict[int, Prepared] = field(default_factory=dict)
    _stores: int = 0

    def repetitions(self, size: int) -> int:
        """3 at 10,000, more for smaller sizes, where one sample is shorter and noisier: a
        burst of other work on this shared machine moves a 10 ms sample by a tenth. On the
        same code, ``full_plan`` at 10 gave 1.84 to 2.08 over nine runs of 9 repetitions,
        1.78 to 1.92 over five runs of 25; at 1,000, 1.74 to 1.94 over four runs of 3, 1.77
        to 1.86 over five runs of 5."""
        if self.repetitions_override is not None:
            return self.repetitions_override
        if size >= 10000:
            return 3
        if size >= 100:
            return 3 if self.quick else 5
        return 9 if self.quick else 25

    def prepared(self, size: int) -> Prepared:
        found = self._prepared.get(size)
        if found is None:
            start = time.perf_counter()
            repo = synth.generate(self.workdir / f"repo-{size}", size, self.seed)
            tree = Repository.open(repo.path).tree(repo.head)
            blobs = [(path, tree.read(path)) for path in repo.score_files]
            found = Prepared(repo, repo.head, blobs)
            self._prepared[size] = found
            self.log(f"  generated {size} workloads in {time.perf_counter() - start:.1f}s")
        return found

    def new_store(self, label: str) -> Store:
        """A fresh, migrated SQLite store (the daemon's default) in the work folder."""
        self._stores += 1
        return Store.open(f"sqlite:///{self.workdir / f'{label}-{self._stores}.db'}")

    def plan(
        self, size: int, store: Store, ref: str, *, repo: Repository | None = None
    ) -> EnvironmentPlan:
        """One plan as the daemon makes it: open the commit, plan its only environment.

        The repository is opened anew each time unless the caller passes one, so that no tree
        cached by an earlier repetition is reused; the store is the caller's (a daemon keeps it
        open).
        """
        if repo is None:
            repo = Repository.open(self.prepared(size).synth.path)
        source = open_source(repo, ref)
        ((name, env),) = select_environments(source.config, synth.ENVIRONMENT)
        result = plan_environment(repo, store, source, name, env)
        if result.failed:
            raise RuntimeError(f"the synthetic repository does not plan: {result.diagnostics[:3]}")
        return result

    def recorded(self, size: int) -> Prepared:
        """The size's store with its first commit recorded, and a one-workload commit after it."""
        prepared = self.prepared(size)
        if prepared.recorded_store is None:
            start = time.perf_counter()
            store = self.new_store(f"recorded-{size}")
            result = self.plan(size, store, prepared.base)
            assert result.desired is not None
            tree = Repository.open(prepared.synth.path).tree(prepared.base)
            loaded = [load_workload(tree, w.file) for w in result.desired.workloads]
            record_desired(store, result.desired, prepared.base, loaded)
            prepared.recorded_store = store
            prepared.changed = synth.commit_change(prepared.synth, size // 2)
            self.log(f"  recorded {size} workloads in {time.perf_counter() - start:.1f}s")
        return prepared

    def close(self) -> None:
        for prepared in self._prepared.values():
            if prepared.recorded_store is not None:
                prepared.recorded_store.close()


# -- figures ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Figure:
    key: str
    title: str
    target: str
    measure: Callable[[Bench], dict[str, Any]]


FIGURES: list[Figure] = []


def figure(
    key: str, title: str, target: str
) -> Callable[[Callable[[Bench], dict[str, Any]]], Callable[[Bench], dict[str, Any]]]:
    """Register a figure; the function returns ``{"rows": [...], ...}`` or raises
    ``NotMeasuredYet``. Each row: size, measured, reference, ratio, met (None: no target)."""

    def register(measure: Callable[[Bench], dict[str, Any]]) -> Callable[[Bench], dict[str, Any]]:
        FIGURES.append(Figure(key, title, target, measure))
        return measure

    return register


def row(
    size: int,
    measured: Sample,
    reference: Sample,
    target: float | None,
    *,
    unit: str = "s",
    **extra: Any,
) -> dict[str, Any]:
    """One size's figure; ``unit`` is what ``measured`` and ``reference`` count (``s``, or
    ``MiB`` for memory), so that the table and readers of the JSON print them right."""
    ratio = measured.median / reference.median if reference.median > 0 else float("inf")
    return {
        "size": size,
        "unit": unit,
        "measured": measured.as_json(),
        "reference": reference.as_json(),
        "ratio": round(ratio, 4),
        "target": target,
        "met": None if target is None else ratio <= target,
        **extra,
    }


@figure("full_plan", "Full plan vs. parsing the same files", f"plan/parse <= {FULL_PLAN_TARGET}")
def measure_full_plan(bench: Bench) -> dict[str, Any]:
    """open_source + plan_environment on an empty store, against ``load_yaml`` of the same bytes.

    Parsing is the one step a first plan cannot skip, so it is the floor; everything above it
    (schema checks, models, the desired state, the diff) is what the ratio shows.
    """
    rows = []
    for size in bench.sizes:
        prepared = bench.prepared(size)
        reps = bench.repetitions(size)
        stores: list[Store] = []
        last: list[EnvironmentPlan] = []

        def keep_records(prepared: Prepared = prepared, last: list[EnvironmentPlan] = last) -> None:
            """Keep the resources for the store figures, then drop the plan, so that its
            objects do not stay alive (and slow the collector down) in later repetitions."""
            if last and prepared.records is None and last[0].desired is not None:
                prepared.records = [resource_record(r) for r in last[0].desired.resources]
            last.clear()

        def fresh_store(size: int = size, stores: list[Store] = stores) -> None:
            keep_records()
            for old in stores:
                old.close()
            stores[:] = [bench.new_store(f"empty-{size}")]

        def plan(
            size: int = size,
            prepared: Prepared = prepared,
            stores: list[Store] = stores,
            last: list[EnvironmentPlan] = last,
        ) -> None:
            last.append(bench.plan(size, stores[0], prepared.base))

        def parse(prepared: Prepared = prepared) -> None:
            for path, raw in prepared.blobs:
                load_yaml(raw, path)

        # The last plan is dropped before each parse, as before each plan (``keep_records``).
        planned, parsed = timed_in_turns(
            plan, parse, reps, first_setup=fresh_store, second_setup=keep_records
        )
        keep_records()
        for old in stores:
            old.close()
        rows.append(row(size, planned, parsed, FULL_PLAN_TARGET, labels=("plan", "parse")))
        bench.log(f"  full plan {size}: {planned.median:.3f}s, parse {parsed.median:.3f}s")
    return {"rows": rows}


@figure(
    "incremental_plan",
    "Plan after a one-workload commit, largest size vs. smallest",
    f"plan(largest)/plan(smallest) <= {INCREMENTAL_TARGET}",
)
def measure_incremental_plan(bench: Bench) -> dict[str, Any]:
    """The commit after a recorded one changes one Score file: planning it should cost the same
    whatever the repository's size, so the smallest size's time is the reference.

    One plan first, untimed: it loads the store's kept state of the recorded commit, which the
    daemon holds from its first reconcile on (at 10,000 workloads, seconds, where the plan
    takes milliseconds). Then as many repetitions at both sizes as the smallest takes (25): each
    takes milliseconds, and of 3, one slow sample was the median."""
    reps = bench.repetitions(min(bench.sizes))
    samples: dict[int, tuple[Sample, int]] = {}
    for size in (min(bench.sizes), max(bench.sizes)):
        if size in samples:
            continue
        prepared = bench.recorded(size)
        results: list[EnvironmentPlan] = []

        def plan(
            size: int = size,
            prepared: Prepared = prepared,
            results: list[EnvironmentPlan] = results,
        ) -> None:
            assert prepared.recorded_store is not None
            assert prepared.changed is not None
            results.append(bench.plan(size, prepared.recorded_store, prepared.changed))

        plan()  # the kept state loaded, as the daemon holds it
        sample = timed(plan, reps)
        samples[size] = (sample, len(results[-1].parsed))
        bench.log(f"  incremental {size}: {sample.median:.4f}s, parsed {len(results[-1].parsed)}")
    small, large = min(samples), max(samples)
    (small_sample, small_parsed), (large_sample, large_parsed) = samples[small], samples[large]
    result = row(
        large,
        large_sample,
        small_sample,
        INCREMENTAL_TARGET,
        reference_size=small,
        parsed={str(small): small_parsed, str(large): large_parsed},
        labels=(f"plan@{large}", f"plan@{small}"),
    )
    return {"rows": [result]}


@figure("noop_resync", "No-op resync vs. a full plan", f"resync/full <= {NOOP_TARGET:.0%}")
def measure_noop_resync(bench: Bench) -> dict[str, Any]:
    """Planning the recorded commit again (a periodic resync that finds nothing to do), against
    a full plan of the same commit on an empty store (from ``full_plan`` when it ran first).

    The repository stays open across the resyncs, as the daemon keeps it (one per worker
    thread, ``Daemon.repo``): a resync reads the commit and the tree it read before.
    """
    rows = []
    for size in bench.sizes:
        prepared = bench.recorded(size)
        store = prepared.recorded_store
        assert store is not None
        reps = bench.repetitions(size)
        results: list[EnvironmentPlan] = []
        kept = Repository.open(prepared.synth.path)

        def resync(
            size: int = size,
            prepared: Prepared = prepared,
            results: list[EnvironmentPlan] = results,
            kept: Repository = kept,
        ) -> None:
            assert prepared.recorded_store is not None
            results.append(bench.plan(size, prepared.recorded_store, prepared.base, repo=kept))

        noop = timed(resync, reps)
        plan = results[-1].plan
        assert plan is not None
        full = _full_plan_sample(bench, size)
        rows.append(
            row(
                size,
                noop,
                full,
                NOOP_TARGET,
                parsed=len(results[-1].parsed),
                changes=plan.summary.has_changes,
                labels=("resync", "full plan"),
            )
        )
        bench.log(f"  no-op resync {size}: {noop.median:.4f}s vs full {full.median:.3f}s")
    return {"rows": rows}


def _full_plan_sample(bench: Bench, size: int) -> Sample:
    """A full plan's timing for ``size``: reused from ``full_plan`` when it ran in this process."""
    rows = _RESULTS.get("full_plan", {}).get("rows", [])
    for found in rows:
        if found["size"] == size:
            return Sample([found["measured"]["median"]])
    prepared = bench.prepared(size)
    stores: list[Store] = []

    def fresh() -> None:
        for old in stores:
            old.close()
        stores[:] = [bench.new_store(f"empty-{size}")]

    sample = timed(
        lambda: bench.plan(size, stores[0], prepared.base), bench.repetitions(size), fresh
    )
    for old in stores:
        old.close()
    return sample


_RESULTS: dict[str, dict[str, Any]] = {}
"""Figures measured so far in this process, so that later figures can reuse a reference."""


# -- the store ---------------------------------------------------------------------------------


def _records(bench: Bench, size: int) -> list[ResourceRecord]:
    """``size`` resources as record_desired writes them, taken from a plan of the repository."""
    prepared = bench.prepared(size)
    if prepared.records is None:
        store = bench.new_store(f"records-{size}")
        desired = bench.plan(size, store, prepared.base).desired
        store.close()
        assert desired is not None
        prepared.records = [resource_record(r) for r in desired.resources]
    records = prepared.records
    if len(records) < size:
        raise RuntimeError(f"{size} workloads gave only {len(records)} resources")
    return records[:size]


_COLUMNS = (
    *("environment", "uid", "type", "class", "res_id", "source_workload", "provisioner"),
    *("params_hash", "params", "state", "outputs", "secret_refs", "status"),
    *("created_at", "updated_at"),
)
_JSON_COLUMNS = frozenset({"params", "state", "outputs", "secret_refs"})


def _raw_rows(
    records: Sequence[ResourceRecord], now: datetime, *, text_time: bool
) -> list[tuple[Any, ...]]:
    """The same rows as the store writes, ready for a DB-API ``executemany``: JSON as canonical
    text, timestamps as SQLite's text form or as datetimes for psycopg."""
    out = []
    for record in records:
        values = resource_row(synth.ENVIRONMENT, record, now)
        converted: list[Any] = []
        for column in _COLUMNS:
            value = values[column]
            if column in _JSON_COLUMNS:
                value = canonical_json(value)
            elif isinstance(value, datetime) and text_time:
                value = value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ")
            converted.append(value)
        out.append(tuple(converted))
    return out


def _store_rows(
    bench: Bench,
    backend: str,
    url: str,
    raw_insert: Callable[[list[tuple[Any, ...]]], None],
    clear: Callable[[], None],
) -> list[dict[str, Any]]:
    """Store.save_resources against the driver's own executemany, alternating, on one database."""
    rows = []
    store = Store.open(url)
    try:
        for size in bench.sizes:
            records = _records(bench, size)
            reps = bench.repetitions(size)
            store.save_resources(synth.ENVIRONMENT, records)  # warm-up: the environment row,
            clear()  # the statement cache and the database file's pages

            def save(store: Store = store, records: list[ResourceRecord] = records) -> None:
                store.save_resources(synth.ENVIRONMENT, records)

            def raw(records: list[ResourceRecord] = records) -> None:
                raw_insert(_raw_rows(records, datetime.now(UTC), text_time=backend == "sqlite"))

            saved = timed(save, reps, setup=clear)
            inserted = timed(raw, reps, setup=clear)
            clear()
            rows.append(row(size, saved, inserted, None, labels=("save_resources", "executemany")))
            bench.log(f"  {backend} {size}: {saved.median:.3f}s vs raw {inserted.median:.3f}s")
    finally:
        store.close()
    return rows


_INSERT = "INSERT INTO resources ({}) VALUES ({})"


@figure(
    "store_sqlite",
    "Store.save_resources vs. sqlite3 executemany (SQLite, WAL)",
    "none (overhead shown)",
)
def measure_store_sqlite(bench: Bench) -> dict[str, Any]:
    """What SQLAlchemy Core, the upsert and the row conversion add over the driver alone.

    The raw side keeps one connection open, as the store's pool does, with the same settings
    as the store's engine (WAL is a property of the file; ``synchronous`` is per connection).
    """
    path = bench.workdir / "store-sqlite.db"
    columns = ", ".join(f'"{c}"' for c in _COLUMNS)
    sql = _INSERT.format(columns, ", ".join("?" for _ in _COLUMNS))
    url = f"sqlite:///{path}"
    Store.open(url).close()  # create and migrate the file before the raw connection opens it
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=NORMAL")

    def raw_insert(values: list[tuple[Any, ...]]) -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(sql, values)
        conn.execute("COMMIT")

    def clear() -> None:
        conn.execute("DELETE FROM resources")

    try:
        return {"rows": _store_rows(bench, "sqlite", url, raw_insert, clear)}
    finally:
        conn.close()


@figure(
    "store_postgresql",
    "Store.save_resources vs. psycopg executemany (PostgreSQL)",
    "none (overhead shown)",
)
def measure_store_postgresql(bench: Bench) -> dict[str, Any]:
    """The same comparison on a throwaway database of the local server, dropped afterwards."""
    name = f"reconciler_bench_{os.getpid()}"
    try:
        admin = psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as error:
        raise NotMeasuredYet(f"no PostgreSQL at {PG_SERVER}: {str(error).strip()}") from error
    columns = ", ".join(f'"{c}"' for c in _COLUMNS)
    sql = _INSERT.format(columns, ", ".join("%s" for _ in _COLUMNS))
    try:
        admin.execute(f'CREATE DATABASE "{name}"')
        url = f"{PG_SERVER}/{name}"
        Store.open(url).close()  # migrate before the raw connection looks at the table
        with psycopg.connect(url) as conn:

            def raw_insert(values: list[tuple[Any, ...]]) -> None:
                with conn.transaction(), conn.cursor() as cursor:
                    cursor.executemany(sql, values)

            def clear() -> None:
                with conn.transaction():
                    conn.execute("DELETE FROM resources")

            rows = _store_rows(bench, "postgresql", url, raw_insert, clear)
        return {"server": str(admin.info.server_version), "rows": rows}
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


# -- the daemon's figures --------------------------------------------------------------------

FIRST_RECONCILE_RATE = 200.0
"""Workloads per second of a first full reconcile (plan + apply + record), at least."""
PUSH_P50, PUSH_P95 = 0.25, 0.5
"""Push to status written (the note on the commit), seconds, at most."""
PUSH_COMMITS = 30
PUSH_SIZE = 1000
RSS_BUDGET_MIB = 300.0


@figure(
    "first_full_reconcile",
    "First full reconcile (plan + apply + record) to the manifests target",
    f"workloads/s >= {FIRST_RECONCILE_RATE:g}",
)
def measure_first_full_reconcile(bench: Bench) -> dict[str, Any]:
    """``runner.apply_environment`` of the first commit on an empty store, in process, as
    ``reconciler apply --auto-approve`` runs it: a fresh repository (no deploy branch yet) and
    a fresh store per repetition; the built-in postgres provisioner (manifests, no server);
    full collections held for the run, as the command holds them (``plan/collector.py``).

    The reference is the time budget the target allows (N / 200 s), so ratio <= 1 meets it.
    """
    rows = []
    with _WithoutEnv("RECONCILER_POSTGRES_URL"):
        for size in bench.sizes:
            # As many repetitions below 1,000 as the other figures take (25 at 10): the first
            # reconcile of a process also pays its lazy imports, and of 3, the median was the
            # slower of the other two. 3 below 10,000 (unless asked): one first reconcile of
            # 1,000 took 3.8 s in one full run and 4.8 s in the next, on the same code. One
            # at 10,000, which takes most of a minute.
            reps = (
                bench.repetitions(size)
                if size < 1000
                else bench.repetitions_override or (3 if size < 10000 else 1)
            )
            seconds = [_first_reconcile(bench, size, rep) for rep in range(reps)]
            sample = Sample(seconds)
            budget = Sample([size / FIRST_RECONCILE_RATE])
            rate = size / sample.median
            rows.append(
                row(
                    size,
                    sample,
                    budget,
                    1.0,
                    labels=("reconcile", "budget"),
                    workloads_per_second=round(rate, 1),
                )
            )
            bench.log(f"  first reconcile {size}: {sample.median:.2f}s, {rate:.0f} workloads/s")
    return {"rows": rows}


@figure(
    "push_to_status",
    f"Push to status note, p50 and p95 over {PUSH_COMMITS} commits (daemon, local repository)",
    f"p50 <= {PUSH_P50:g} s, p95 <= {PUSH_P95:g} s",
)
def measure_push_to_status(bench: Bench) -> dict[str, Any]:
    """``reconciler run`` on a local repository of 1,000 workloads (the largest size up to
    1,000 with ``--sizes``/``--quick``): after its first reconcile, one-workload commits are
    made one at a time (straight into the object database, as ``git push`` to the watched
    repository would); each is timed from the ref update returning to the environment's
    verdict appearing in the note on the commit (``refs/notes/reconciler``), polled every 2 ms.
    """
    size = max([s for s in bench.sizes if s <= PUSH_SIZE] or [min(bench.sizes)])
    commits = PUSH_COMMITS if bench.repetitions_override is None else bench.repetitions_override
    import random  # noqa: PLC0415 - kept to this section of a file shared with other figures

    repo = synth.generate(bench.workdir / f"daemon-push-{size}", size, bench.seed)
    latencies: list[float] = []
    with _Daemon(repo.path) as daemon:
        first = _wait_for_note(repo.path, repo.head, daemon, timeout=max(120.0, size / 5))
        if first != "Succeeded":
            raise RuntimeError(f"the first reconcile of {size} workloads ended {first}")
        rng = random.Random(bench.seed)
        for _ in range(commits):
            start = time.perf_counter()
            commit = synth.commit_change(repo, rng.randrange(size))
            phase = _wait_for_note(repo.path, commit, daemon, timeout=120.0)
            latencies.append(time.perf_counter() - start)
            if phase != "Succeeded":
                raise RuntimeError(f"commit {commit[:7]} ended {phase}")
    ordered = sorted(latencies)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    rows = [
        row(size, Sample(latencies), Sample([PUSH_P50]), 1.0, labels=("p50", "target")),
        row(size, Sample([p95]), Sample([PUSH_P95]), 1.0, labels=("p95", "target")),
    ]
    bench.log(
        f"  push to status at {size}: p50 {statistics.median(latencies):.3f}s, p95 {p95:.3f}s"
    )
    return {"commits": commits, "latencies_s": [round(x, 4) for x in latencies], "rows": rows}


@figure(
    "daemon_peak_rss",
    "Daemon peak RSS (VmHWM) holding the largest size, after its first reconcile",
    f"<= {RSS_BUDGET_MIB:g} MiB",
)
def measure_daemon_peak_rss(bench: Bench) -> dict[str, Any]:
    """``reconciler run`` on a repository of the largest size: its first reconcile, then a
    one-workload commit and a no-op resync, then ``VmHWM`` (the kernel's high-water mark of
    resident memory) from ``/proc/<pid>/status``. The row's ``unit`` is ``MiB``.

    The time from the daemon's start to its verdict on the first commit is noted beside it
    (no target: ``first_full_reconcile`` measures the command's first reconcile). The daemon
    applies a first commit in runs of 500 workloads and keeps the parsed files lean between
    them, for this figure's sake, so it takes longer than the command."""
    if not Path("/proc/self/status").exists():
        raise NotMeasuredYet("needs /proc/<pid>/status (Linux)")
    size = max(bench.sizes)
    repo = synth.generate(bench.workdir / f"daemon-rss-{size}", size, bench.seed)
    started = time.perf_counter()
    with _Daemon(repo.path) as daemon:
        timeout = max(300.0, size / 5)
        first = _wait_for_note(repo.path, repo.head, daemon, timeout=timeout)
        first_seconds = time.perf_counter() - started
        after_first = _proc_status(daemon.pid)
        commit = synth.commit_change(repo, 0)
        second = _wait_for_note(repo.path, commit, daemon, timeout=timeout)
        status = _proc_status(daemon.pid)
    if (first, second) != ("Succeeded", "Succeeded"):
        raise RuntimeError(f"the daemon's reconciles ended {first}, {second}")
    hwm = status["VmHWM"] / 1024
    rate = size / first_seconds
    bench.log(
        f"  daemon peak RSS at {size}: {hwm:.0f} MiB (after the first reconcile "
        f"{after_first['VmHWM'] / 1024:.0f} MiB); its first reconcile {first_seconds:.1f}s, "
        f"{rate:.0f} workloads/s"
    )
    return {
        "rows": [
            row(
                size,
                Sample([hwm]),
                Sample([RSS_BUDGET_MIB]),
                1.0,
                labels=("VmHWM MiB", "budget MiB"),
                unit="MiB",
                rss_after_mib=round(status["VmRSS"] / 1024, 1),
                hwm_after_first_reconcile_mib=round(after_first["VmHWM"] / 1024, 1),
                first_reconcile_s=round(first_seconds, 2),
                note=f"first reconcile {first_seconds:.1f} s, {rate:.0f}/s",
            )
        ]
    }


class _WithoutEnv:
    """Unset an environment variable for the block (the postgres driver reads it)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.saved: str | None = None

    def __enter__(self) -> None:
        self.saved = os.environ.pop(self.name, None)

    def __exit__(self, *exc: object) -> None:
        if self.saved is not None:
            os.environ[self.name] = self.saved


def _first_reconcile(bench: Bench, size: int, rep: int) -> float:
    """One timed first reconcile of ``size`` workloads on a fresh repository and store."""
    from reconciler.engine import Executor, StoreCheckpointer  # noqa: PLC0415
    from reconciler.observability import configure  # noqa: PLC0415
    from reconciler.runner import apply_environment  # noqa: PLC0415
    from reconciler.services import services_for  # noqa: PLC0415

    configure(level="WARNING")  # the engine logs every step at INFO: thousands of lines

    path = bench.workdir / f"reconcile-{size}-{rep}"
    generated = synth.generate(path, size, bench.seed)
    store = bench.new_store(f"reconcile-{size}")
    try:
        gc.collect()
        start = time.perf_counter()
        repo = Repository.open(generated.path)
        source = open_source(repo, generated.head)
        ((name, env),) = select_environments(source.config, synth.ENVIRONMENT)
        services = services_for(store, repo, name, env)
        executor = Executor(StoreCheckpointer(store), parallelism=4)
        with full_collections_held():  # as the command holds them (cli/apply_cmd.py)
            outcome = apply_environment(
                repo, services, source, name, env, approved=True, executor=executor
            )
        seconds = time.perf_counter() - start
    finally:
        store.close()
    if outcome.status != "Succeeded":
        raise RuntimeError(
            f"the first reconcile of {size} ended {outcome.status}: "
            f"{outcome.error_code} {outcome.message}"
        )
    shutil.rmtree(path, ignore_errors=True)
    return seconds


class _Daemon:
    """``reconciler run`` on ``path`` as a process (JSON logs on stderr, kept in a file)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.log = path.parent / f"{path.name}.daemon.log"

    def __enter__(self) -> _Daemon:
        import subprocess  # noqa: PLC0415

        binary = Path(sys.executable).parent / "reconciler"
        env = {k: v for k, v in os.environ.items() if k != "RECONCILER_POSTGRES_URL"}
        env["NO_COLOR"] = "1"
        self._err = self.log.open("wb")
        self.proc = subprocess.Popen(
            [str(binary), "run", "--repo", str(self.path), "--listen", "127.0.0.1:0"],
            cwd=self.path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self._err,
        )
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def check(self) -> None:
        if self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the daemon exited with {self.proc.returncode}:\n{tail}")

    def __exit__(self, *exc: object) -> None:
        import signal  # noqa: PLC0415

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except Exception:
                self.proc.kill()
                self.proc.wait()
        self._err.close()


def _wait_for_note(path: Path, commit: str, daemon: _Daemon, *, timeout: float) -> str:
    """The phase of the environment's first finished verdict noted on ``commit`` (polled every
    2 ms): the line without per-workload scope, written once every workload of the commit is
    done, which is what the forge shows. (The lines of the runs that applied the workloads come
    before it.)"""
    import pygit2  # noqa: PLC0415

    repo = pygit2.Repository(str(path))
    deadline = time.monotonic() + timeout
    while True:
        try:
            note = repo.lookup_note(commit, "refs/notes/reconciler")
        except KeyError:
            note = None
        if note is not None:
            lines = [json.loads(x) for x in note.message.splitlines() if x.strip()]
            phases = [n["phase"] for n in lines if not n.get("scope")]
            done = [p for p in phases if p not in ("Running", "Pending")]
            if done:
                return done[0]
        daemon.check()
        if time.monotonic() > deadline:
            raise RuntimeError(f"no finished status on {commit[:7]} after {timeout:g} s")
        time.sleep(0.002)


def _proc_status(pid: int) -> dict[str, int]:
    """The ``Vm*`` lines of /proc/<pid>/status, in KiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key.startswith("Vm") and rest.strip().endswith("kB"):
            values[key] = int(rest.split()[0])
    return values


FIGURE_KEYS = tuple(f.key for f in FIGURES)


# -- the machine, the run, the output ----------------------------------------------------------


def machine() -> dict[str, Any]:
    """What the numbers came from: they mean little without it."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count() or 0
    versions: dict[str, str | None] = {}
    for package in ("pygit2", "ruamel.yaml", "pydantic", "SQLAlchemy", "psycopg", "jsonschema"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "system": f"{platform.system()} {platform.release()}",
        "packages": versions,
    }


def run(bench: Bench, only: Sequence[str] | None = None) -> dict[str, Any]:
    """Measure every registered figure (or ``only`` these) and return the JSON report."""
    _RESULTS.clear()
    started = datetime.now(UTC)
    figures: dict[str, Any] = {}
    for fig in FIGURES:
        entry: dict[str, Any] = {"title": fig.title, "target": fig.target}
        if only is not None and fig.key not in only:
            entry.update(status="skipped", reason="not selected with --only", rows=[])
        else:
            bench.log(f"{fig.title} ...")
            try:
                measured = fig.measure(bench)
            except NotMeasuredYet as why:
                entry.update(status="not measured yet", reason=str(why), rows=[])
            else:
                entry.update(status="measured", **measured)
                _RESULTS[fig.key] = entry
        figures[fig.key] = entry
    return {
        "format_version": 2,
        "started_at": started.isoformat(timespec="seconds"),
        "duration_s": round((datetime.now(UTC) - started).total_seconds(), 1),
        "machine": machine(),
        "options": {"sizes": list(bench.sizes), "seed": bench.seed, "quick": bench.quick},
        "figures": figures,
    }


def _value(value: float, unit: str) -> str:
    """A measured value as the table prints it: durations scaled, other units as they are."""
    if unit == "s":
        return _seconds(value)
    return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"


def _seconds(value: float) -> str:
    if value >= 1:
        return f"{value:.2f} s"
    if value >= 0.001:
        return f"{value * 1000:.1f} ms"
    return f"{value * 1e6:.0f} µs"


def table_rows(report: dict[str, Any]) -> list[list[str]]:
    """One line per measured size, for the table."""
    lines = []
    for key, entry in report["figures"].items():
        for found in entry["rows"] if entry["status"] == "measured" else []:
            labels = found.get("labels", ("measured", "reference"))
            unit = found.get("unit", "s")
            met, limit = found["met"], found["target"]
            parsed = found.get("parsed")
            if isinstance(parsed, dict):
                parsed = " / ".join(f"{v} at {k}" for k, v in parsed.items())
            lines.append(
                [
                    key,
                    str(found["size"]),
                    f"{labels[0]} {_value(found['measured']['median'], unit)}",
                    f"{labels[1]} {_value(found['reference']['median'], unit)}",
                    f"{found['ratio']:.3f}",
                    "-" if limit is None else f"<= {limit:g}",
                    "-" if met is None else ("yes" if met else "NO"),
                    found.get("note", "" if parsed is None else f"parsed {parsed}"),
                ]
            )
    return lines


HEADERS = ["figure", "size", "measured", "reference", "ratio", "target", "met", "notes"]


def print_report(report: dict[str, Any]) -> None:
    """A table of medians, then the figures that were not measured and why."""
    m = report["machine"]
    title = (
        f"{m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable, shared with other work; "
        f"load {m['load_average'][0]}), Python {m['python']}"
    )
    console = Console(width=max(Console().width, 120))
    table = Table(title=title, caption="medians; ratio = measured / reference")
    for header in HEADERS:
        table.add_column(header, no_wrap=header != "notes")
    for line in table_rows(report):
        table.add_row(*line)
    console.print(table)
    for key, entry in report["figures"].items():
        if entry["status"] != "measured":
            console.print(f"{key}: {entry['status']} ({entry['reason']})", highlight=False)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="sizes 10 and 200, fewer repetitions")
    parser.add_argument("--sizes", help="comma-separated workload counts (default 10,1000,10000)")
    parser.add_argument("--out", type=Path, help="write the JSON report here")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="generator seed")
    parser.add_argument("--only", help=f"comma-separated figures: {', '.join(FIGURE_KEYS)}")
    parser.add_argument("--repetitions", type=int, help="override the repetitions per figure")
    parser.add_argument("--keep", action="store_true", help="keep the work folder and print it")
    args = parser.parse_args(argv)
    if args.sizes:
        args.sizes = tuple(sorted({int(s) for s in args.sizes.split(",") if s.strip()}))
    else:
        args.sizes = QUICK_SIZES if args.quick else DEFAULT_SIZES
    if args.only:
        args.only = [k.strip() for k in args.only.split(",") if k.strip()]
        unknown = set(args.only) - set(FIGURE_KEYS)
        if unknown:
            parser.error(f"unknown figures: {', '.join(sorted(unknown))}")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="reconciler-bench-"))
    bench = Bench(args.sizes, args.seed, args.quick, workdir, args.repetitions)
    try:
        report = run(bench, args.only)
    finally:
        bench.close()
        if args.keep:
            print(f"work folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print_report(report)
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
