"""Git histories that hurt: everything deleted, a force-push, a huge commit, hostile symlinks.

Each test runs the real daemon on a real repository and judges by what it wrote to Git (the note
on the commit, the deploy branch) and, for postgres resources, by the real PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from reconciler.providers.postgres import names_for
from tests.conftest import MakeRepo
from tests.reliability.conftest import (
    Daemon,
    config,
    databases,
    deployed_workloads,
    final_phase,
    notes,
    pg_workload,
    plain_workload,
)
from tests.support.gitrepos import GitRepo, Symlink
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow


def converged(repo: GitRepo, commit: str, env: str, timeout: float = 60) -> str:
    return eventually(lambda: final_phase(repo, commit, env), f"the note on {commit[:7]}", timeout)


def test_a_commit_deleting_every_workload_plans_them_away(
    make_repo: MakeRepo, env_names: Callable[[], str], daemons: Callable[..., Daemon]
) -> None:
    env = env_names()
    repo = make_repo()
    first = repo.commit(
        {
            "reconciler.yaml": config(env),
            "apps/aa/score.yaml": pg_workload("aa"),
            "apps/bb/score.yaml": pg_workload("bb"),
            "apps/cc/score.yaml": plain_workload("cc"),
        }
    )
    daemon = daemons(repo)
    assert converged(repo, first, env) == "Succeeded"
    assert deployed_workloads(repo, env) == {"aa", "bb", "cc"}
    assert len(databases(env)) == 2

    emptied = repo.commit({"apps": None}, message="delete everything")
    assert converged(repo, emptied, env) == "Succeeded", daemon.stderr
    assert deployed_workloads(repo, env) == set()
    assert databases(env) == set()
    assert daemon.alive()


def test_a_force_pushed_branch_reconciles_to_the_new_history(
    make_repo: MakeRepo, env_names: Callable[[], str], daemons: Callable[..., Daemon]
) -> None:
    env = env_names()
    repo = make_repo()
    base = repo.commit(
        {
            "reconciler.yaml": config(env),
            "apps/aa/score.yaml": pg_workload("aa"),
        }
    )
    daemon = daemons(repo)
    assert converged(repo, base, env) == "Succeeded"
    dropped = repo.commit({"apps/bb/score.yaml": pg_workload("bb")}, message="to be rewritten")
    assert converged(repo, dropped, env) == "Succeeded"
    assert deployed_workloads(repo, env) == {"aa", "bb"}

    # Rewrite history: main goes back to base and on to a commit that never saw bb.
    repo.git("reset", "--hard", "--quiet", base)
    rewritten = repo.commit({"apps/cc/score.yaml": pg_workload("cc")}, message="rewritten")
    assert dropped not in repo.git("rev-list", rewritten).split()  # not a fast-forward
    assert converged(repo, rewritten, env) == "Succeeded", daemon.stderr
    assert deployed_workloads(repo, env) == {"aa", "cc"}
    assert databases(env) == {names_for(env, f"postgres.default#{n}.db") for n in ("aa", "cc")}


def test_a_ten_thousand_file_commit(
    make_repo: MakeRepo, env_names: Callable[[], str], daemons: Callable[..., Daemon]
) -> None:
    env = env_names()
    repo = make_repo()
    first = repo.commit(
        {"reconciler.yaml": config(env), "apps/aa/score.yaml": plain_workload("aa")}
    )
    daemon = daemons(repo)
    assert converged(repo, first, env) == "Succeeded"
    huge = {f"assets/{i // 100:03d}/file-{i:05d}.txt": f"asset {i}\n" for i in range(10_000)}
    huge["apps/bb/score.yaml"] = plain_workload("bb")
    big = repo.commit(huge, message="10,000 files")
    assert repo.git("ls-tree", "-r", "--name-only", big).count("\n") >= 10_000
    assert converged(repo, big, env) == "Succeeded", daemon.stderr
    assert deployed_workloads(repo, env) == {"aa", "bb"}
    # And the commit after it is as quick to see as any other.
    after = repo.commit({"assets/000/file-00000.txt": None})
    assert converged(repo, after, env, timeout=30) == "Succeeded"
    assert daemon.alive()


SOURCED = """\
apiVersion: score.dev/v1b1
metadata:
  name: leaky
containers:
  main:
    image: nginx
    files:
      /etc/stolen:
        source: {source}
"""


def test_symlinks_out_of_the_repository_are_refused_with_a_code(
    make_repo: MakeRepo, env_names: Callable[[], str], daemons: Callable[..., Daemon], tmp_path
) -> None:
    env = env_names()
    outside = tmp_path / "outside-secret.txt"
    outside.write_text("OUTSIDE-CANARY-41d2\n")
    repo = make_repo()
    head = repo.commit(
        {
            "reconciler.yaml": config(env),
            "apps/good/score.yaml": plain_workload("good"),
            "apps/leaky/score.yaml": SOURCED.format(source="stolen.txt"),
            "apps/leaky/stolen.txt": Symlink(str(outside)),
            "apps/rel/score.yaml": SOURCED.format(source="up.txt").replace("leaky", "rel"),
            "apps/rel/up.txt": Symlink("../../../outside-secret.txt"),
            "linked": Symlink(str(tmp_path)),
        }
    )
    daemon = daemons(repo)
    phase = converged(repo, head, env)
    assert phase == "Failed", daemon.stderr
    (note,) = [n for n in notes(repo, head) if n["environment"] == env and n["phase"] == "Failed"]
    failed = {f["file"]: f["code"] for f in note["failures"]}
    assert set(failed) == {"apps/leaky/score.yaml", "apps/rel/score.yaml"}, note
    assert all(code.startswith("RCN-1") for code in failed.values()), failed
    assert deployed_workloads(repo, env) == {"good"}  # the other workload still reconciled
    shown = repo.git("log", "--all", "-p", "--format=")
    assert "OUTSIDE-CANARY-41d2" not in shown
    assert daemon.alive()
