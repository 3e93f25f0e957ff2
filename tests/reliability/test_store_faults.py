"""The daemon's store fails under it: it reports coded errors, stays up, and converges after.

- PostgreSQL: a private cluster of our own (never the shared server on 5432) is stopped while a
  run is in flight: ``/readyz`` answers 503 with a RCN-5xxx check, the process stays up, and once
  the cluster is back the commit reconciles.
- SQLite on a read-only file system or a full one (a tiny tmpfs; skipped where this process
  cannot mount one): a coded RCN-5xxx error, not a traceback, and convergence once the fault
  is gone.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from tests.conftest import MakeRepo
from tests.e2e.test_cli_validate import RECONCILER
from tests.reliability.conftest import (
    Daemon,
    PrivateCluster,
    command_provisioner,
    config,
    deployed_workloads,
    final_phase,
    notes,
    plain_workload,
    with_resource,
)
from tests.support.gitrepos import GitRepo
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow

STORE_CODE = re.compile(r"RCN-5\d{3}")

GATED_PROVISIONER = """\
import json, os, sys, time
json.load(sys.stdin)
gate = os.environ["RELIABILITY_GATE"]
while not os.path.exists(gate):  # held until the test opens the gate
    time.sleep(0.01)
print(json.dumps({"resource_state": {}, "resource_outputs": {"url": "u"}, "shared_state": {}}))
"""


def gated_repo(make_repo: MakeRepo, tmp_path: Path, env: str) -> tuple[GitRepo, str]:
    """A repository whose one workload needs a resource whose provisioner waits for a file."""
    script = tmp_path / "gated.py"
    script.write_text(GATED_PROVISIONER)
    provisioner = command_provisioner(script, "gated")
    workload = with_resource(plain_workload("aa"), "gated", "gated")
    repo = make_repo()
    head = repo.commit(
        {
            "reconciler.yaml": config(env) + "provisioners: [provisioners/*.yaml]\n",
            "provisioners/gated.yaml": provisioner,
            "apps/aa/score.yaml": workload,
        }
    )
    return repo, head


def runs_in(url: str, status: str) -> int:
    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            row = conn.execute("SELECT count(*) FROM runs WHERE status = %s", (status,)).fetchone()
            return int(row[0]) if row else 0
    except psycopg.Error:
        return 0


def noted_codes(repo: GitRepo, commit: str, env: str) -> list[str]:
    """The codes of the failures in the environment's Failed verdicts noted on ``commit``."""
    return [
        failure["code"]
        for n in notes(repo, commit)
        if n["environment"] == env and n.get("scope") == [] and n["phase"] == "Failed"
        for failure in n["failures"]
    ]


def test_postgresql_store_stopped_mid_reconcile(
    make_repo: MakeRepo,
    tmp_path: Path,
    private_cluster: PrivateCluster,
    daemons: Callable[..., Daemon],
) -> None:
    env = "store-pg"
    repo, head = gated_repo(make_repo, tmp_path, env)
    gate = tmp_path / "gate"
    daemon = daemons(repo, "--store", private_cluster.url, env={"RELIABILITY_GATE": str(gate)})
    assert daemon.get("/readyz").status_code == 200
    eventually(lambda: runs_in(private_cluster.url, "Running") == 1, "the run to be in flight")

    private_cluster.stop()
    gate.touch()  # the step finishes while the store is gone: its checkpoint cannot be written
    answer = eventually(
        lambda: (r := daemon.get("/readyz")).status_code == 503 and r, "/readyz to answer 503"
    )
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert STORE_CODE.search(answer.text), answer.text
    eventually(
        lambda: any(
            STORE_CODE.fullmatch(r.get("code", "")) for r in daemon.logged("reconcile failed")
        ),
        "a coded store error in the log",
    )
    noted = eventually(lambda: noted_codes(repo, head, env), "the stop in the commit's note")
    assert all(STORE_CODE.fullmatch(code) for code in noted), noted
    assert daemon.alive()
    assert daemon.get("/healthz").status_code == 200
    assert "Traceback" not in daemon.stderr

    private_cluster.start()
    eventually(lambda: daemon.get("/readyz").status_code == 200, "/readyz to recover")
    eventually(lambda: final_phase(repo, head, env) == "Succeeded", "the commit's note", 60)
    assert runs_in(private_cluster.url, "Running") == 0
    assert daemon.stop() == 0


# -- SQLite on a file system we break ----------------------------------------------------------


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs of our own; skipped where mounting is not allowed (not root, no
    CAP_SYS_ADMIN)."""
    mount = tmp_path / "fs"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False, capture_output=True)


def remount(mount: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(mount)], check=True, capture_output=True)
    if mode == "rw":
        return


def fill(mount: Path) -> Path:
    """Write until the file system is full; returns the filler to delete."""
    filler = mount / "filler"
    chunk = b"\0" * 65536
    # Unbuffered: a buffered file could still hold bytes when the disk is full, and closing it
    # would raise ENOSPC again, out of the ``with``.
    with filler.open("wb", buffering=0) as out:
        try:
            while True:
                out.write(chunk)
        except OSError:
            pass
    return filler


def test_read_only_sqlite_store_at_start_is_a_coded_error(
    make_repo: MakeRepo, tiny_fs: Path
) -> None:
    repo = make_repo()
    repo.commit({"reconciler.yaml": config("store-ro"), "apps/aa/score.yaml": plain_workload("aa")})
    store = f"sqlite:///{tiny_fs / 'state.db'}"
    created = subprocess.run(
        [RECONCILER, "db", "upgrade", "--store", store],
        cwd=repo.root,
        capture_output=True,
        text=True,
        check=False,
    )
    assert (tiny_fs / "state.db").exists(), created.stdout + created.stderr
    remount(tiny_fs, "ro")
    done = subprocess.run(
        [RECONCILER, "run", "--listen", "127.0.0.1:0", "--store", store],
        cwd=repo.root,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert done.returncode == 1, done.stderr
    assert STORE_CODE.search(done.stderr), done.stderr
    assert "Traceback" not in done.stderr


def test_full_disk_under_the_daemon_is_a_coded_error_then_converges(
    make_repo: MakeRepo, tiny_fs: Path, daemons: Callable[..., Daemon]
) -> None:
    """(A file system cannot be remounted read-only while the daemon writes to it, so the
    read-only case is the store at start, above.)"""
    env = "store-fs"
    repo = make_repo()
    first = repo.commit(
        {"reconciler.yaml": config(env), "apps/aa/score.yaml": plain_workload("aa")}
    )
    daemon = daemons(repo, "--store", f"sqlite:///{tiny_fs / 'state.db'}")
    assert eventually(lambda: final_phase(repo, first, env), "the first note") == "Succeeded"

    def coded_failures() -> list[str]:
        return [
            r.get("code", "")
            for r in daemon.logged("reconcile failed")
            if STORE_CODE.fullmatch(r.get("code", ""))
        ]

    filler = fill(tiny_fs)
    second = repo.commit({"apps/bb/score.yaml": plain_workload("bb")})
    eventually(coded_failures, "a coded error for the full disk")
    noted = eventually(lambda: noted_codes(repo, second, env), "the stop in the second note")
    assert all(STORE_CODE.fullmatch(code) for code in noted), noted
    assert daemon.alive()
    assert daemon.get("/healthz").status_code == 200
    assert "Traceback" not in daemon.stderr
    filler.unlink()
    eventually(lambda: final_phase(repo, second, env) == "Succeeded", "the second note", 60)
    assert deployed_workloads(repo, env) == {"aa", "bb"}
    assert daemon.stop() == 0
