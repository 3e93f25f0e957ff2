"""Alembic migrations of the store schema, shipped inside the package.

``Store.open`` runs them programmatically (no alembic.ini): ``config()`` builds the Alembic
configuration that points here. To write a new revision during development::

    python -c "from alembic import command; from reconciler.store.migrations import config; \\
        command.revision(config(), message='add x', rev_id='0002')"

then edit the file it writes in ``versions/`` by hand, with explicit operations: a migration is a
snapshot of one change and must not import ``tables.py``, which moves on.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

LOCATION = Path(__file__).resolve().parent

HEAD: Final = "0007"
"""The newest revision, spelled here too (a test holds it to the scripts' head): a store opened
at head needs no Alembic, which is about 8 MiB and 110 modules the daemon would keep for
nothing. Alembic is imported only to migrate, or to look an unknown revision up."""


def config() -> Config:
    """An Alembic configuration for this folder; the caller adds ``attributes["connection"]``."""
    from alembic.config import Config  # noqa: PLC0415 - only to migrate (see HEAD)

    cfg = Config()
    cfg.set_main_option("script_location", str(LOCATION))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("version_locations", str(LOCATION / "versions"))
    return cfg


def scripts() -> ScriptDirectory:
    from alembic.script import ScriptDirectory  # noqa: PLC0415 - only to migrate (see HEAD)

    return ScriptDirectory.from_config(config())


def head() -> str:
    """The newest revision this reconciler knows."""
    return HEAD


def known(revision: str) -> bool:
    """Whether ``revision`` is one of ours; a database at an unknown one was written by a newer
    reconciler (or by something else entirely)."""
    if revision == HEAD:
        return True
    from alembic.util import CommandError  # noqa: PLC0415 - only to migrate (see HEAD)

    try:
        return scripts().get_revision(revision) is not None
    except CommandError:
        return False
