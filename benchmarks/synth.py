"""Synthetic watched repositories for the benchmarks: realistic Score files, real Git commits.

The figures in ``docs/performance.md`` are only comparable from run to run if the repository they
plan is the same, so everything here is a pure function of ``(count, seed)``: the same seed gives
byte-identical files and, with the fixed author and dates, the same commit ids.

Commits are written straight into the object database with pygit2 (blobs, then trees, then a
commit on ``refs/heads/main``) instead of through a work tree and the ``git`` binary: 10,000
workloads then take a couple of seconds to generate rather than a minute, and the reconciler reads
commits from the object database anyway, so nothing it measures depends on a checkout.

Shape of one workload (what a platform team's repository typically holds):

- 1 to 3 containers, each with variables using ``${metadata.name}`` and ``${resources.x.y}``;
- one or two service ports;
- one file with inline ``content`` (placeholders expanded), and in one workload out of ten a file
  read from ``source:`` next to the Score file;
- one or two private resources (redis, volume or dns), the volume mounted in the first container;
- a postgres database shared by its group of ``GROUP_SIZE`` workloads (``id: group-N-db``).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pygit2
from pygit2.enums import FileMode

GROUP_SIZE = 20
"""Workloads sharing one postgres database: a team's services around their database."""

ENVIRONMENT = "staging"
BRANCH = "refs/heads/main"
_SIGNATURE_TIME = 1_704_067_200  # 2024-01-01T00:00:00Z: fixed, so commit ids are reproducible

CONFIG = f"""\
apiVersion: reconciler.score.dev/v1alpha1
workloads:
  - apps/**/score.yaml
environments:
  {ENVIRONMENT}:
    branch: main
    variables:
      domain: staging.bench.example.com
      log_level: info
"""

_PRIVATE_KINDS = ("redis", "volume", "dns")
_IMAGES = ("nginx:1.27-alpine", "ghcr.io/acme/api:2.3.1", "ghcr.io/acme/worker:1.9.0")


@dataclass(slots=True)
class SynthRepo:
    """A generated repository: where it is, its Score files, and the commit at its head."""

    path: Path
    count: int
    seed: int
    score_files: list[str]
    head: str
    _commits: int = field(default=1, repr=False)

    def open(self) -> pygit2.Repository:
        return pygit2.Repository(str(self.path))


def workload_name(index: int) -> str:
    return f"svc-{index:05d}"


def workload_path(index: int) -> str:
    return f"apps/group-{index // GROUP_SIZE:04d}/{workload_name(index)}/score.yaml"


def score_file(index: int, rng: random.Random, *, revision: int = 0) -> dict[str, str]:
    """The files of workload ``index``: its Score file and, sometimes, a file it sources.

    ``revision`` changes one variable's value, which is what a typical one-line commit does.
    """
    name = workload_name(index)
    group = index // GROUP_SIZE
    private = rng.sample(_PRIVATE_KINDS, rng.randint(1, 2))
    resources = [
        "resources:",
        "  db:",
        "    type: postgres",
        f"    id: group-{group}-db",
    ]
    for kind in private:
        resources += [f"  {kind}:", f"    type: {kind}"]
    sourced = index % 10 == 3
    lines = [
        "apiVersion: score.dev/v1b1",
        "metadata:",
        f"  name: {name}",
        "  annotations:",
        f"    bench.example.com/group: group-{group}",
        "service:",
        "  ports:",
        "    http:",
        "      port: 80",
        f"      targetPort: {8000 + index % 100}",
    ]
    if rng.random() < 0.3:
        lines += ["    metrics:", "      port: 9090"]
    lines.append("containers:")
    for c in range(rng.randint(1, 3)):
        lines += [
            f"  c{c}:",
            f"    image: {rng.choice(_IMAGES)}",
            "    variables:",
            "      SERVICE_NAME: ${metadata.name}",
            f"      REVISION: '{revision}'",
            "      DATABASE_URL: postgres://${resources.db.username}:${resources.db.password}"
            "@${resources.db.host}:${resources.db.port}/${resources.db.database}",
        ]
        if "redis" in private:
            lines.append("      REDIS_ADDR: ${resources.redis.host}:${resources.redis.port}")
        if "dns" in private:
            lines.append("      PUBLIC_HOST: ${resources.dns.host}")
        lines += [
            "    resources:",
            "      requests:",
            f"        cpu: {rng.choice((50, 100, 250))}m",
            f"        memory: {rng.choice((64, 128, 256))}Mi",
        ]
        if c == 0:
            lines += [
                "    files:",
                "      /etc/app/config.yaml:",
                "        content: |",
                "          service: ${metadata.name}",
                f"          workers: {rng.randint(1, 8)}",
                "          database: ${resources.db.host}",
            ]
            if sourced:
                lines += ["      /etc/app/extra.ini:", "        source: extra.ini"]
            if "volume" in private:
                lines += ["    volumes:", "      /data:", "        source: ${resources.volume}"]
            lines += [
                "    readinessProbe:",
                "      httpGet:",
                f"        port: {8000 + index % 100}",
                "        path: /readyz",
            ]
    files = {workload_path(index): "\n".join([*lines, *resources]) + "\n"}
    if sourced:
        extra = workload_path(index).replace("score.yaml", "extra.ini")
        files[extra] = f"[app]\nname = ${{metadata.name}}\nindex = {index}\n"
    return files


def _rng(seed: int, index: int) -> random.Random:
    """One generator per workload, so that a later commit can rebuild a file with one change."""
    return random.Random(f"{seed}-{index}")


def generate(root: Path, count: int, seed: int) -> SynthRepo:
    """Create a repository of ``count`` workloads under ``root`` with one commit on main."""
    files: dict[str, str] = {"reconciler.yaml": CONFIG, "README.md": "Benchmark repository.\n"}
    score_files: list[str] = []
    for i in range(count):
        produced = score_file(i, _rng(seed, i))
        files.update(produced)
        score_files.append(workload_path(i))
    repo = pygit2.init_repository(str(root), bare=False, initial_head="main")
    tree = _write_tree(repo, _nest(files))
    head = _commit(repo, tree, [], "Synthetic repository", 0)
    return SynthRepo(root, count, seed, score_files, head)


def commit_change(synth: SynthRepo, index: int) -> str:
    """Commit a one-workload change (a variable's new value) on main; returns the new commit."""
    repo = synth.open()
    changed = score_file(index, _rng(synth.seed, index), revision=synth._commits)
    parent = repo.revparse_single(BRANCH).peel(pygit2.Commit)
    tree: pygit2.Tree = parent.tree
    for path, text in changed.items():
        blob = repo.create_blob(text.encode())
        tree = repo[_replace(repo, tree, path.split("/"), blob)].peel(pygit2.Tree)
    message = f"Change {workload_name(index)}"
    synth.head = _commit(repo, tree.id, [parent.id], message, synth._commits)
    synth._commits += 1
    return synth.head


# -- object database helpers ------------------------------------------------------------------


def _nest(files: Mapping[str, str]) -> dict[str, object]:
    root: dict[str, object] = {}
    for path, text in files.items():
        *folders, name = path.split("/")
        node = root
        for folder in folders:
            child = node.setdefault(folder, {})
            assert isinstance(child, dict)
            node = child
        node[name] = text
    return root


def _write_tree(repo: pygit2.Repository, node: Mapping[str, object]) -> pygit2.Oid:
    builder = repo.TreeBuilder()
    for name, value in node.items():
        if isinstance(value, str):
            builder.insert(name, repo.create_blob(value.encode()), FileMode.BLOB)
        else:
            assert isinstance(value, Mapping)
            builder.insert(name, _write_tree(repo, value), FileMode.TREE)
    return builder.write()


def _replace(
    repo: pygit2.Repository, tree: pygit2.Tree | None, parts: list[str], blob: pygit2.Oid
) -> pygit2.Oid:
    """A copy of ``tree`` with the file at ``parts`` set to ``blob``, folders made as needed."""
    builder = repo.TreeBuilder(tree) if tree is not None else repo.TreeBuilder()
    name, rest = parts[0], parts[1:]
    if not rest:
        builder.insert(name, blob, FileMode.BLOB)
        return builder.write()
    sub = None
    if tree is not None and name in tree:
        found = tree[name]
        sub = found if isinstance(found, pygit2.Tree) else None
    builder.insert(name, _replace(repo, sub, rest, blob), FileMode.TREE)
    return builder.write()


def _commit(
    repo: pygit2.Repository,
    tree: pygit2.Oid,
    parents: list[pygit2.Oid],
    message: str,
    number: int,
) -> str:
    when = pygit2.Signature("Bench", "bench@example.com", _SIGNATURE_TIME + 60 * number, 0)
    oid = repo.create_commit(BRANCH, when, when, message, tree, parents)
    return str(oid)
