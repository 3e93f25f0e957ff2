"""``reconciler run``: start the daemon on a repository until SIGTERM or Ctrl-C.

SIGTERM stops taking work, lets running steps finish within the grace period, checkpoints and
exits 0, as a process supervisor (systemd, Kubernetes) expects.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated

import typer

from reconciler.catalogue import Code
from reconciler.cli.common import StoreOption, fail
from reconciler.daemon.service import Daemon, DaemonSettings, is_remote
from reconciler.gitops.errors import GitError
from reconciler.store.errors import StoreError

ListenOption = Annotated[
    str, typer.Option("--listen", help="HOST:PORT for health, metrics, webhooks and the API.")
]


def _listen(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise typer.BadParameter(f"'{text}' is not HOST:PORT")
    return host.strip("[]"), int(port)


def run(
    repo: Annotated[
        str,
        typer.Option(
            "--repo", "-r", help="A local repository (work tree or bare), or a remote URL."
        ),
    ] = ".",
    store: StoreOption = None,
    listen: ListenOption = "127.0.0.1:8080",
    branch: Annotated[
        str | None, typer.Option("--branch", help="Read reconciler.yaml from this branch.")
    ] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, max=32)] = 2,
    parallelism: Annotated[int, typer.Option("--parallelism", min=1, max=64)] = 4,
    target_url: Annotated[
        str | None, typer.Option("--target-url", help="Link put on commit statuses.")
    ] = None,
    fetch_interval: Annotated[
        float, typer.Option("--fetch-interval", min=1.0, help="Seconds between fetches.")
    ] = 60.0,
    mirror: Annotated[
        Path | None, typer.Option("--mirror", help="Where to keep the mirror of a remote.")
    ] = None,
    lease_ttl: Annotated[
        float,
        typer.Option(
            "--lease-ttl",
            min=1.0,
            help="Seconds after which a replica that stopped renewing loses its environments.",
        ),
    ] = 30.0,
) -> None:
    """Watch the repository and keep every environment matching Git."""
    settings = DaemonSettings(
        repo=repo if is_remote(repo) else Path(repo),
        fetch_interval=fetch_interval,
        mirror=mirror,
        lease_ttl=lease_ttl,
        store_url=store,
        listen=_listen(listen),
        branch=branch,
        workers=workers,
        parallelism=parallelism,
        target_url=target_url,
    )

    def stop(signum: int, frame: object) -> None:
        daemon.request_stop()  # the handler only flags; the main thread stops

    try:
        daemon = Daemon(settings)
        # Before ``start`` logs "daemon started": a SIGTERM sent as soon as that line is seen
        # must stop the daemon cleanly, not kill it by the default handler.
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        daemon.start()
    except (GitError, StoreError) as exc:
        fail(exc.code, exc.message)
    except OSError as exc:  # the listen address is taken or not ours
        fail(Code.PATH_NOT_FOUND, f"cannot listen on {listen}: {exc.strerror or exc}")
    daemon.wait()
    daemon.stop()
    raise typer.Exit(0)
