"""Store URLs: which database a reconciler records its state in, and where it lives by default.

The CLI and the daemon pass what the user gave (``--store`` or ``RECONCILER_STORE``) to
``parse_store_url``; with nothing given, the store is a SQLite file inside the watched
repository's Git directory, so that state travels with the clone and never shows in a work tree.
Only two kinds are accepted, and both run the same SQLAlchemy Core code:

- ``sqlite:///relative/state.db`` or ``sqlite:////absolute/state.db`` (SQLAlchemy's spelling);
- ``postgresql://user[:password]@host[:port]/db`` (``postgres://`` too), driven by psycopg 3.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from reconciler.catalogue import Code
from reconciler.store.errors import StoreError

ENV_VAR = "RECONCILER_STORE"
PG_DRIVER = "postgresql+psycopg"
CONNECT_TIMEOUT_SECONDS = 10

_SQLITE_NAMES = frozenset({"sqlite", "sqlite+pysqlite"})
_PG_NAMES = frozenset({"postgresql", "postgres", PG_DRIVER})
_USERINFO = re.compile(r"(?P<head>://[^:/@]*:)[^@/]*@")

Dialect = Literal["sqlite", "postgresql"]


@dataclass(frozen=True, slots=True)
class StoreUrl:
    """A parsed, accepted store URL; ``display`` is the form that may appear in messages."""

    dialect: Dialect
    url: URL
    display: str
    path: Path | None = None

    @property
    def password(self) -> str | None:
        secret = self.url.password
        return str(secret) if secret else None


def mask(text: str) -> str:
    """Hide the password of any URL in ``text``; for input that did not even parse."""
    return _USERINFO.sub(r"\g<head>***@", text)


def _invalid(text: str, why: str) -> StoreError:
    return StoreError(Code.STORE_URL_INVALID, f"{mask(text)!r}: {why}")


def parse_store_url(text: str) -> StoreUrl:
    """Accept a SQLite or PostgreSQL URL, or raise ``StoreError(STORE_URL_INVALID)``."""
    try:
        url = make_url(text.strip())
    except (ArgumentError, ValueError) as error:
        raise _invalid(text, "not a URL; expected sqlite:///PATH or postgresql://...") from error
    if url.drivername in _SQLITE_NAMES:
        return _sqlite(text, url)
    if url.drivername in _PG_NAMES:
        return _postgresql(text, url)
    raise _invalid(text, f"unsupported scheme '{url.drivername}'; use sqlite or postgresql")


def _sqlite(text: str, url: URL) -> StoreUrl:
    database = url.database or ""
    if not database or database == ":memory:" or database.startswith("file:"):
        raise _invalid(text, "a SQLite store needs a file path: sqlite:///path/state.db")
    if url.query or url.host or url.username:
        raise _invalid(text, "a SQLite URL takes a path only (no host, user or parameters)")
    path = Path(database).expanduser().absolute()
    return StoreUrl(
        "sqlite", url.set(drivername="sqlite", database=str(path)), f"sqlite:///{path}", path
    )


def _postgresql(text: str, url: URL) -> StoreUrl:
    if not url.database:
        raise _invalid(text, "name the database: postgresql://user@host:port/db")
    if not url.host and "host" not in url.query:
        raise _invalid(text, "name the server: postgresql://user@host:port/db")
    query = dict(url.query)
    query.setdefault("connect_timeout", str(CONNECT_TIMEOUT_SECONDS))
    shown = url.render_as_string(hide_password=True)
    return StoreUrl("postgresql", url.set(drivername=PG_DRIVER, query=query), shown)


def default_store_url(git_dir: Path) -> str:
    """``sqlite:///<git_dir>/reconciler/state.db``: next to, never inside, the work tree."""
    return f"sqlite:///{(git_dir.absolute() / 'reconciler' / 'state.db').as_posix()}"


def find_git_dir(start: Path) -> Path | None:
    """The Git directory of the repository around ``start``, walking up; None outside one.

    A work tree has ``.git`` as a folder, or as a file (``gitdir: ...``) for linked work trees
    and submodules; a bare repository is recognised by ``HEAD``, ``objects/`` and ``refs/``.
    """
    folder = start.absolute()
    for candidate in (folder, *folder.parents):
        dot_git = candidate / ".git"
        if dot_git.is_dir():
            return dot_git
        if dot_git.is_file():
            return _linked_git_dir(dot_git)
        if _is_bare(candidate):
            return candidate
    return None


def _linked_git_dir(dot_git: Path) -> Path | None:
    first = dot_git.read_text(encoding="utf-8", errors="replace").partition("\n")[0]
    prefix, _, target = first.partition(":")
    if prefix.strip() != "gitdir" or not target.strip():
        return None
    return (dot_git.parent / target.strip()).resolve()


def _is_bare(folder: Path) -> bool:
    return (
        (folder / "HEAD").is_file() and (folder / "objects").is_dir() and (folder / "refs").is_dir()
    )


def resolve_store_url(given: str | None, repo: Path) -> str:
    """What to open: the URL given, else ``RECONCILER_STORE``, else the repository's default."""
    if given:
        return given
    from_env = os.environ.get(ENV_VAR, "").strip()
    if from_env:
        return from_env
    git_dir = find_git_dir(repo)
    if git_dir is None:
        raise StoreError(
            Code.REPOSITORY_NOT_FOUND,
            f"no Git repository at or above {repo}; give --repo, or --store URL",
        )
    return default_store_url(git_dir)
