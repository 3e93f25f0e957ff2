"""The daemon on a remote repository and as several replicas: real processes, real services.

The remote is a real ``git daemon`` on 127.0.0.1; the replicas share a real PostgreSQL database.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg import sql

from tests.conftest import MakeRepo
from tests.e2e.test_daemon import eventually, workload
from tests.support.daemon import DaemonProcess
from tests.support.git_daemon import GitDaemon, free_port
from tests.support.gitrepos import GitRepo

pytestmark = pytest.mark.slow
SECRET = "webhook-s3cret"
ADMIN = os.environ.get("RECONCILER_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
CONFIG = "environments:\n  staging:\n    branch: main\n    resync: 1h\n"


class Process(DaemonProcess):
    def __init__(self, *args: str, cwd: Path, env: dict[str, str] | None = None) -> None:
        super().__init__(args, cwd=cwd, env=env)


@pytest.fixture
def served(make_repo: MakeRepo, tmp_path: Path) -> Iterator[tuple[GitRepo, GitDaemon]]:
    work = make_repo("work")
    work.commit({"reconciler.yaml": CONFIG, "apps/aa/score.yaml": workload("aa")})
    base = tmp_path / "served"
    base.mkdir()
    work.clone_bare(base / "remote.git")
    daemon = GitDaemon(base, free_port())
    daemon.start()
    work.git("remote", "add", "origin", daemon.url)
    yield work, daemon
    daemon.stop()


def remote_note(work: GitRepo, commit: str) -> dict[str, object] | None:
    fetched = subprocess.run(
        ["git", "fetch", "-q", "origin", "+refs/notes/reconciler:refs/notes/reconciler"],
        cwd=work.root,
        capture_output=True,
        text=True,
        check=False,
    )
    if fetched.returncode != 0:
        return None
    shown = subprocess.run(
        ["git", "notes", "--ref=reconciler", "show", commit],
        cwd=work.root,
        capture_output=True,
        text=True,
        check=False,
    )
    done = [json.loads(x) for x in shown.stdout.splitlines() if x.strip()]
    done = [n for n in done if n["phase"] == "Succeeded"]
    return done[-1] if done else None


def remote_files(work: GitRepo, branch: str) -> set[str]:
    """The files of ``branch`` on the remote (empty while it is not there)."""
    fetched = subprocess.run(
        ["git", "fetch", "-q", "origin", f"+refs/heads/{branch}:refs/remotes/origin/{branch}"],
        cwd=work.root,
        capture_output=True,
        text=True,
        check=False,
    )
    if fetched.returncode != 0:
        return set()
    return set(work.git("ls-tree", "-r", "--name-only", f"origin/{branch}").split())


def github_push(url: str, ref: str, after: str) -> httpx.Response:
    body = json.dumps(
        {"ref": ref, "before": "0" * 40, "after": after, "repository": {"full_name": "shop/apps"}}
    ).encode()
    digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    headers = {
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": secrets.token_hex(8),
        "X-Hub-Signature-256": f"sha256={digest}",
        "Content-Type": "application/json",
    }
    return httpx.post(url + "/webhooks/github", content=body, headers=headers)


def test_a_remote_is_mirrored_and_a_webhook_fetches_at_once(
    served: tuple[GitRepo, GitDaemon], tmp_path: Path
) -> None:
    work, daemon = served
    first = work.git("rev-parse", "HEAD")
    proc = Process(
        "--repo",
        daemon.url,
        "--branch",
        "main",
        "--mirror",
        str(tmp_path / "mirror.git"),
        "--fetch-interval",
        "3600",
        cwd=tmp_path,
        env={"RECONCILER_GITHUB_WEBHOOK_SECRET": SECRET},
    )
    try:
        eventually(lambda: remote_note(work, first), "the first commit's note on the remote")
        second = work.commit({"apps/bb/score.yaml": workload("bb")})
        work.git("push", "-q", "origin", "main")
        answer = github_push(proc.url, "refs/heads/main", second)
        assert answer.status_code == 202, answer.text
        note = eventually(lambda: remote_note(work, second), "the pushed commit's note")
        assert note["environment"] == "staging"
        # The branches the daemon writes reach the remote too: Argo CD reads the deploy branch
        # there, users read the status branch.
        eventually(
            lambda: (
                {"staging/aa.yaml", "staging/bb.yaml"} <= remote_files(work, "reconciler/status")
            ),
            "the status branch on the remote",
        )
        assert {"aa/manifests.yaml", "bb/manifests.yaml"} <= remote_files(
            work, "reconciler/deploy/staging"
        )
        other = github_push(proc.url, "refs/heads/feature", second)
        assert other.status_code == 200  # acknowledged, ignored
    finally:
        assert proc.stop() == 0


@pytest.fixture
def pg_store() -> Iterator[str]:
    name = f"reconciler_replicas_{secrets.token_hex(4)}"
    with psycopg.connect(f"{ADMIN}/postgres", autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield f"{ADMIN}/{name}"
    with psycopg.connect(f"{ADMIN}/postgres", autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def applies(store: str) -> dict[tuple[str, str], int]:
    """How many times each workload was applied, per commit: succeeded workload steps."""
    with psycopg.connect(store) as conn:
        rows = conn.execute(
            "SELECT r.commit, s.target, count(*) FROM steps s JOIN runs r ON s.run_id = r.id "
            "WHERE r.environment = 'staging' AND s.kind = 'workload' AND s.action = 'apply' "
            "AND s.status = 'Succeeded' GROUP BY r.commit, s.target"
        ).fetchall()
    return {(commit, target): count for commit, target, count in rows}


def recorded_at(store: str, commit: str) -> set[str]:
    """The workloads whose recorded state comes from ``commit``."""
    with psycopg.connect(store) as conn:
        rows = conn.execute(
            "SELECT name FROM workloads WHERE environment = 'staging' AND commit = %s", (commit,)
        ).fetchall()
    return {name for (name,) in rows}


def settled_at(store: str, commit: str) -> bool:
    """Whether the environment's commit is settled: every run of it over, the commit recorded
    as reconciled (a workload's row is written before its step's checkpoint)."""
    with psycopg.connect(store) as conn:
        row = conn.execute("SELECT last_commit FROM environments WHERE name = 'staging'").fetchone()
    return row is not None and row[0] == commit


def settle(
    replicas: list[Process], store: str, commit: str, what: str, timeout: float = 30
) -> None:
    """Wait for ``commit`` to be settled; on a timeout, say what each replica logged last."""
    try:
        eventually(lambda: settled_at(store, commit), what, timeout)
    except AssertionError as error:
        logs = "\n".join(
            f"--- replica {i} (exit {r.proc.poll()}):\n" + "".join(r.lines[-25:])
            for i, r in enumerate(replicas)
        )
        raise AssertionError(f"{error}\n{logs}") from None


def test_three_replicas_reconcile_each_workload_once_per_commit_and_survive_a_kill(
    make_repo: MakeRepo, pg_store: str
) -> None:
    repo = make_repo()
    names = [f"w{i:02d}" for i in range(12)]
    first = repo.commit(
        {"reconciler.yaml": CONFIG} | {f"apps/{n}/score.yaml": workload(n) for n in names}
    )
    replicas = [Process("--store", pg_store, "--lease-ttl", "3", cwd=repo.root) for _ in range(3)]
    try:
        # Three processes start at once: on a busy machine that alone takes a while.
        settle(replicas, pg_store, first, "the first commit", 90)
        changed = [*names[:6], "w12", "w13"]
        second = repo.commit(
            {f"apps/{n}/score.yaml": workload(n).replace("nginx", "nginx:1.27") for n in changed}
        )
        settle(replicas, pg_store, second, "the second commit")
        replicas[0].kill()
        everyone = [*names, "w12", "w13"]
        third = repo.commit(
            {f"apps/{n}/score.yaml": workload(n).replace("nginx", "nginx:1.28") for n in everyone}
        )
        settle(replicas, pg_store, third, "the third commit, one replica down")
        assert recorded_at(pg_store, third) == set(everyone)
        expected = (
            {(first, n): 1 for n in names}
            | {(second, n): 1 for n in changed}
            | {(third, n): 1 for n in everyone}
        )
        assert applies(pg_store) == expected  # each workload once per commit that changed it
    finally:
        codes = [r.stop() for r in replicas if r.proc.poll() is None]  # none left behind
    assert codes == [0, 0], "".join(line for r in replicas for line in r.lines[-10:])
