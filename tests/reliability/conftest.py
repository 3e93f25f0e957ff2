"""What the reliability tests share: the real daemon as a process, PostgreSQL helpers, waiting.

Nothing here sleeps to synchronise: ``eventually`` polls a condition until a deadline, and the
daemon's stderr is read by a thread into a list the tests search.
"""

from __future__ import annotations

import functools
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psycopg
import pytest

from tests.e2e.test_cli_validate import RECONCILER
from tests.support.gitrepos import GitRepo

T = TypeVar("T")
ADMIN = os.environ.get("RECONCILER_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
POSTGRES_URL = f"{ADMIN}/postgres"


# -- Git notes and branches -------------------------------------------------------------------


def notes(repo: GitRepo, commit: str) -> list[dict[str, Any]]:
    done = subprocess.run(
        ["git", "notes", "--ref=reconciler", "show", commit],
        cwd=repo.root,
        env=repo.env,
        capture_output=True,
        text=True,
        check=False,
    )
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def final_phase(repo: GitRepo, commit: str, env: str) -> str | None:
    """The phase of the environment's verdict noted on ``commit`` for ``env`` (None while there
    is none): its line without per-workload scope, written once every workload is done."""
    done = [
        n["phase"] for n in notes(repo, commit) if n["environment"] == env and n.get("scope") == []
    ]
    done = [p for p in done if p not in ("Running", "Pending")]
    if "Succeeded" in done:
        return "Succeeded"
    return done[-1] if done else None


def notes_count(repo: GitRepo) -> int:
    """Lines in every note: one per status written."""
    listed = subprocess.run(
        ["git", "notes", "--ref=reconciler", "list"],
        cwd=repo.root,
        env=repo.env,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    return sum(len(notes(repo, commit)) for commit in listed[1::2])


def deployed_workloads(repo: GitRepo, env: str) -> set[str]:
    """The workloads whose manifests the deploy branch holds."""
    done = subprocess.run(
        ["git", "ls-tree", "-r", "--name-only", f"reconciler/deploy/{env}"],
        cwd=repo.root,
        env=repo.env,
        capture_output=True,
        text=True,
        check=False,
    )
    files = done.stdout.split()
    return {f.split("/")[0] for f in files if f.endswith("/manifests.yaml")}


def all_refs_text(repo: GitRepo) -> str:
    """Every blob reachable from any ref (branches, notes, status), as one text, for greps."""
    done = subprocess.run(
        ["git", "rev-list", "--objects", "--all"],
        cwd=repo.root,
        env=repo.env,
        capture_output=True,
        text=True,
        check=True,
    )
    objects = [line.split()[0] for line in done.stdout.splitlines() if line.strip()]
    batch = subprocess.run(
        ["git", "cat-file", "--batch"],
        cwd=repo.root,
        env=repo.env,
        input="\n".join(objects) + "\n",
        capture_output=True,
        text=True,
        errors="replace",
        check=True,
    )
    return batch.stdout


# -- workloads ---------------------------------------------------------------------------------


def pg_workload(name: str, image: str = "nginx:1.27") -> str:
    return (
        "apiVersion: score.dev/v1b1\n"
        f"metadata:\n  name: {name}\n"
        f"containers:\n  main:\n    image: {image}\n"
        "    variables:\n      DB_NAME: ${resources.db.name}\n"
        "resources:\n  db:\n    type: postgres\n"
    )


def plain_workload(name: str, image: str = "nginx:1.27") -> str:
    return (
        "apiVersion: score.dev/v1b1\n"
        f"metadata:\n  name: {name}\n"
        f"containers:\n  main:\n    image: {image}\n"
        "    variables:\n      CACHE: ${resources.cache.host}\n"
        "resources:\n  cache:\n    type: redis\n"
    )


def command_provisioner(script: Path, resource_type: str) -> str:
    """A ``cmd://python3`` provisioner of ``resource_type`` that runs ``script``; it outputs
    ``url``."""
    return (
        f"- uri: cmd://python3\n  type: {resource_type}\n  args: [{str(script)!r}]\n"
        "  expected_outputs: [url]\n"
    )


def with_resource(workload: str, name: str, resource_type: str) -> str:
    """``workload`` (a ``plain_workload``) with one more resource."""
    return workload.replace("resources:\n", f"resources:\n  {name}:\n    type: {resource_type}\n")


def config(env: str, extra: str = "") -> str:
    return f"environments:\n  {env}:\n    branch: main\n    resync: 1h\n{extra}"


# -- PostgreSQL ----------------------------------------------------------------------------------


def databases(env: str, admin: str = ADMIN) -> set[str]:
    prefix = env.replace("-", "_") + "%"
    with psycopg.connect(f"{admin}/postgres", autocommit=True) as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (prefix,))
        return {r[0] for r in rows}


def drop_environment(env: str, admin: str = ADMIN) -> None:
    """Drop every database and role named after ``env`` (what the tests made)."""
    prefix = env.replace("-", "_") + "%"
    with psycopg.connect(f"{admin}/postgres", autocommit=True) as conn:
        for (db,) in conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", (prefix,)
        ).fetchall():
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        for (role,) in conn.execute(
            "SELECT rolname FROM pg_roles WHERE rolname LIKE %s", (prefix,)
        ).fetchall():
            conn.execute(f'DROP ROLE IF EXISTS "{role}"')


@pytest.fixture
def env_names() -> Iterator[Callable[[], str]]:
    """``new()`` gives a fresh environment name; every database and role made under one is
    dropped afterwards, so trials never collide with each other or with other tests."""
    made: list[str] = []

    def new() -> str:
        name = f"rel-{secrets.token_hex(4)}"
        made.append(name)
        return name

    yield new
    for name in made:
        drop_environment(name)


def sqlite_count(db: Path, query: str) -> int:
    """One number from the SQLite store, read-only; 0 while the file or table does not exist."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1.0) as conn:
            return int(conn.execute(query).fetchone()[0])
    except sqlite3.Error:
        return 0


# -- the daemon --------------------------------------------------------------------------------


LEASE_TTL = "1.5"
"""A daemon killed with SIGKILL keeps its environments' leases until they run out (30 s by
default); the tests restart daemons after kills, so they use a short ttl."""


@functools.cache
def lease_options() -> tuple[str, ...]:
    """``--lease-ttl`` where this reconciler has it (asked once per session)."""
    shown = subprocess.run(
        [RECONCILER, "run", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
        check=False,
    )
    return ("--lease-ttl", LEASE_TTL) if "--lease-ttl" in shown.stdout else ()


class Daemon:
    """``reconciler run`` on ``repo``, listening on a free port; stderr collected in ``lines``."""

    def __init__(
        self,
        repo: GitRepo,
        *args: str,
        env: dict[str, str] | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        environ = {
            **os.environ,
            "NO_COLOR": "1",
            "RECONCILER_POSTGRES_URL": POSTGRES_URL,
            **(env or {}),
        }
        self.repo = repo
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [RECONCILER, "run", "--listen", "127.0.0.1:0", *lease_options(), *args],
            cwd=repo.root,
            env=environ,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._started = threading.Event()
        self.url = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._started.wait(start_timeout)
        if not self.url:
            self.kill()
            raise AssertionError("the daemon did not start:\n" + self.stderr)

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            if not self.url and '"daemon started"' in line:
                self.url = "http://" + json.loads(line)["listen"]
                self._started.set()
        self._started.set()

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    def logged(self, event: str) -> list[dict[str, Any]]:
        """The JSON log records whose event is ``event``."""
        out = []
        for line in list(self.lines):
            if f'"{event}"' in line:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if record.get("event") == event:
                    out.append(record)
        return out

    def alive(self) -> bool:
        return self.proc.poll() is None

    def get(self, path: str, timeout: float = 10.0) -> httpx.Response:
        return httpx.get(self.url + path, timeout=timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._reader.join(timeout=10)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=60)
        self._reader.join(timeout=10)
        return code


@pytest.fixture
def daemons() -> Iterator[Callable[..., Daemon]]:
    """``start(repo, *args, env=...)``: a daemon stopped (or killed) when the test ends."""
    started: list[Daemon] = []

    def start(repo: GitRepo, *args: str, env: dict[str, str] | None = None) -> Daemon:
        daemon = Daemon(repo, *args, env=env)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        if daemon.alive():
            try:
                daemon.stop()
            except subprocess.TimeoutExpired:
                daemon.kill()


# -- a private PostgreSQL cluster ----------------------------------------------------------------


def _pg_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PrivateCluster:
    """A PostgreSQL cluster of our own in a temporary folder, on its own port and socket: the
    shared server on 5432 is never stopped. Runs as the ``postgres`` user when we are root."""

    def __init__(self, root: Path) -> None:
        bindir = _pg_bin()
        if bindir is None:
            pytest.skip("no PostgreSQL binaries (initdb) on this machine")
        self.bin = bindir
        self.dir = root / "pgdata"
        self.socket_dir = root / "pgsock"
        self.port = _free_port()
        self.user: str | None = None
        if os.geteuid() == 0:
            self.user = "postgres"
            try:
                pwd.getpwnam(self.user)
            except KeyError:
                pytest.skip("running as root without a 'postgres' user to run a cluster as")
        for folder in (root, self.socket_dir):
            folder.mkdir(parents=True, exist_ok=True)
            if self.user:
                shutil.chown(folder, self.user)
        root.chmod(0o755)
        self._run("initdb", "-D", str(self.dir), "-U", "postgres", "-A", "trust", "--no-sync")
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin / tool), *args]
        if self.user:
            command = ["runuser", "-u", self.user, "--", *command]
        # No pipes: the server inherits them and would keep them open past pg_ctl's exit.
        subprocess.run(
            command,
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=120,
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.dir.parent / "server.log")
        self._run(
            "pg_ctl", "-D", str(self.dir), "-l", log, "-o", options, "-w", "-t", "60", "start"
        )

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.dir), "-m", "immediate", "-w", "stop")

    def running(self) -> bool:
        return (self.dir / "postmaster.pid").exists()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def private_cluster() -> Iterator[PrivateCluster]:
    """Under /tmp itself (pytest's folders are private to us, and the server runs as another
    user); removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="reconciler-pg-"))
    try:
        cluster = PrivateCluster(root)
        cluster.start()
        try:
            yield cluster
        finally:
            if cluster.running():
                cluster.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
