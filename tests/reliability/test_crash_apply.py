"""SIGKILL `reconciler apply` after a seeded number of checkpoints, then apply again.

The real process, a real Git repository, the real PostgreSQL (databases made by the postgres
driver). Each trial has its own environment name, so databases never collide, and drops them
afterwards. What must hold after the resumed apply: exit 0, exactly one database per postgres
resource (none twice, none missing), exactly the commit's workloads on the deploy branch, the
run recorded Succeeded, and no run left open.

Trials: half of RECONCILER_CRASH_TRIALS (default 20; the other half kill the daemon, see
test_crash_daemon.py), seeded by the trial number.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from reconciler.providers.postgres import names_for
from tests.conftest import MakeRepo
from tests.e2e.test_cli_validate import RECONCILER
from tests.reliability.conftest import (
    POSTGRES_URL,
    config,
    databases,
    deployed_workloads,
    pg_workload,
    sqlite_count,
)
from tests.support.gitrepos import GitRepo

pytestmark = pytest.mark.slow

CRASH_TRIALS = int(os.environ.get("RECONCILER_CRASH_TRIALS", "20"))
APPLY_TRIALS = max(1, (CRASH_TRIALS + 1) // 2)
WORKLOADS = 3
CHECKPOINTS = "SELECT count(*) FROM steps WHERE status != 'Pending'"


def apply(repo: GitRepo, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1", "RECONCILER_POSTGRES_URL": POSTGRES_URL}
    return subprocess.run(
        [RECONCILER, "apply", "--auto-approve"],
        cwd=repo.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def kill_after_checkpoints(repo: GitRepo, db: Path, checkpoints: int) -> bool:
    """Start an apply and SIGKILL it once ``checkpoints`` step states are written; True if the
    kill landed before the process finished on its own."""
    env = {**os.environ, "NO_COLOR": "1", "RECONCILER_POSTGRES_URL": POSTGRES_URL}
    proc = subprocess.Popen(
        [RECONCILER, "apply", "--auto-approve"],
        cwd=repo.root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while proc.poll() is None and sqlite_count(db, CHECKPOINTS) < checkpoints:
        assert time.monotonic() < deadline, "the apply made no progress"
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    return killed


@pytest.mark.parametrize("trial", range(APPLY_TRIALS))
def test_killed_apply_resumes_to_exactly_the_commit(
    make_repo: MakeRepo, env_names: Callable[[], str], trial: int
) -> None:
    rng = random.Random(f"apply-crash-{trial}")
    env = env_names()
    repo = make_repo()
    names = [f"w{i}" for i in range(WORKLOADS)]
    repo.commit(
        {
            "reconciler.yaml": config(env),
            **{f"apps/{n}/score.yaml": pg_workload(n) for n in names},
        }
    )
    db = repo.root / ".git" / "reconciler" / "state.db"
    # 3 resources, 3 workloads and a publish step: up to 14 Running/Succeeded checkpoints.
    kill_after_checkpoints(repo, db, rng.randint(1, 2 * (2 * WORKLOADS + 1)))
    resumed = apply(repo)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr

    expected = {names_for(env, f"postgres.default#{n}.db") for n in names}
    assert databases(env) == expected
    assert deployed_workloads(repo, env) == set(names)
    assert sqlite_count(db, "SELECT count(*) FROM runs WHERE status IN ('Pending','Running')") == 0
    assert sqlite_count(db, "SELECT count(*) FROM runs WHERE status = 'Succeeded'") == 1
