"""The command line's claim on an environment while it applies or destroys it.

The daemon leases each workload it reconciles (``workload/<env>/<name>``) and the environment
(``environment/<env>``) while it settles a commit or heals drift. ``reconciler apply``,
``approve``, ``destroy`` and a workflow's apply step run the same runner against the same store,
so without a claim of their own they could take a live daemon run for a dead process's run and
resume or supersede it, or apply the same workloads twice at once.

The claim: hold ``environment/<env>`` (which also keeps the daemon from settling or healing
it), then make sure no other process leases one of its workloads; the daemon, after taking its
workload leases, makes sure nobody else holds ``environment/<env>``. Each side writes its own
lease before it reads the other's, so at least one of two processes starting together sees the
other and backs off. Like Terraform's state lock, the command waits up to ``--lock-timeout`` for
the holder to finish, then refuses with RCN-5011 naming it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from reconciler.catalogue import Code
from reconciler.observability import logger
from reconciler.store.errors import StoreError
from reconciler.store.leases import LeaseManager, default_holder
from reconciler.store.store import Store

log = logger("reconciler.store")

LOCK_TTL = 30.0
"""The command's lease: renewed every ttl/3 while it works, gone at once when it ends."""

POLL_SECONDS = 0.5
"""How often a waiting command asks again: leases are rows, there is nothing to be woken by."""


def environment_key(environment: str) -> str:
    return f"environment/{environment}"


def workload_prefix(environment: str) -> str:
    return f"workload/{environment}/"


def environment_holders(manager: LeaseManager, environment: str) -> dict[str, str]:
    """Who else holds ``environment``'s own lease (a command applying it), by key: exactly that
    key, not the leases of environments whose names merely start the same."""
    key = environment_key(environment)
    return {k: holder for k, holder in manager.others(key).items() if k == key}


def _blockers(manager: LeaseManager, environment: str) -> dict[str, str]:
    """Take the environment's lease and check its workloads; the leases in the way, if any
    (the environment's own lease stays held only when nothing is)."""
    key = environment_key(environment)
    if not manager.try_acquire_many([key], reclaim_dead=True):
        return environment_holders(manager, environment) or {key: "another process"}
    busy = manager.others(workload_prefix(environment))
    if busy:
        manager.release(key)
    return busy


def _describe(environment: str, busy: dict[str, str]) -> str:
    holders = sorted(set(busy.values()))
    workloads = sorted(k.removeprefix(workload_prefix(environment)) for k in busy)
    if environment_key(environment) in busy:
        what = "the environment"
    else:
        more = f" and {len(workloads) - 5} more" if len(workloads) > 5 else ""
        shown = ", ".join(workloads[:5]) + more
        what = f"workload{'s' if len(workloads) > 1 else ''} {shown}"
    return f"environment '{environment}' is being reconciled by {', '.join(holders)} ({what})"


@contextmanager
def environment_lock(
    store: Store,
    environment: str,
    *,
    wait: float = 0.0,
    ttl: float = LOCK_TTL,
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[None]:
    """Hold ``environment`` for the command's run; waits up to ``wait`` seconds for others to
    finish, then raises ``StoreError`` (RCN-5011). ``on_wait`` hears, once, who is waited for."""
    manager = LeaseManager(store, default_holder(), ttl)
    deadline = time.monotonic() + wait
    told = False
    while busy := _blockers(manager, environment):
        left = deadline - time.monotonic()
        message = _describe(environment, busy)
        if left <= 0:
            raise StoreError(Code.ENVIRONMENT_LOCKED, message)
        if on_wait is not None and not told:
            on_wait(f"{message}; waiting up to {wait:g}s")
            told = True
        time.sleep(min(POLL_SECONDS, left))
    stop = threading.Event()
    renewer = threading.Thread(
        target=_renew, args=(manager, stop), name="reconciler-cli-lease", daemon=True
    )
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join()
        try:
            manager.release_all()
        except StoreError as exc:  # it expires by itself; the run's result matters more
            log.warning("could not release the lease", code=exc.code.id, error=exc.message)


def _renew(manager: LeaseManager, stop: threading.Event) -> None:
    while not stop.wait(manager.renew_interval):
        try:
            lost = manager.renew()
        except StoreError as exc:
            log.warning("lease renewal failed", code=exc.code.id, error=exc.message)
            continue
        for key in sorted(lost):
            log.warning("lease lost", code=Code.LEASE_LOST.id, lease=key)
