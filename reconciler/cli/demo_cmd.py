"""``reconciler demo``: the bundled example repository, made a Git repository, under the daemon.

The README's first command: it copies ``examples/shop`` to a folder of its own (the first time),
commits it, and starts ``reconciler run`` on it with the embedded SQLite store and the manifests
target, so that a user sees a push become a status within a second.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Annotated

import typer

import reconciler
from reconciler.catalogue import Code
from reconciler.cli.common import fail
from reconciler.cli.run_cmd import ListenOption, run

NEXT_STEPS = """\
The example shop is at {folder}, a Git repository the reconciler now watches.
Next, in another terminal:
  cd {folder}
  sed -i 's/orders:1.4.2/orders:1.4.3/' apps/orders/score.yaml && git commit -qam 'Bump orders'
  git notes --ref=reconciler show HEAD          # the commit's status, one JSON line per environment
  git log --oneline reconciler/deploy/staging   # the manifests Argo CD or Flux would sync
  curl -s http://{listen}/metrics | grep reconciler_
  reconciler status                             # workloads per environment
  reconciler runs                               # production waits: reconciler approve RUN
Stop with Ctrl-C.
"""


def example_source() -> Path:
    """The bundled example, from a wheel (``_examples``) or a source checkout (``examples``)."""
    package = Path(reconciler.__file__).resolve().parent
    candidates = (package / "_examples" / "shop", package.parent / "examples" / "shop")
    found = next((c for c in candidates if c.is_dir()), None)
    if found is None:
        fail(Code.PATH_NOT_FOUND, "the bundled example repository is missing from this install")
    return found


def prepare(folder: Path) -> None:
    """Copy the example and commit it, once; later runs reuse the folder as it is."""
    if (folder / ".git").exists():
        return
    if folder.exists() and any(folder.iterdir()):
        fail(Code.PATH_NOT_FOUND, f"{folder} exists and is not the demo repository")
    shutil.copytree(example_source(), folder, dirs_exist_ok=True)
    env = {
        "GIT_AUTHOR_NAME": "Reconciler Demo",
        "GIT_AUTHOR_EMAIL": "demo@example.com",
        "GIT_COMMITTER_NAME": "Reconciler Demo",
        "GIT_COMMITTER_EMAIL": "demo@example.com",
        "PATH": "/usr/bin:/bin:/usr/local/bin",
    }
    for args in (
        ["init", "-q", "-b", "main"],
        ["add", "-A"],
        ["commit", "-qm", "The example shop"],
    ):
        subprocess.run(["git", *args], cwd=folder, env=env, check=True)


def demo(
    folder: Annotated[Path, typer.Argument(help="Where to put the example repository.")] = Path(
        "reconciler-demo"
    ),
    listen: ListenOption = "127.0.0.1:8080",
) -> None:
    """Start the daemon on the bundled example repository (made a Git repository first)."""
    prepare(folder.resolve())
    typer.echo(NEXT_STEPS.format(folder=folder, listen=listen), err=True)
    run(
        repo=str(folder),
        store=None,
        listen=listen,
        branch=None,
        workers=2,
        parallelism=4,
        target_url=None,
        fetch_interval=60.0,
        mirror=None,
        lease_ttl=30.0,
    )
