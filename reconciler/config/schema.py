"""The JSON Schema of ``reconciler.yaml``, generated from the models so the two cannot drift.

The loader validates the file against the checked-in copy (``specs/reconciler.schema.json``) to
get positioned diagnostics before the model sees the data; editors use the same file for
completion. ``python -m reconciler.config.schema`` rewrites that copy, and ``--check`` (run by
CI and by a unit test) fails when someone changed a model without regenerating it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reconciler.config.models import API_VERSION, Config

SCHEMA_ID = "https://score-reconciler.dev/schemas/reconciler.schema.json"
DRAFT = "https://json-schema.org/draft/2020-12/schema"
SPEC_PATH = Path(__file__).resolve().parents[2] / "specs" / "reconciler.schema.json"


def config_schema() -> dict[str, Any]:
    """The schema as a JSON-ready dict: the model's own, made strict and readable."""
    schema = _tidy(Config.model_json_schema(by_alias=True, mode="validation"))
    header = {
        "$schema": DRAFT,
        "$id": SCHEMA_ID,
        "title": "reconciler.yaml",
        "description": f"Configuration of a repository watched by score-reconciler "
        f"({API_VERSION}). Every key is optional.",
    }
    return {**schema, **header}


def _tidy(node: Any) -> Any:
    """Rewrite what pydantic emits into what we want users and validators to see.

    Maps with constrained keys come out as ``patternProperties``, which lets any other key
    through; ``propertyNames`` plus ``additionalProperties`` rejects it. Field titles are
    generated from Python names ("Apiversion") and add nothing to the descriptions.
    """
    if isinstance(node, list):
        return [_tidy(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _tidy(value) for key, value in node.items()}
    patterns = out.pop("patternProperties", None)
    if isinstance(patterns, dict) and len(patterns) == 1:
        ((pattern, values),) = patterns.items()
        out["propertyNames"] = {"pattern": pattern}
        out["additionalProperties"] = values
    elif patterns is not None:
        out["patternProperties"] = patterns
    properties = out.get("properties")
    if isinstance(properties, dict):
        out["properties"] = {name: _untitled(prop) for name, prop in properties.items()}
    return out


def _untitled(prop: Any) -> Any:
    if isinstance(prop, dict):
        return {key: value for key, value in prop.items() if key != "title"}
    return prop


def render(schema: dict[str, Any]) -> str:
    """The bytes we check in: stable order and a trailing newline, for clean diffs."""
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m reconciler.config.schema",
        description="Write the JSON Schema of reconciler.yaml.",
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    parser.add_argument("--output", type=Path, default=SPEC_PATH, help="file to write or check")
    args = parser.parse_args(argv)
    expected = render(config_schema())
    path: Path = args.output
    if args.check:
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current != expected:
            print(f"{path} is stale: run python -m reconciler.config.schema", file=sys.stderr)
            return 1
        return 0
    path.write_text(expected, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
