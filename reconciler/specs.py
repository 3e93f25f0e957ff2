"""Find and read the specifications the reconciler ships (JSON Schemas in ``specs/``).

An installed wheel carries them in ``reconciler/_specs`` (pyproject's force-include); a source
checkout has them in ``<project root>/specs``. Callers name a spec and never care which.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

import reconciler

_PACKAGE_DIR = Path(reconciler.__file__).resolve().parent


def source_spec_path(name: str) -> Path:
    """Where the spec lives in a source checkout: the generators write here."""
    return _PACKAGE_DIR.parent / "specs" / name


def spec_path(name: str) -> Path:
    """The shipped file for ``name``, preferring the copy inside the installed package."""
    candidates = (_PACKAGE_DIR / "_specs" / name, source_spec_path(name))
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    searched = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(f"spec {name!r} not found (looked in {searched})")


@cache
def _parsed(name: str) -> dict[str, Any]:
    data = json.loads(spec_path(name).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"spec {name!r} is not a JSON object")
    return data


def load_spec(name: str) -> dict[str, Any]:
    """The parsed spec, read once per process; each caller gets its own copy to change."""
    return copy.deepcopy(_parsed(name))
