"""Which driver serves a provisioner: the engine's one question before it applies a resource.

- ``template://builtin/postgres`` with an admin server configured (``postgres_url`` or
  ``RECONCILER_POSTGRES_URL``): the PostgreSQL driver, a real database and role on that server
  in place of the built-in's StatefulSet. Same outputs and secret, so workloads do not change.
- any other ``template://``: the template driver;
- ``cmd://``: the cmd driver, with relative programs under ``base_dir`` (the folder where the
  caller wrote the repository's files at the commit being applied).

The drivers are cheap and hold no connection between calls; build one per call or keep one per
uri, as suits the caller.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from reconciler.catalogue import Code
from reconciler.desired.provisioners import CMD_SCHEME, TEMPLATE_SCHEME, ProvisionerSet
from reconciler.providers.base import DriverError, ResourceDriver
from reconciler.providers.cmd import DEFAULT_TIMEOUT, CmdDriver
from reconciler.providers.template import TemplateDriver

BUILTIN_POSTGRES_URI: Final = "template://builtin/postgres"
POSTGRES_URL_ENV: Final = "RECONCILER_POSTGRES_URL"
"""The admin server of the PostgreSQL driver; without it, the built-in template renders."""


def driver_for(
    provisioner_uri: str,
    *,
    provisioners: ProvisionerSet,
    postgres_url: str | None = None,
    base_dir: Path | None = None,
    cmd_timeout: float = DEFAULT_TIMEOUT,
) -> ResourceDriver:
    """The driver for ``provisioner_uri``; ``provisioners`` is the set the plan matched with,
    from which the template and cmd drivers take the provisioner's definition."""
    scheme = urlsplit(provisioner_uri).scheme
    admin_url = postgres_url or os.environ.get(POSTGRES_URL_ENV)
    if provisioner_uri == BUILTIN_POSTGRES_URI and admin_url:
        # Imported here: psycopg is about 10 MiB of every daemon's memory otherwise, for
        # setups that give the driver a server only.
        from reconciler.providers.postgres import PostgresDriver  # noqa: PLC0415

        return PostgresDriver(admin_url)
    if scheme == TEMPLATE_SCHEME:
        return TemplateDriver(provisioners)
    if scheme == CMD_SCHEME:
        return CmdDriver(provisioners, base_dir=base_dir, timeout=cmd_timeout)
    raise DriverError(
        Code.PROVISIONER_INVALID, f"'{provisioner_uri}': no driver for scheme '{scheme}'"
    )
