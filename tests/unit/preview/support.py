"""Score files and the pull request the preview tests share (the fixture is in conftest.py)."""

from __future__ import annotations

from dataclasses import dataclass

from tests.support.gitrepos import GitRepo

CONFIG = "environments:\n  staging:\n    branch: main\n  production:\n    branch: main\n"


def score(name: str, image: str, extra: str = "") -> str:
    return (
        f"apiVersion: score.dev/v1b1\nmetadata:\n  name: {name}\n"
        f"containers:\n  main:\n    image: {image}\n{extra}"
    )


WEB_DB = "resources:\n  db:\n    type: postgres\n"
BROKEN = score("worker", "worker:1").replace("    image:", "    imag:")
"""``imag`` sits on line 6 of the file."""


@dataclass
class PullRequest:
    repo: GitRepo
    base: str
    head: str
