"""Pushing the branches the reconciler writes (the status branch, deploy branches) to the remote
it mirrors, so that users and Argo CD or Flux see them where the Score files live.

Every replica writes in a mirror of its own, so two replicas' commits on one branch diverge. A
push the remote rejects because another replica pushed first fetches theirs and merges: the two
trees are merged three-way, ours winning where both sides changed the same file (each replica
writes the files of the workloads it leased, so that is rare: two verdicts on one environment),
and the merge is pushed. That makes the branch's history the union of what every replica wrote.
"""

from __future__ import annotations

from pathlib import Path

import pygit2
from pygit2.enums import MergeFavor

from reconciler.catalogue import Code
from reconciler.gitops.errors import GitError
from reconciler.gitops.gitcli import push_merging
from reconciler.gitops.reflock import lost_race

PUSH_ATTEMPTS = 5
"""Pushes per call; each rejected one fetches and merges first."""
AUTHOR = ("score-reconciler", "reconciler@localhost")


def push_branch(
    repo_path: Path, remote: str, branch: str, *, attempts: int = PUSH_ATTEMPTS
) -> None:
    """Push ``refs/heads/<branch>`` to ``remote``; on a rejection fetch theirs, merge, retry."""
    ref = f"refs/heads/{branch}"
    if _open(repo_path).references.get(ref) is None:
        return  # nothing written yet, nothing to push
    push_merging(
        repo_path,
        remote,
        ref,
        merge=lambda incoming: merge_into(repo_path, ref, incoming),
        code=_CODE,
        attempts=attempts,
    )


_CODE = Code.BRANCH_PUSH_FAILED


def merge_into(repo_path: Path, ref: str, other: str) -> None:
    """Make ``ref`` contain ``other``: fast-forward when it can, else a merge commit whose tree
    is the three-way merge of both, ours winning a conflict. Moves ``ref`` only if nobody moved
    it meanwhile (a concurrent local writer's commit is merged at the next rejection)."""
    repo = _open(repo_path)
    ours = repo.references[ref].peel(pygit2.Commit)
    theirs = repo.references[other].peel(pygit2.Commit)
    if ours.id == theirs.id or repo.descendant_of(ours.id, theirs.id):
        return
    if repo.descendant_of(theirs.id, ours.id):
        target = theirs.id
    else:
        base_id = repo.merge_base(ours.id, theirs.id)
        base = repo[base_id].peel(pygit2.Tree).id if base_id else repo.TreeBuilder().write()
        index = repo.merge_trees(base, ours.tree, theirs.tree, favor=MergeFavor.OURS)
        tree = index.write_tree(repo)
        signature = pygit2.Signature(*AUTHOR)
        message = f"reconciler: merge {ref.removeprefix('refs/heads/')} from the remote\n"
        target = repo.create_commit(None, signature, signature, message, tree, [ours.id, theirs.id])
    reference = repo.references[ref]
    if reference.target != ours.id:
        return  # a local writer moved it meanwhile: the next push's rejection merges again
    try:
        reference.set_target(target, "reconciler: merge from the remote")
    except (pygit2.GitError, OSError) as exc:
        if lost_race(Path(repo.path), ref, exc):
            return
        raise GitError(_CODE, f"{ref}: cannot move it: {exc}") from exc


def _open(repo_path: Path) -> pygit2.Repository:
    try:
        return pygit2.Repository(str(repo_path))
    except pygit2.GitError as exc:
        raise GitError(_CODE, f"{repo_path}: cannot open the repository: {exc}") from exc
