"""Leases: one holder per key, expiry and takeover; in one process on both databases, and across
real processes (one of them SIGKILLed) on the real PostgreSQL server."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

import psycopg
import pytest

from reconciler.store import Store
from reconciler.store.leases import LeaseManager, default_holder
from tests.conftest import PROJECT

TTL = 10.0
DEADLINE = 20.0


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def fake() -> FakeClock:
    return FakeClock()


@pytest.fixture
def pair(store: Store, fake: FakeClock) -> tuple[LeaseManager, LeaseManager]:
    return LeaseManager(store, "alpha", TTL, clock=fake), LeaseManager(
        store, "beta", TTL, clock=fake
    )


def test_only_one_of_two_competitors_gets_a_key(pair: tuple[LeaseManager, LeaseManager]) -> None:
    alpha, beta = pair
    assert alpha.try_acquire("staging/orders")
    assert not beta.try_acquire("staging/orders")
    assert alpha.try_acquire("staging/orders")  # again: extends its own lease
    assert beta.try_acquire("prod/orders")
    assert alpha.held() == {"staging/orders"}
    assert beta.held() == {"prod/orders"}


def test_a_released_key_is_free_at_once(pair: tuple[LeaseManager, LeaseManager]) -> None:
    alpha, beta = pair
    assert alpha.try_acquire("staging/orders")
    beta.release("staging/orders")  # not beta's: nothing happens
    assert not beta.try_acquire("staging/orders")
    alpha.release("staging/orders")
    assert beta.try_acquire("staging/orders")
    assert alpha.held() == frozenset()


def test_an_expired_lease_is_taken_over_and_its_old_holder_learns_it(
    pair: tuple[LeaseManager, LeaseManager], fake: FakeClock
) -> None:
    alpha, beta = pair
    assert alpha.try_acquire("staging/orders")
    assert alpha.try_acquire("staging/web")
    fake.advance(TTL - 0.001)
    assert not beta.try_acquire("staging/orders")  # not yet
    fake.advance(0.001)
    assert alpha.held() == frozenset()  # its own deadline passed first
    assert beta.try_acquire("staging/orders")
    assert alpha.renew() == {"staging/orders"}
    assert alpha.held() == {"staging/web"}  # expired but not taken: renewed, still alpha's
    assert not alpha.try_acquire("staging/orders")


def test_renewal_keeps_a_lease_past_its_first_ttl(
    pair: tuple[LeaseManager, LeaseManager], fake: FakeClock
) -> None:
    alpha, beta = pair
    assert alpha.try_acquire("staging/orders")
    for _ in range(4):
        fake.advance(alpha.renew_interval)
        assert alpha.renew() == frozenset()
    assert not beta.try_acquire("staging/orders")
    assert alpha.holds("staging/orders")


def test_release_all_frees_every_key_of_the_holder_only(
    pair: tuple[LeaseManager, LeaseManager], store: Store, fake: FakeClock
) -> None:
    alpha, beta = pair
    for key in ("a/x", "a/y"):
        assert alpha.try_acquire(key)
    assert beta.try_acquire("b/z")
    alpha.release_all()
    gamma = LeaseManager(store, "gamma", TTL, clock=fake)
    assert gamma.try_acquire("a/x")
    assert gamma.try_acquire("a/y")
    assert not gamma.try_acquire("b/z")
    assert alpha.held() == frozenset()


def test_many_keys_are_taken_in_one_go_except_those_another_holder_has(
    pair: tuple[LeaseManager, LeaseManager], fake: FakeClock
) -> None:
    alpha, beta = pair
    assert beta.try_acquire("staging/b")
    taken = alpha.try_acquire_many(["staging/a", "staging/b", "staging/c", "staging/a"])
    assert taken == {"staging/a", "staging/c"}
    assert alpha.held() == {"staging/a", "staging/c"}
    fake.advance(TTL / 2)
    assert alpha.renew() == frozenset()  # one statement renews both
    alpha.release_many(["staging/a", "staging/b"])  # b is beta's: left alone
    assert alpha.held() == {"staging/c"}
    assert beta.try_acquire_many(["staging/a", "staging/c"]) == {"staging/a"}
    assert beta.held() == {"staging/a", "staging/b"}


def test_bad_arguments_are_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="holder"):
        LeaseManager(store, "", TTL)
    with pytest.raises(ValueError, match="ttl"):
        LeaseManager(store, "h", 0)
    with pytest.raises(ValueError, match="key"):
        LeaseManager(store, "h", TTL).try_acquire("k" * 513)
    assert len(default_holder()) <= 253
    assert default_holder() != default_holder()


def test_the_real_clock_is_used_without_an_injected_one(store: Store) -> None:
    leases = LeaseManager(store, default_holder(), 30.0)
    assert leases.try_acquire("prod/web")
    assert leases.held() == {"prod/web"}
    assert leases.renew() == frozenset()
    leases.release_all()
    assert leases.held() == frozenset()


# -- real processes on PostgreSQL ----------------------------------------------------------

WORKER = """
import pathlib, random, sys, time

import psycopg

from reconciler.store import Store
from reconciler.store.leases import LeaseManager

url, holder, ttl, mode, keys, stop = sys.argv[1:]
keys, stop, ttl = keys.split(","), pathlib.Path(stop), float(ttl)
log = psycopg.connect(url, autocommit=True)


def started(key):
    row = log.execute(
        "INSERT INTO intervals (key, holder, started) VALUES (%s, %s, clock_timestamp())"
        " RETURNING id",
        (key, holder),
    ).fetchone()
    print("start", key, flush=True)
    return row[0]


def ended(row):
    log.execute("UPDATE intervals SET ended = clock_timestamp() WHERE id = %s", (row,))


with Store.open(url) as store:
    leases = LeaseManager(store, holder, ttl)
    if mode == "hog":  # take its keys and keep them until killed
        for key in keys:
            assert leases.try_acquire(key)
            started(key)
        print("holding", flush=True)
        while True:
            leases.renew()
            time.sleep(leases.renew_interval)
    while not stop.exists():
        for key in random.sample(keys, len(keys)):
            if leases.try_acquire(key):
                row = started(key)
                time.sleep(random.uniform(0.005, 0.03))  # the work
                ended(row)
                leases.release(key)
        time.sleep(0.01)
"""


class Hub:
    """The lines every worker printed, as (holder, line), with a way to wait for some."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []
        self.cond = threading.Condition()

    def wait(self, done: Callable[[list[tuple[str, str]]], bool], what: str) -> None:
        with self.cond:
            ok = self.cond.wait_for(lambda: done(self.lines), DEADLINE)
            assert ok, f"waited for {what}, got {self.lines}"

    def count(self, holder: str) -> int:
        return sum(1 for who, _ in self.lines if who == holder)


class Worker:
    """A worker process whose output lines a thread passes to the hub."""

    def __init__(self, hub: Hub, script: Path, args: list[str]) -> None:
        self.holder = args[1]
        self._hub = hub
        self.proc = subprocess.Popen(
            [sys.executable, str(script), *args],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(PROJECT)},
        )
        assert self.proc.stdout is not None
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            with self._hub.cond:
                self._hub.lines.append((self.holder, line.strip()))
                self._hub.cond.notify_all()


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        if worker.proc.poll() is None:
            worker.proc.kill()
        worker.proc.wait(DEADLINE)


Span = tuple[str, datetime, datetime]


def spans_by_key(db: psycopg.Connection[tuple[object, ...]]) -> dict[str, list[Span]]:
    rows = db.execute("SELECT key, holder, started, ended FROM intervals ORDER BY key, started")
    by_key: dict[str, list[Span]] = {}
    for key, holder, began, ended in rows.fetchall():
        assert isinstance(key, str)
        assert isinstance(holder, str)
        assert isinstance(began, datetime)
        assert isinstance(ended, datetime), (key, holder)
        by_key.setdefault(key, []).append((holder, began, ended))
    return by_key


def test_processes_never_hold_a_key_at_once_and_take_over_a_killed_ones_keys(
    pg_url: str, tmp_path: Path, workers: list[Worker]
) -> None:
    ttl = 1.5
    keys = [f"env/app-{n}" for n in range(5)]
    hog_keys, free_keys, stop = keys[:2], keys[2:], tmp_path / "stop"
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    db = psycopg.connect(pg_url, autocommit=True)
    db.execute(
        "CREATE TABLE intervals (id serial PRIMARY KEY, key text NOT NULL, holder text NOT NULL,"
        " started timestamptz NOT NULL, ended timestamptz)"
    )
    Store.open(pg_url).close()  # migrate once, before the processes start
    hub = Hub()

    def run(holder: str, mode: str, its_keys: list[str]) -> Worker:
        worker = Worker(
            hub, script, [pg_url, holder, str(ttl), mode, ",".join(its_keys), str(stop)]
        )
        workers.append(worker)
        return worker

    hog = run("hog", "hog", hog_keys)
    hub.wait(lambda lines: ("hog", "holding") in lines, "the hog to hold its keys")
    run("one", "work", keys)
    run("two", "work", keys)
    hub.wait(lambda _: hub.count("one") >= 8 and hub.count("two") >= 8, "8 intervals each")
    assert not any(
        line in {f"start {k}" for k in hog_keys} for who, line in hub.lines if who != "hog"
    )

    kill_at = db.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]
    hog.proc.send_signal(signal.SIGKILL)
    hog.proc.wait(DEADLINE)
    expiry: dict[str, datetime] = dict(
        db.execute("SELECT key, expires_at FROM leases WHERE holder = 'hog'").fetchall()
    )
    assert set(expiry) == set(hog_keys)
    for key in hog_keys:  # a killed holder held its keys until its leases ran out
        db.execute(
            "UPDATE intervals SET ended = %s WHERE key = %s AND holder = 'hog'", (expiry[key], key)
        )
    hub.wait(
        lambda lines: all(
            any(ln == f"start {k}" and w != "hog" for w, ln in lines) for k in hog_keys
        ),
        "the hog's keys to be taken over",
    )
    stop.touch()
    for worker in workers[1:]:
        assert worker.proc.wait(DEADLINE) == 0

    by_key = spans_by_key(db)
    for key, spans in by_key.items():
        for (h1, _, end), (h2, begin, _) in itertools.pairwise(spans):
            assert begin >= end, f"{key}: {h2} started at {begin} before {h1} ended at {end}"
    assert {h for key in free_keys for h, _, _ in by_key[key]} == {"one", "two"}
    for key in hog_keys:
        holders = [h for h, _, _ in by_key[key]]
        assert holders[0] == "hog"
        assert len(holders) > 1
        assert set(holders[1:]) <= {"one", "two"}
        takeover = by_key[key][1][1]
        delay = (takeover - kill_at).total_seconds()
        print(
            f"\n{key}: taken over {delay:.3f}s after SIGKILL, "
            f"{(takeover - expiry[key]).total_seconds():.3f}s after its lease expired"
        )
        assert delay <= ttl + 1.0
