"""`reconciler validate` as a user runs it: the real console script in a real process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler import __version__
from tests.conftest import PROJECT, WriteRepo

pytestmark = pytest.mark.slow

RECONCILER = shutil.which("reconciler", path=str(Path(sys.executable).parent)) or "reconciler"

GOOD = """\
apiVersion: score.dev/v1b1
metadata:
  name: web
containers:
  main:
    image: nginx
"""


def reconciler(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run(
        [RECONCILER, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_the_bundled_example_repository_validates_clean() -> None:
    result = reconciler("validate", "examples/shop", cwd=PROJECT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("0 errors, 0 warnings in 5 files")


def test_errors_exit_1_with_file_line_column_code_and_hint(write_repo: WriteRepo) -> None:
    root = write_repo({"apps/web/score.yaml": GOOD.replace("image:", "imagee:")})
    result = reconciler("validate", cwd=root)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert (
        "apps/web/score.yaml:6:5: error RCN-1101 containers.main.imagee: unknown field" in lines[2]
    )
    assert "did you mean 'image'?" in lines[3]
    assert "Traceback" not in result.stderr


def test_paths_are_shown_relative_to_the_working_directory(write_repo: WriteRepo) -> None:
    root = write_repo({"apps/web/score.yaml": GOOD.replace("nginx", "")})
    result = reconciler("validate", "repo/apps/web/score.yaml", cwd=root.parent)
    assert result.returncode == 1
    assert result.stdout.startswith("repo/apps/web/score.yaml:6:")


def test_json_output_is_the_documented_shape(write_repo: WriteRepo) -> None:
    root = write_repo({"score.yaml": GOOD.replace("name: web", "name: Web")})
    result = reconciler("validate", "--format", "json", cwd=root)
    assert result.returncode == 1
    document = json.loads(result.stdout)
    assert document["files"] == 1
    (diag,) = document["diagnostics"]
    assert set(diag) == {"code", "severity", "file", "line", "column", "message", "hint"}
    assert (diag["code"], diag["severity"], diag["file"], diag["line"], diag["column"]) == (
        "RCN-1107",
        "error",
        "score.yaml",
        3,
        9,
    )


def test_sarif_output_is_usable_by_code_scanning(write_repo: WriteRepo) -> None:
    root = write_repo({"score.yaml": GOOD.replace("nginx", "nginx\n    command: sh")})
    result = reconciler("validate", "--format", "sarif", cwd=root)
    assert result.returncode == 1
    sarif = json.loads(result.stdout)
    assert sarif["version"] == "2.1.0"
    run = sarif["runs"][0]
    assert [r["id"] for r in run["tool"]["driver"]["rules"]] == ["RCN-1103"]
    (res,) = run["results"]
    assert res["ruleId"] == "RCN-1103"
    assert res["level"] == "error"
    location = res["locations"][0]["physicalLocation"]
    assert location["artifactLocation"]["uri"] == "score.yaml"
    assert location["region"] == {"startLine": 7, "startColumn": 14}
    assert res["partialFingerprints"]["primaryLocationLineHash"]


def test_warnings_alone_exit_0(write_repo: WriteRepo) -> None:
    text = GOOD + "    files:\n    - target: /x\n      content: y\n"
    result = reconciler("validate", cwd=write_repo({"score.yaml": text}))
    assert result.returncode == 0
    assert "warning RCN-1306" in result.stdout


@pytest.mark.parametrize(
    "args", [("validate", "no/such/path"), ("validate", "--format", "xml"), ("nope",)]
)
def test_usage_errors_exit_2(write_repo: WriteRepo, args: tuple[str, ...]) -> None:
    result = reconciler(*args, cwd=write_repo({"score.yaml": GOOD}))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_hostile_files_are_diagnostics_not_tracebacks(write_repo: WriteRepo) -> None:
    laughs = "a: &a [x,x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )
    root = write_repo(
        {
            "a/score.yaml": b"\xff\xfe not utf-8",
            "b/score.yaml": "",
            "c/score.yaml": laughs,
            "d/score.yaml": "a: " + "[" * 3000 + "]" * 3000,
            "e/score.yaml": "x: '" + "y" * (10 * 1024 * 1024) + "'\n",
            "f/score.yaml": GOOD + "---\n" + GOOD,
        }
    )
    result = reconciler("validate", "--format", "json", cwd=root)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    found = {(d["file"], d["code"]) for d in json.loads(result.stdout)["diagnostics"]}
    assert found == {
        ("a/score.yaml", "RCN-1004"),
        ("b/score.yaml", "RCN-1005"),
        ("c/score.yaml", "RCN-1007"),
        ("d/score.yaml", "RCN-1007"),
        ("e/score.yaml", "RCN-1006"),
        ("f/score.yaml", "RCN-1003"),
    }


def test_explain_prints_the_catalogue_entry() -> None:
    result = reconciler("explain", "RCN-1101", cwd=PROJECT)
    assert result.returncode == 0
    assert result.stdout.startswith("RCN-1101: unknown field")
    assert "docs/errors.md#rcn-1101" in result.stdout


def test_version_flag_and_command_print_the_package_version(tmp_path: Path) -> None:
    flag = reconciler("--version", cwd=tmp_path)
    command = reconciler("version", cwd=tmp_path)

    assert (flag.returncode, command.returncode) == (0, 0)
    assert flag.stdout == command.stdout == f"reconciler {__version__}\n"
