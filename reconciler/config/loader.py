"""Load ``reconciler.yaml`` from a repository, or the defaults when it has none.

The file gets the same treatment as a Score file: positioned diagnostics from the schema, then
the model's cross-field rules, then checks against the repository (named files exist).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from pydantic import ValidationError
from wcmatch import glob

from reconciler.catalogue import Code
from reconciler.config import models
from reconciler.config.models import Config
from reconciler.diagnostics import Diagnostic, has_errors
from reconciler.schemacheck import check as schema_check
from reconciler.schemacheck import format_path, model_errors
from reconciler.specs import load_spec
from reconciler.tree import GLOB_FLAGS, Tree, matches
from reconciler.yamldoc import YamlDocument, load_yaml

CONFIG_FILE = "reconciler.yaml"
SCHEMA_NAME = "reconciler.schema.json"
PATTERN_WORDS = {
    models.DURATION_PATTERN: "a duration such as 30s, 5m or 1h30m",
    models.BRANCH_PATTERN: "a branch name such as main or release/1.2 (not refs/..., not HEAD)",
    models.REF_PATTERN: "a Git ref or revision such as refs/tags/v1.2",
    models.NOTES_REF_PATTERN: "a notes ref under refs/notes/",
    models.GLOB_PATTERN: "a relative glob such as apps/**/score.yaml",
    models.VARIABLE_NAME_PATTERN: "a variable name (letters, digits, '_' and '-')",
    models.ENV_VAR_PATTERN: "an environment variable name (letters, digits and '_')",
    models.URL_PATTERN: "an http(s) URL",
    models.REPOSITORY_PATTERN: "a repository such as owner/name or a numeric project id",
}
CONFLICTS = {frozenset({"branch", "ref"}): Code.CONFIG_BRANCH_AND_REF}
MODEL_RULES = {
    "branch_and_ref": Code.CONFIG_BRANCH_AND_REF,
    "branch_conflict": Code.CONFIG_BRANCH_CONFLICT,
    "backoff_bounds": Code.CONFIG_INVALID_VALUE,
    "duration_type": Code.WRONG_TYPE,
}


@cache
def config_schema() -> dict[str, Any]:
    return load_spec(SCHEMA_NAME)


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    config: Config | None
    document: YamlDocument | None = None
    diagnostics: list[Diagnostic] = field(default_factory=list)
    present: bool = True


def load_config(tree: Tree) -> LoadedConfig:
    """The repository's configuration; ``config`` is None only when the file has errors."""
    try:
        raw = tree.read(CONFIG_FILE)
    except FileNotFoundError:
        return LoadedConfig(Config.default(), present=False)
    except OSError as exc:
        problem = Diagnostic(Code.UNREADABLE_FILE, f"cannot read file: {exc}", file=CONFIG_FILE)
        return LoadedConfig(None, None, [problem])
    doc, config, found = _parsed(raw)
    problems = list(found)
    if doc is None or config is None:
        return LoadedConfig(None, doc, problems)
    problems.extend(_check_named_files(doc, config, tree))
    return LoadedConfig(None if has_errors(problems) else config, doc, problems)


@functools.lru_cache(maxsize=16)
def _parsed(raw: bytes) -> tuple[YamlDocument | None, Config | None, tuple[Diagnostic, ...]]:
    """The file's document, model and problems, from its bytes alone: the same bytes come back
    with every commit that leaves the file alone, so every plan of those commits (a periodic
    resync too) reuses them. The model is frozen; the document is only read."""
    doc, problems = load_yaml(raw, CONFIG_FILE)
    if doc is None:
        return None, None, tuple(problems)
    problems = schema_check(doc, config_schema(), PATTERN_WORDS, CONFLICTS)
    if has_errors(problems):
        return doc, None, tuple(problems)
    try:
        config = Config.from_data(doc.data)
    except ValidationError as exc:
        return doc, None, (*problems, *model_errors(doc, exc, MODEL_RULES))
    return doc, config, tuple(problems)


def _check_named_files(doc: YamlDocument, config: Config, tree: Tree) -> list[Diagnostic]:
    """A literal path (not a glob) in a file list must exist; a glob may match nothing yet."""
    files = None
    problems = []
    for key in ("provisioners", "policies", "workflows"):
        if key not in doc.data:
            continue
        for i, pattern in enumerate(getattr(config, key)):
            if glob.is_magic(pattern, flags=GLOB_FLAGS):
                continue
            files = files if files is not None else list(tree.files())
            if not any(matches(f, [pattern]) for f in files):
                path = (key, i)
                problems.append(
                    doc.diagnostic(
                        Code.CONFIG_MISSING_FILE,
                        f"{format_path(path)}: '{pattern}' does not exist",
                        path,
                    )
                )
    return problems
