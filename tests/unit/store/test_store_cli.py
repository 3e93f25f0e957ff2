"""``reconciler db ...`` as a user runs it, on both databases."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from reconciler.cli.db_cmd import app
from reconciler.store import Store
from reconciler.store.migrations import head

HEAD = head()

runner = CliRunner()


def db(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


def test_upgrade_then_current_shows_the_head(store_url: str) -> None:
    code, out, _ = db("current", "--store", store_url)
    assert (code, out.startswith("none (")) == (0, True)
    code, out, _ = db("upgrade", "--store", store_url)
    assert (code, out.endswith(f": at revision {HEAD} (head)\n")) == (0, True)
    assert db("current", "--store", store_url)[:2] == (0, f"{HEAD} (head)\n")


def test_store_from_the_environment(store_url: str) -> None:
    assert db("upgrade", env={"RECONCILER_STORE": store_url})[0] == 0
    assert db("current", env={"RECONCILER_STORE": store_url})[:2] == (0, f"{HEAD} (head)\n")


def test_default_store_is_in_the_repository_git_dir(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    code, _, _ = db("upgrade", "--repo", str(tmp_path), env={"RECONCILER_STORE": ""})
    assert code == 0
    assert (tmp_path / ".git" / "reconciler" / "state.db").is_file()


def test_backup_and_restore(store_url: str, tmp_path: Path) -> None:
    with Store.open(store_url) as store:
        store.set_last_commit("prod", "c" * 40)
    assert db("backup", str(tmp_path / "b.json"), "--store", store_url)[0] == 0
    with Store.open(store_url) as store:
        store.set_last_commit("prod", "d" * 40)
    code, out, _ = db("restore", str(tmp_path / "b.json"), "--store", store_url)
    assert (code, out.startswith(f"restored {tmp_path / 'b.json'} into ")) == (0, True)
    with Store.open(store_url) as store:
        assert store.last_commit("prod") == "c" * 40


@pytest.mark.parametrize(
    ("args", "code_id"),
    [
        (["upgrade", "--store", "mysql://u:pw@h/db"], "RCN-5003"),
        (["current", "--store", "postgresql://u:pw@127.0.0.1:1/db"], "RCN-5001"),
        (["restore", "missing.json", "--store", "sqlite:///{tmp}/s.db"], "RCN-5006"),
    ],
)
def test_errors_are_one_line_with_a_hint(args: list[str], code_id: str, tmp_path: Path) -> None:
    code, out, err = db(*[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert (code, out) == (1, "")
    first, hint = err.splitlines()[:2]
    assert first.startswith(f"error {code_id} ")
    assert hint.startswith("  hint: ")
    assert "Traceback" not in err
    assert ":pw@" not in err


def test_in_a_real_process(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/state.db"
    script = "from reconciler.cli.db_cmd import app; app()"
    env = {**os.environ, "RECONCILER_STORE": url}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", script, *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )

    assert run("upgrade").returncode == 0
    current = run("current")
    assert (current.returncode, current.stdout) == (0, f"{HEAD} (head)\n")
    failed = run("upgrade", "--store", "sqlite://")
    assert (failed.returncode, failed.stderr.split(" ")[:2]) == (1, ["error", "RCN-5003"])
