"""The ``git`` binary, for talking to remotes: pushes and fetches run it, so that the user's
credential helpers and SSH configuration apply as they do for their own pushes."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from reconciler.catalogue import Code
from reconciler.gitops.errors import GitError

GIT_TIMEOUT = 120.0

_RACES = ("failed to update ref", "failed to lock", "cannot lock ref", "incorrect old value")
"""How a remote says another push updated the ref while ours was being received."""


def git(repo_path: Path, *args: str, code: Code) -> subprocess.CompletedProcess[str]:
    """Run ``git -C repo_path args``, never prompting; a git that cannot run raises ``code``."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
    try:
        return subprocess.run(
            ["git", "-C", str(repo_path), *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=GIT_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GitError(code, f"git {args[0]}: {exc}") from exc


def rejected(porcelain: str) -> bool:
    """Whether ``git push --porcelain`` says the remote moved on: a non-fast-forward, or a lost
    race on the remote's ref; not a hook or a protection, which another try will not pass."""
    for line in porcelain.splitlines():
        if not line.startswith("!"):
            continue
        if "[rejected]" in line or any(race in line for race in _RACES):
            return True
    return False


def why(done: subprocess.CompletedProcess[str]) -> str:
    """The remote's reason when the porcelain output has one, else git's last word."""
    refused = [line.split("\t")[-1] for line in done.stdout.splitlines() if line.startswith("!")]
    if refused:
        return refused[0]
    text = (done.stderr or done.stdout).strip().splitlines()
    return text[-1] if text else f"git exited with {done.returncode}"


def push_merging(
    repo_path: Path,
    remote: str,
    ref: str,
    *,
    merge: Callable[[str], None],
    code: Code,
    attempts: int,
) -> None:
    """Push ``ref`` to ``remote``; when the remote rejects it because another writer pushed
    first, fetch theirs into a ref of its own, ``merge(that ref)`` into ``ref`` and push again,
    at most ``attempts`` times. Other refusals raise ``code`` at once."""
    incoming = "refs/reconciler/incoming/" + ref.removeprefix("refs/")
    for _ in range(attempts):
        pushed = git(repo_path, "push", "--porcelain", remote, f"{ref}:{ref}", code=code)
        if pushed.returncode == 0:
            return
        if not rejected(pushed.stdout):
            raise GitError(code, f"pushing {ref} to {remote}: {why(pushed)}")
        fetched = git(
            repo_path,
            "fetch",
            "--quiet",
            "--no-tags",
            "--no-write-fetch-head",
            remote,
            f"+{ref}:{incoming}",
            code=code,
        )
        if fetched.returncode != 0:
            raise GitError(code, f"fetching {ref} from {remote}: {why(fetched)}")
        merge(incoming)
    raise GitError(code, f"pushing {ref} to {remote}: still rejected after {attempts} merges")
