"""Leases: replicas sharing one database share the work, one replica per key at a time.

The daemon makes one ``LeaseManager`` per process and, before reconciling a key such as
``staging/orders``, calls ``try_acquire``; a key another replica holds is skipped (that replica is
on it). A timer calls ``renew`` every ``renew_interval``; a replica that dies stops renewing, and
after ``ttl`` its keys go to whichever replica asks next. On SIGTERM, ``release_all`` hands them
over at once.

Each lease is a row ``(key, holder, expires_at)`` changed only by compare-and-set statements:
take the row if it is ours or has expired (``UPDATE ... WHERE holder = me OR expires_at <=
now``), else insert it if there is none (``INSERT ... ON CONFLICT DO NOTHING``). PostgreSQL
re-checks an ``UPDATE``'s condition after waiting for a concurrent writer of the same row, and
SQLite runs one writer at a time, so two replicas never both see their statement succeed.

Time: on PostgreSQL ``now`` is the database's clock, so replicas whose clocks disagree still agree
on who holds what; on SQLite (one replica) it is the local clock. A holder also keeps its own
conservative deadline (from before it asked, on its monotonic clock): ``held`` drops a key when
that passes without a renewal, before any other replica may take it, so a replica that was paused
(swapped out, stopped) stops treating the key as its own before someone else starts.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from reconciler.store.store import Store
from reconciler.store.tables import leases

MAX_KEY = 512
MAX_HOLDER = 253
RENEW_BATCH = 500
"""Keys per statement when renewing or releasing many: well inside SQLite's variable limit."""

WallClock = Callable[[], datetime]


_HOLDER = re.compile(r"(?P<host>.+)-(?P<pid>\d{1,7})(?:-[0-9a-f]{8})?")
"""``host-pid`` or ``host-pid-random``: process ids have at most 7 digits on Linux, so a
trailing 8-character random part is never read as the pid."""


def _host() -> str:
    return socket.gethostname()[:200]


def default_holder() -> str:
    """A name no other process shares, and that says where it runs: ``host-pid-random``."""
    return f"{_host()}-{os.getpid()}-{secrets.token_hex(4)}"


def dead_here(holder: str) -> bool:
    """Whether ``holder`` names a process of this host that has ended.

    A process killed with SIGKILL cannot release its leases; they would block everyone until
    they expire. When the holder ran on this machine we can tell at once: its pid is gone (or a
    zombie). Anything else (another host, a name we cannot read, our own process, a pid reused
    by a live process) counts as alive, which only means waiting for the expiry. Replicas that
    share a host name must therefore also share a PID namespace, as processes of one machine,
    pod or container do.
    """
    found = _HOLDER.fullmatch(holder)
    if found is None or found["host"] != _host():
        return False
    pid = int(found["pid"])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


class LeaseManager:
    """The leases of one ``holder`` (a process) in ``store``, each lasting ``ttl`` seconds.

    ``clock`` replaces the time source described above (for tests, or one shared fake clock); it
    then drives the local deadlines as well. Thread-safe: worker threads acquire and release while
    a timer renews.
    """

    def __init__(
        self, store: Store, holder: str, ttl: float, *, clock: WallClock | None = None
    ) -> None:
        if not 0 < len(holder) <= MAX_HOLDER:
            raise ValueError(f"holder must be 1 to {MAX_HOLDER} characters")
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        self._store = store
        self.holder = holder
        self.ttl = ttl
        self._clock = clock
        self._deadlines: dict[str, float] = {}
        self._lock = threading.Lock()

    @property
    def renew_interval(self) -> float:
        """How often to call ``renew``: three tries before a lease can run out."""
        return self.ttl / 3

    def try_acquire(self, key: str) -> bool:
        """Take ``key`` (or extend it, if already ours); False when another holder has it."""
        return key in self.try_acquire_many([key])

    def try_acquire_many(
        self, keys: Iterable[str], *, reclaim_dead: bool = False
    ) -> frozenset[str]:
        """Take each of ``keys`` that no other holder has (extending those already ours), in one
        transaction; the keys taken. The daemon leases the workloads of a run together.

        ``reclaim_dead`` also takes a key whose holder ``dead_here`` says has ended, without
        waiting for its lease to expire (the CLI after a killed ``reconciler apply``).
        """
        wanted = sorted(set(keys))  # key order: no deadlock between replicas taking overlaps
        for key in wanted:
            if not 0 < len(key) <= MAX_KEY:
                raise ValueError(f"lease key must be 1 to {MAX_KEY} characters")
        if not wanted:
            return frozenset()
        asked = self._seconds()
        taken: set[str] = set()
        with self._begin() as conn:
            now = self._now(conn)
            values = {"holder": self.holder, "expires_at": now + timedelta(seconds=self.ttl)}
            dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
            for key in wanted:
                if self._take(conn, dialect, key, now, values) or (
                    reclaim_dead and self._reclaim(conn, key, values)
                ):
                    taken.add(key)
        with self._lock:
            for key in wanted:
                if key in taken:
                    self._deadlines[key] = asked + self.ttl
                else:
                    self._deadlines.pop(key, None)
        return frozenset(taken)

    @staticmethod
    def _take(
        conn: Connection, dialect: Any, key: str, now: datetime, values: dict[str, Any]
    ) -> bool:
        updated = conn.execute(
            update(leases)
            .where(
                leases.c.key == key,
                or_(leases.c.holder == values["holder"], leases.c.expires_at <= now),
            )
            .values(values)
        ).rowcount
        if updated:
            return True
        # RETURNING, not rowcount: drivers report -1 for an INSERT ... ON CONFLICT.
        insert = dialect.insert(leases).values(key=key, **values)
        inserted = conn.execute(
            insert.on_conflict_do_nothing(index_elements=["key"]).returning(leases.c.key)
        )
        return inserted.first() is not None

    @staticmethod
    def _reclaim(conn: Connection, key: str, values: dict[str, Any]) -> bool:
        """Take ``key`` from a holder that has ended; compare-and-set on that holder's name, so a
        live process that took the key meanwhile keeps it."""
        holder = conn.execute(select(leases.c.holder).where(leases.c.key == key)).scalar()
        if holder is None or not dead_here(holder):
            return False
        updated = conn.execute(
            update(leases).where(leases.c.key == key, leases.c.holder == holder).values(values)
        ).rowcount
        return bool(updated)

    def renew(self) -> frozenset[str]:
        """Extend every lease held; returns the keys lost (another holder took them after they
        expired), which the caller must stop working on."""
        with self._lock:
            keys = sorted(self._deadlines)
        if not keys:
            return frozenset()
        asked = self._seconds()
        kept: set[str] = set()
        with self._begin() as conn:
            expires = self._now(conn) + timedelta(seconds=self.ttl)
            for start in range(0, len(keys), RENEW_BATCH):  # a statement per batch, in key order
                chunk = keys[start : start + RENEW_BATCH]
                done = conn.execute(
                    update(leases)
                    .where(leases.c.key.in_(chunk), leases.c.holder == self.holder)
                    .values(expires_at=expires)
                    .returning(leases.c.key)
                )
                kept.update(row[0] for row in done)
        lost = set(keys) - kept
        with self._lock:
            for key in keys:
                if key in lost:
                    self._deadlines.pop(key, None)
                elif key in self._deadlines:  # not released meanwhile
                    self._deadlines[key] = asked + self.ttl
        return frozenset(lost)

    def release_many(self, keys: Iterable[str]) -> None:
        """Give ``keys`` up now, in one statement."""
        chosen = sorted(set(keys))
        if not chosen:
            return
        with self._lock:
            for key in chosen:
                self._deadlines.pop(key, None)
        with self._begin() as conn:
            for start in range(0, len(chosen), RENEW_BATCH):
                conn.execute(
                    delete(leases).where(
                        leases.c.key.in_(chosen[start : start + RENEW_BATCH]),
                        leases.c.holder == self.holder,
                    )
                )

    def release(self, key: str) -> None:
        """Give ``key`` up now, so another replica need not wait for it to expire."""
        with self._lock:
            self._deadlines.pop(key, None)
        with self._begin() as conn:
            conn.execute(delete(leases).where(leases.c.key == key, leases.c.holder == self.holder))

    def release_all(self) -> None:
        """Give every lease up (at shutdown)."""
        with self._lock:
            self._deadlines.clear()
        with self._begin() as conn:
            conn.execute(delete(leases).where(leases.c.holder == self.holder))

    def taken(self, keys: Iterable[str]) -> frozenset[str]:
        """Which of ``keys`` some holder (this one included) has a live lease on now. Holders
        that ``dead_here`` says have ended are left out, as in ``others``: a daemon killed on
        this host works on nothing, though its leases have not run out yet."""
        chosen = sorted(set(keys))
        found: list[tuple[str, str]] = []
        with self._begin() as conn:
            now = self._now(conn)
            for start in range(0, len(chosen), RENEW_BATCH):
                rows = conn.execute(
                    select(leases.c.key, leases.c.holder).where(
                        leases.c.key.in_(chosen[start : start + RENEW_BATCH]),
                        leases.c.expires_at > now,
                    )
                )
                found.extend((key, holder) for key, holder in rows)
        ended = {holder for holder in {holder for _, holder in found} if dead_here(holder)}
        return frozenset(key for key, holder in found if holder not in ended)

    def others(self, prefix: str) -> dict[str, str]:
        """The live leases of other holders on keys starting with ``prefix``, by key: who is
        working on what, for a process that must not start while they do. Holders that
        ``dead_here`` says have ended are left out."""
        with self._begin() as conn:
            now = self._now(conn)
            rows = conn.execute(
                select(leases.c.key, leases.c.holder).where(
                    leases.c.key.startswith(prefix, autoescape=True),
                    leases.c.expires_at > now,
                    leases.c.holder != self.holder,
                )
            ).all()
        ended = {holder for holder in {holder for _, holder in rows} if dead_here(holder)}
        return {key: holder for key, holder in rows if holder not in ended}

    def held(self) -> frozenset[str]:
        """The keys this holder may work on now: acquired or renewed less than ``ttl`` ago."""
        now = self._seconds()
        with self._lock:
            return frozenset(k for k, deadline in self._deadlines.items() if deadline > now)

    def holds(self, key: str) -> bool:
        return key in self.held()

    @contextmanager
    def _begin(self) -> Iterator[Connection]:
        """A transaction of its own, never joined to a caller's ``store.transaction()``: a lease
        must be visible to other replicas as soon as the call returns."""
        with self._store.begin() as conn:
            yield conn

    def _now(self, conn: Connection) -> datetime:
        if self._clock is not None:
            return self._clock()
        if conn.dialect.name == "postgresql":
            now: datetime = conn.execute(select(func.clock_timestamp())).scalar_one()
            return now
        return datetime.now(UTC)

    def _seconds(self) -> float:
        return time.monotonic() if self._clock is None else self._clock().timestamp()
