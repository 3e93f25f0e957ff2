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

from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util import CommandError

LOCATION = Path(__file__).resolve().parent


def config() -> Config:
    """An Alembic configuration for this folder; the caller adds ``attributes["connection"]``."""
    cfg = Config()
    cfg.set_main_option("script_location", str(LOCATION))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("version_locations", str(LOCATION / "versions"))
    return cfg


def scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(config())


def head() -> str:
    """The newest revision this reconciler knows."""
    revision = scripts().get_current_head()
    if revision is None:  # pragma: no cover - the package always ships a revision
        raise RuntimeError("no migrations are installed")
    return revision


def known(revision: str) -> bool:
    """Whether ``revision`` is one of ours; a database at an unknown one was written by a newer
    reconciler (or by something else entirely)."""
    try:
        return scripts().get_revision(revision) is not None
    except CommandError:
        return False
