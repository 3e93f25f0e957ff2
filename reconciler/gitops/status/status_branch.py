"""The status branch: the latest status of every environment and workload as files, and the
history of statuses as the branch's Git history.

``write_status`` commits ``<env>/_environment.yaml`` and ``<env>/<workload>.yaml`` (workload names
are RFC 1123 labels, so the leading underscore cannot collide with one) on ``reconciler/status``
through ``commit.write_branch``: no checkout, bare repositories work, the ref moves by
compare-and-swap. A status describes its whole environment, so the environment's folder is
replaced and a removed workload's file goes with it.

The files hold the state (commit, phase, sync, health, counts, failures) but not the run id or
the time, which go in the commit message: a periodic resync that finds nothing new then changes
no file, and ``write_branch`` makes no commit.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from reconciler.gitops.commit import write_branch
from reconciler.gitops.errors import GitError
from reconciler.gitops.push import push_branch
from reconciler.gitops.status.model import CommitStatus, format_time
from reconciler.gitops.status.reporter import STATUS_BRANCH_WRITE_FAILED

STATUS_BRANCH = "reconciler/status"
AUTHOR = ("score-reconciler", "reconciler@localhost")
ENVIRONMENT_FILE = "_environment.yaml"
_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_YAML_WORDS = frozenset({"y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"})


def write_status(
    repo_path: Path, statuses: Sequence[CommitStatus], *, branch: str = STATUS_BRANCH
) -> str | None:
    """One commit holding every status's files; its id, or None when nothing changed."""
    if not statuses:
        return None
    files: dict[str, bytes | None] = {}
    for status in statuses:  # a later status of the same environment wins
        if status.scope is None:
            files = {k: v for k, v in files.items() if not k.startswith(f"{status.environment}/")}
        files.update(status_files(status))
    try:
        return write_branch(
            repo_path, branch, files, prefix="", message=_message(statuses), author=AUTHOR
        )
    except GitError as exc:
        raise GitError(STATUS_BRANCH_WRITE_FAILED, exc.message) from exc


def status_files(status: CommitStatus) -> dict[str, bytes | None]:
    """The files ``status`` speaks for (``CommitStatus.scope``): the environment's whole folder,
    replaced (None removes it, then its files are written); or some workloads' files, a removed
    workload's file deleted; or the environment's own file."""
    env = status.environment
    files: dict[str, bytes | None] = {}
    if status.scope is None:
        files[env] = None
    if not status.partial:
        files[f"{env}/{ENVIRONMENT_FILE}"] = to_yaml(_environment_doc(status))
    for name in status.scope or ():
        if name not in status.workloads:
            files[f"{env}/{name}.yaml"] = None
    for name, workload in status.workloads.items():
        files[f"{env}/{name}.yaml"] = to_yaml(
            {
                "environment": env,
                "workload": name,
                "commit": status.commit,
                "phase": str(status.phase),
                "sync": str(workload.sync),
                "health": str(workload.health),
                "message": workload.message,
            }
        )
    return files


def _environment_doc(status: CommitStatus) -> dict[str, Any]:
    doc = status.to_dict()
    del doc["run_id"], doc["at"]
    doc["workloads"] = {
        name: {"sync": w["sync"], "health": w["health"]} for name, w in doc["workloads"].items()
    }
    return doc


def _message(statuses: Sequence[CommitStatus]) -> str:
    heads = ", ".join(f"{s.environment} {s.phase} on {s.commit[:7]}" for s in statuses)
    trailers = "".join(
        f"Reconciler-Environment: {s.environment}\nReconciler-Commit: {s.commit}\n"
        f"Reconciler-Run: {s.run_id}\nReconciler-Time: {format_time(s.at)}\n"
        for s in statuses
    )
    return f"reconciler: {heads}\n\n{trailers}"


# -- a small YAML writer -----------------------------------------------------------------------


def to_yaml(doc: Mapping[str, Any]) -> bytes:
    """Block-style YAML, keys in the order given, strings double-quoted (JSON's escapes are
    YAML's too), so every value reads back as the same type. Enough for status files, which
    hold only mappings, lists of mappings and scalars."""
    return "".join(_mapping(doc, 0)).encode()


def _mapping(doc: Mapping[str, Any], indent: int) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    for key, value in doc.items():
        head = f"{pad}{_key(key)}:"
        if isinstance(value, Mapping) and value:
            lines += [head + "\n", *_mapping(value, indent + 2)]
        elif isinstance(value, list | tuple) and value:
            lines.append(head + "\n")
            for item in value:
                lines += _list_item(item, indent + 2)
        else:
            lines.append(f"{head} {_scalar(value)}\n")
    return lines


def _list_item(item: Any, indent: int) -> list[str]:
    if not isinstance(item, Mapping) or not item:
        return [f"{' ' * indent}- {_scalar(item)}\n"]
    nested = _mapping(item, indent + 2)
    return [f"{' ' * indent}- {nested[0].lstrip()}", *nested[1:]]


def _key(key: str) -> str:
    if _PLAIN_KEY.match(key) and key.lower() not in _YAML_WORDS:
        return key
    return json.dumps(key, ensure_ascii=False)


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "{}"
    if isinstance(value, list | tuple):
        return "[]"
    if isinstance(value, bool | int):
        return json.dumps(value)
    return json.dumps(str(value), ensure_ascii=False)


class StatusBranch:
    """The status branch reporter: a commit per reported status (none when nothing changed),
    pushed to ``remote`` when there is one (a retry after a failed push writes nothing new and
    pushes again)."""

    name = "status-branch"

    def __init__(
        self, repo_path: Path, *, branch: str = STATUS_BRANCH, remote: str | None = None
    ) -> None:
        self._repo_path = repo_path
        self._branch = branch
        self._remote = remote

    def report(self, status: CommitStatus) -> None:
        write_status(self._repo_path, [status], branch=self._branch)
        if self._remote is not None:
            push_branch(self._repo_path, self._remote, self._branch)
