"""The command line's claim on an environment (``store/envlock.py``) against the daemon's
leases, on both databases; holders that ended on this host are real exited processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from reconciler.catalogue import Code
from reconciler.store import Store
from reconciler.store.envlock import environment_holders, environment_lock
from reconciler.store.errors import StoreError
from reconciler.store.leases import LeaseManager, dead_here

TTL = 300.0
"""Long enough that nothing in these tests expires by itself."""


def ended_pid() -> int:
    """The pid of a process that ran and was reaped: ended, on this host."""
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout)


def here(pid: int, suffix: str = "-0badc0de") -> str:
    return f"{socket.gethostname()[:200]}-{pid}{suffix}"


def test_dead_here_tells_an_ended_process_of_this_host_from_everything_else() -> None:
    pid = ended_pid()
    assert dead_here(here(pid))
    assert dead_here(here(pid, suffix=""))  # the daemon's old ``host-pid`` form
    live = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        assert not dead_here(here(live.pid))
    finally:
        live.communicate(b"")
    assert not dead_here(here(os.getpid()))  # this very process
    assert not dead_here(f"elsewhere.example-{pid}-0badc0de")  # another host: cannot tell
    assert not dead_here("replica-a")  # a name given by hand


def test_a_command_is_refused_while_the_daemon_reconciles_a_workload(store: Store) -> None:
    daemon = LeaseManager(store, here(os.getpid(), "-d43m0000"), TTL)
    assert daemon.try_acquire_many(["workload/staging/orders", "workload/staging/web"])
    with pytest.raises(StoreError) as refused, environment_lock(store, "staging", wait=0):
        pytest.fail("the command ran beside the daemon's run")
    assert refused.value.code is Code.ENVIRONMENT_LOCKED
    assert daemon.holder in refused.value.message
    assert "workloads orders, web" in refused.value.message
    # The refused command left nothing behind: the daemon can still settle the environment.
    assert daemon.try_acquire("environment/staging")
    # Another environment is free.
    with environment_lock(store, "production", wait=0):
        assert daemon.others("environment/").keys() == {"environment/production"}


def test_a_lease_of_an_ended_process_of_this_host_is_not_taken(store: Store) -> None:
    """The daemon closes a run left open by a killed process once nothing live holds its
    workloads (``_close_stale_runs``): a killed holder's unexpired lease is not live."""
    LeaseManager(store, here(ended_pid()), TTL).try_acquire("workload/staging/web")
    LeaseManager(store, here(os.getpid()), TTL).try_acquire("workload/staging/api")
    observer = LeaseManager(store, "observer", TTL)
    assert observer.taken(["workload/staging/web", "workload/staging/api"]) == {
        "workload/staging/api"
    }


def test_a_command_on_a_like_named_environment_does_not_hold_this_one(store: Store) -> None:
    daemon = LeaseManager(store, here(os.getpid(), "-d43m0000"), TTL)
    with environment_lock(store, "staging-eu", wait=0):
        assert environment_holders(daemon, "staging") == {}
        assert list(environment_holders(daemon, "staging-eu")) == ["environment/staging-eu"]


def test_a_waiting_command_starts_once_the_daemon_releases(store: Store) -> None:
    daemon = LeaseManager(store, "daemon-a", TTL)
    assert daemon.try_acquire("workload/staging/orders")
    heard: list[str] = []

    def on_wait(text: str) -> None:
        heard.append(text)
        daemon.release_all()  # the daemon's run ends while the command waits

    with environment_lock(store, "staging", wait=60, on_wait=on_wait):
        assert list(daemon.others("environment/staging")) == ["environment/staging"]
        assert not daemon.try_acquire("environment/staging")  # the daemon cannot settle now
    assert len(heard) == 1
    assert "daemon-a" in heard[0]
    assert "waiting up to 60s" in heard[0]
    assert daemon.try_acquire("environment/staging")  # released when the command ended


def test_two_commands_never_hold_one_environment(store: Store) -> None:
    with environment_lock(store, "staging", wait=0):
        with pytest.raises(StoreError) as refused, environment_lock(store, "staging", wait=0):
            pytest.fail("two commands held one environment")
        assert "(the environment)" in refused.value.message
    with environment_lock(store, "staging", wait=0):  # free again once the first ended
        pass


def test_the_lease_is_released_when_the_command_fails(store: Store) -> None:
    with pytest.raises(RuntimeError), environment_lock(store, "staging", wait=0):
        raise RuntimeError("the apply failed")
    assert LeaseManager(store, "daemon-a", TTL).try_acquire("environment/staging")


def test_leases_of_a_killed_process_on_this_host_do_not_block_a_command(store: Store) -> None:
    """A ``reconciler apply`` killed with SIGKILL, or a killed daemon, cannot release its
    leases; the next command on the same machine need not wait for them to expire."""
    gone = here(ended_pid())
    killed = LeaseManager(store, gone, TTL)
    assert killed.try_acquire_many(["environment/staging", "workload/staging/orders"])
    with environment_lock(store, "staging", wait=0):
        held = LeaseManager(store, "daemon-a", TTL).others("environment/")
        assert list(held) == ["environment/staging"]  # the command's now
        assert held["environment/staging"] != gone
    elsewhere = LeaseManager(store, f"elsewhere.example-{ended_pid()}-0badc0de", TTL)
    assert elsewhere.try_acquire("environment/staging")
    # Another host's process may be alive: the command waits for the lease to expire.
    with pytest.raises(StoreError), environment_lock(store, "staging", wait=0):
        pass
