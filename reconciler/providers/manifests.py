"""The ``manifests`` workload target: Kubernetes YAML committed to a deploy branch per environment.

Argo CD or Flux follow the branch and apply what it holds; the reconciler never talks to the
cluster. The engine calls ``apply`` and ``delete`` for each workload (from several threads), which
only stage files, then ``flush`` once per environment and run, which writes everything staged as
one commit, so a deploy is one revision for the GitOps tool to sync and to roll back.

Branch layout (docs/manifests.md): one folder per workload at the root of the branch,
``<workload>/manifests.yaml`` (the workload's objects) and ``<workload>/resources.yaml`` (the
objects its resources' provisioners rendered, when there are any). A folder is written whole:
applying a workload replaces its folder, deleting it removes the folder.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Final

from reconciler.catalogue import Code
from reconciler.gitops import GitError, Repository
from reconciler.gitops.commit import write_branch
from reconciler.gitops.push import push_branch
from reconciler.providers.base import DriverError, Observation, WorkloadRequest
from reconciler.providers.kubernetes_objects import (
    render_documents,
    render_error,
    render_resources,
    render_workload,
)

MANIFESTS_FILE: Final = "manifests.yaml"
RESOURCES_FILE: Final = "resources.yaml"
DEFAULT_AUTHOR: Final = ("score-reconciler", "score-reconciler@localhost")
_FOLDER: Final = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

Staged = dict[str, bytes] | None
"""A workload's folder as staged: its files, or None to remove it."""


class ManifestsTarget:
    """A ``WorkloadTarget`` writing to ``branch_template.format(environment=...)`` in
    ``repo_path`` (bare, or a work tree whose checked-out branch is another one)."""

    def __init__(
        self,
        repo_path: Path,
        *,
        branch_template: str = "reconciler/deploy/{environment}",
        author: tuple[str, str] = DEFAULT_AUTHOR,
        remote: str | None = None,
    ) -> None:
        self.repo_path = repo_path
        self.branch_template = branch_template
        self.author = author
        self.remote = remote
        """Where the deploy branch is pushed after each commit (the daemon on a remote
        repository): Argo CD or Flux read it there, not in the daemon's mirror."""
        self._lock = threading.Lock()
        self._staged: dict[str, dict[str, Staged]] = {}

    @property
    def local(self) -> bool:
        """Staging renders in memory and a flush commits to the local repository; only a
        flush that pushes (``remote``) talks to a server."""
        return self.remote is None

    def branch(self, environment: str) -> str:
        return self.branch_template.format(environment=environment)

    def render(self, request: WorkloadRequest) -> dict[str, bytes]:
        """The files of a workload's folder, by name: what ``apply`` stages, for previews too."""
        files = {MANIFESTS_FILE: render_documents(render_workload(request)).encode()}
        resources = render_resources(request)
        if resources:
            files[RESOURCES_FILE] = render_documents(resources).encode()
        return files

    def apply(self, request: WorkloadRequest) -> Observation:
        """Stage the workload's folder; nothing is visible until ``flush``."""
        _check_folder(request.name)
        files = self.render(request)
        self._stage(request.environment, request.name, files)
        return Observation(
            exists=True,
            message=f"staged for branch '{self.branch(request.environment)}'",
            outputs={"branch": self.branch(request.environment), "path": f"{request.name}/"},
        )

    def delete(self, environment: str, name: str) -> None:
        """Stage the removal of the workload's folder."""
        _check_folder(name)
        self._stage(environment, name, None)

    def observe(self, environment: str, name: str) -> Observation:
        """Whether the branch, as committed, holds the workload (staged changes do not count)."""
        branch = self.branch(environment)
        try:
            repo = Repository.open(self.repo_path)
            head = repo.branch_head(branch)
            exists = head is not None and repo.tree(head).exists(f"{name}/{MANIFESTS_FILE}")
        except GitError as exc:
            raise DriverError(exc.code, exc.message, retryable=True) from exc
        where = f"branch '{branch}'"
        return Observation(exists=exists, message=f"in {where}" if exists else f"not in {where}")

    def flush(self, environment: str, message: str) -> str | None:
        """Commit everything staged for ``environment`` as one commit; its id, or None when
        nothing was staged or nothing changed. On failure the staged changes are kept (newer
        ones win) so that the next flush tries them again."""
        with self._lock:
            staged = self._staged.pop(environment, {})
        if not staged:
            return None
        branch = self.branch(environment)
        try:
            commit = write_branch(
                self.repo_path,
                branch,
                _files(staged),
                prefix="",
                message=message,
                author=self.author,
            )
        except GitError as exc:
            with self._lock:  # keep them for the next flush; what was staged since wins
                self._staged[environment] = {**staged, **self._staged.get(environment, {})}
            raise DriverError(Code.DEPLOY_BRANCH_WRITE_FAILED, exc.message, retryable=True) from exc
        if self.remote is not None:
            # Pushed even when nothing changed: an earlier push may have failed. A failure
            # fails the step, whose retry stages the same workloads again and pushes.
            try:
                push_branch(self.repo_path, self.remote, branch)
            except GitError as exc:
                raise DriverError(exc.code, exc.message, retryable=True) from exc
        return commit

    def staged(self, environment: str) -> list[str]:
        """The workloads with staged changes, sorted: what the next ``flush`` will write."""
        with self._lock:
            return sorted(self._staged.get(environment, {}))

    def _stage(self, environment: str, name: str, files: Staged) -> None:
        with self._lock:
            self._staged.setdefault(environment, {})[name] = files


def _files(staged: dict[str, Staged]) -> dict[str, bytes | None]:
    """Each folder replaced whole: removed, then its new files written."""
    files: dict[str, bytes | None] = {}
    for name, content in sorted(staged.items()):
        files[name] = None
        for file, data in sorted((content or {}).items()):
            files[f"{name}/{file}"] = data
    return files


def _check_folder(name: str) -> None:
    """Workload names are RFC 1123 labels in Score; anything else could leave its folder."""
    if not _FOLDER.match(name) or len(name) > 63:
        raise render_error(f"workload '{name}': not a valid name for its folder on the branch")
