"""Build what a run talks to (secret store, workload target, drivers) for the command line.

Secrets: Vault when ``VAULT_ADDR`` is set; otherwise the store's encrypted table, keyed by
``RECONCILER_SECRET_KEY`` / ``RECONCILER_SECRET_KEY_FILE``, or, for the embedded single-machine
setup, a key file created on first use next to the SQLite store (``<git dir>/reconciler/
secret.key``, mode 0600). The key never enters the store or the repository's tracked files.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from cryptography.fernet import Fernet

from reconciler.config.models import Environment
from reconciler.gitops.repository import Repository
from reconciler.providers.base import SecretStore, WorkloadTarget
from reconciler.providers.manifests import ManifestsTarget
from reconciler.providers.secrets import (
    KEY_ENV,
    KEY_FILE_ENV,
    VAULT_ADDR_ENV,
    EncryptedSecretStore,
    secret_store_from_env,
)
from reconciler.runner import Services, default_drivers
from reconciler.store.store import Store

LOCAL_KEY_FILE = Path("reconciler") / "secret.key"


def local_key(repo: Repository) -> bytes:
    """The embedded setup's key: read, or made once with owner-only permissions.

    The daemon reconciles its environments at once on a new repository, each asking for the
    key. The key is written whole to a file of its own, then linked to its name, which fails
    if the name exists: the first link wins, and everyone else reads the winner's key. Made in
    place, the file was seen half written (an empty key) and the other makers failed with
    ``FileExistsError``."""
    path = repo.common_dir / LOCAL_KEY_FILE
    if path.is_file():
        return path.read_bytes().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key()
    fd, made = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(key + b"\n")
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(made, path)
        except FileExistsError:  # another environment or process made it first
            return path.read_bytes().strip()
    finally:
        os.unlink(made)
    return key


def secret_store(store: Store, repo: Repository) -> SecretStore:
    configured = any(os.environ.get(n) for n in (VAULT_ADDR_ENV, KEY_ENV, KEY_FILE_ENV))
    if configured:
        return secret_store_from_env(store)
    return EncryptedSecretStore(store, [local_key(repo)])


def target_for(
    repo: Repository, name: str, env: Environment, *, remote: str | None = None
) -> WorkloadTarget:
    """``manifests`` commits to the deploy branch (and pushes it to ``remote``, when the
    repository is a mirror); ``kubernetes`` applies to the cluster that ``KUBECONFIG`` (or the
    pod's service account) names, with ``RECONCILER_KUBE_CONTEXT``."""
    if env.target == "kubernetes":
        # Imported here: the kubernetes client is about 40 MiB of a daemon's memory, for
        # environments that use it only.
        from reconciler.providers.kubernetes import KubernetesTarget  # noqa: PLC0415

        return KubernetesTarget.from_config(
            os.environ.get("KUBECONFIG"), os.environ.get("RECONCILER_KUBE_CONTEXT")
        )
    return ManifestsTarget(repo.path, branch_template=env.deploy_branch_for(name), remote=remote)


def services_for(
    store: Store,
    repo: Repository,
    name: str,
    env: Environment,
    *,
    actor: str = "cli",
    remote: str | None = None,
) -> Services:
    target = target_for(repo, name, env, remote=remote)
    postgres_url = os.environ.get("RECONCILER_POSTGRES_URL")
    return Services(
        store=store,
        secrets=secret_store(store, repo),
        target=target,
        drivers=default_drivers(postgres_url),
        actor=actor,
    )
