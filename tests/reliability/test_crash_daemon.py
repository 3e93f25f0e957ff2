"""SIGKILL `reconciler run` at seeded moments while it reconciles a stream of commits.

The daemon runs on a real repository with postgres resources on the real PostgreSQL. The test
commits a seeded stream of changes (workloads added, changed, removed); after each commit it
kills the daemon once the store has taken a seeded number of further checkpoints (or once the
daemon went idle), and starts it again. At the end: the final commit's note says Succeeded, the
deploy branch holds exactly the final commit's workloads, and PostgreSQL holds exactly one
database per postgres resource of the final commit (what earlier commits made and later ones
removed is gone).

Kills: half of RECONCILER_CRASH_TRIALS (default 20: 10 here, 10 in test_crash_apply.py).
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from reconciler.providers.postgres import names_for
from tests.conftest import MakeRepo
from tests.reliability.conftest import (
    Daemon,
    config,
    databases,
    deployed_workloads,
    final_phase,
    pg_workload,
    plain_workload,
    sqlite_count,
)
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow

CRASH_TRIALS = int(os.environ.get("RECONCILER_CRASH_TRIALS", "20"))
DAEMON_KILLS = max(1, CRASH_TRIALS // 2)
CHECKPOINTS = "SELECT count(*) FROM steps WHERE status != 'Pending'"
OPEN_RUNS = "SELECT count(*) FROM runs WHERE status IN ('Pending', 'Running')"
RUNNING = "SELECT count(*) FROM runs WHERE status = 'Running'"


def test_killed_daemon_converges_on_the_last_commit(
    make_repo: MakeRepo, env_names: Callable[[], str], daemons: Callable[..., Daemon]
) -> None:
    rng = random.Random("daemon-crash")
    env = env_names()
    repo = make_repo()
    live = {"w0": "nginx:1.27", "w1": "nginx:1.27"}
    head = repo.commit(
        {
            "reconciler.yaml": config(env),
            **{f"apps/{n}/score.yaml": pg_workload(n, image) for n, image in live.items()},
        }
    )
    db = repo.root / ".git" / "reconciler" / "state.db"
    daemon = daemons(repo)
    next_name = len(live)
    kills = 0
    for kill in range(DAEMON_KILLS):
        change: dict[str, str | None] = {}
        for _ in range(rng.randint(1, 2)):
            move = rng.choice(["add", "add", "change", "remove"])
            if move == "add" or len(live) < 2:
                name = f"w{next_name}"
                next_name += 1
                live[name] = "nginx:1.27"
                change[f"apps/{name}/score.yaml"] = pg_workload(name)
            elif move == "change":
                name = rng.choice(sorted(live))
                live[name] = f"nginx:1.{rng.randint(20, 29)}"
                change[f"apps/{name}/score.yaml"] = pg_workload(name, live[name])
            else:
                name = rng.choice(sorted(live))
                if f"apps/{name}/score.yaml" in change:  # added by this very commit
                    continue
                del live[name]
                change[f"apps/{name}/score.yaml"] = None
        before = sqlite_count(db, CHECKPOINTS)
        head = repo.commit(change, message=f"change {kill}")
        target = before + rng.randint(1, 8)
        deadline = time.monotonic() + 15
        # Kill once the store took `target` checkpoints, once this commit is done, or at 15 s.
        while (
            sqlite_count(db, CHECKPOINTS) < target
            and final_phase(repo, head, env) is None
            and time.monotonic() < deadline
        ):
            assert daemon.alive(), daemon.stderr
        daemon.kill()
        kills += 1
        daemon = daemons(repo)
    assert kills == DAEMON_KILLS

    phase = eventually(lambda: final_phase(repo, head, env), "the final commit's note", 60)
    assert phase == "Succeeded", daemon.stderr
    assert deployed_workloads(repo, env) == set(live)
    expected = {names_for(env, f"postgres.default#{n}.db") for n in live}
    eventually(lambda: databases(env) == expected, f"exactly the databases {sorted(expected)}")
    assert sqlite_count(db, OPEN_RUNS) == 0  # runs killed on older commits were superseded
    assert daemon.alive()
    assert daemon.stop() == 0


BLOCKING_PROVISIONER = """\
import json, os, sys, time
json.load(sys.stdin)
gate = os.environ["RELIABILITY_GATE"]
while not os.path.exists(gate):  # held until the test opens the gate (or the process dies)
    time.sleep(0.01)
print(json.dumps({"resource_state": {}, "resource_outputs": {"url": "u"}, "shared_state": {}}))
"""


def test_a_run_killed_while_running_is_closed_when_a_newer_commit_applies(
    make_repo: MakeRepo,
    env_names: Callable[[], str],
    daemons: Callable[..., Daemon],
    tmp_path: Path,
) -> None:
    env = env_names()
    script = tmp_path / "blocking.py"
    script.write_text(BLOCKING_PROVISIONER)
    gate = tmp_path / "gate"
    provisioner = (
        f"- uri: cmd://python3\n  type: slow\n  args: [{str(script)!r}]\n"
        "  expected_outputs: [url]\n"
    )
    slow = plain_workload("aa").replace("resources:\n", "resources:\n  slow:\n    type: slow\n")
    repo = make_repo()
    first = repo.commit(
        {
            "reconciler.yaml": config(env) + "provisioners: [provisioners/*.yaml]\n",
            "provisioners/slow.yaml": provisioner,
            "apps/aa/score.yaml": slow,
        }
    )
    db = repo.root / ".git" / "reconciler" / "state.db"
    daemon = daemons(repo, env={"RELIABILITY_GATE": str(gate)})
    eventually(lambda: sqlite_count(db, RUNNING) == 1, "the first run to be Running")
    daemon.kill()
    gate.touch()
    second = repo.commit({"apps/bb/score.yaml": plain_workload("bb")})
    daemon = daemons(repo, env={"RELIABILITY_GATE": str(gate)})
    assert eventually(lambda: final_phase(repo, second, env), "the second commit's note") == (
        "Succeeded"
    )
    assert final_phase(repo, first, env) is None  # never finished: the branch moved on
    assert sqlite_count(db, OPEN_RUNS) == 0, "a run is still open after a newer commit applied"
