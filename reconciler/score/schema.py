"""The project's JSON Schema of Score v1b1, generated from ``reconciler.score.models``.

Generating it keeps one source of truth: the schema that validates a document (and gives
line-precise errors) and the models that type it cannot drift apart, and the conformance tests
prove both accept exactly what the official schema does. The generator departs from pydantic's
defaults where they would change what is accepted:

- an optional field is ``X | None`` in Python, but ``null`` is never valid in the document, so
  nullable schemas collapse to ``X`` and ``"default": null`` is dropped;
- constrained map keys become ``propertyNames`` (pydantic writes ``patternProperties``, which
  would let a key that misses the pattern through unchecked);
- titles are dropped: they are class and field names, noise for users of the schema.

``python -m reconciler.score.schema`` writes ``specs/score-v1b1.schema.json``; ``--check``
exits 1 when the file is stale (run in CI).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from reconciler.score.models import Workload
from reconciler.specs import source_spec_path

SPEC_NAME = "score-v1b1.schema.json"
SCHEMA_ID = "https://score-reconciler.dev/schemas/score-v1b1.json"
DIALECT = "https://json-schema.org/draft/2020-12/schema"

# Keywords whose value maps names to schemas, and those whose value is not a schema at all.
_SCHEMA_MAPS = frozenset({"properties", "$defs", "patternProperties", "dependentSchemas"})
_NOT_SCHEMAS = frozenset({"required", "enum", "const", "default", "examples"})


class _ScoreJsonSchema(GenerateJsonSchema):
    """pydantic's generator with the three departures listed in the module docstring."""

    def nullable_schema(self, schema: core_schema.NullableSchema) -> JsonSchemaValue:
        return self.generate_inner(schema["schema"])

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        if schema.get("default") is None:
            return self.generate_inner(schema["schema"])
        return super().default_schema(schema)

    def dict_schema(self, schema: core_schema.DictSchema) -> JsonSchemaValue:
        result: JsonSchemaValue = {"type": "object"}
        values = schema.get("values_schema")
        # ``{}`` and ``true`` mean the same; ``true`` says it plainly.
        result["additionalProperties"] = (self.generate_inner(values) if values else {}) or True
        keys = schema.get("keys_schema")
        names = {k: v for k, v in self.generate_inner(keys).items() if k != "type"} if keys else {}
        if names:
            result["propertyNames"] = names
        self.update_with_validations(result, schema, self.ValidationsMapping.object)
        return result


def _without_titles(node: Any) -> Any:
    """Drop ``title`` keywords, walking only schema positions (a property may be named
    ``title``)."""
    if isinstance(node, list):
        return [_without_titles(item) for item in node]
    if not isinstance(node, dict):
        return node
    result: dict[str, Any] = {}
    for key, value in node.items():
        if key == "title":
            continue
        if key in _SCHEMA_MAPS:
            result[key] = {name: _without_titles(sub) for name, sub in value.items()}
        elif key in _NOT_SCHEMAS:
            result[key] = value
        else:
            result[key] = _without_titles(value)
    return result


def score_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a Score workload, as a fresh dict."""
    generated = Workload.model_json_schema(by_alias=True, schema_generator=_ScoreJsonSchema)
    return {"$schema": DIALECT, "$id": SCHEMA_ID, **_without_titles(generated)}


def render_schema() -> str:
    """The exact text of the shipped file: sorted keys, two-space indent, final newline."""
    return json.dumps(score_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m reconciler.score.schema",
        description="Write the Score JSON Schema generated from the models.",
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    parser.add_argument("--output", type=Path, default=None, help="where to write the schema")
    args = parser.parse_args(argv)
    target: Path = args.output or source_spec_path(SPEC_NAME)
    text = render_schema()
    if args.check:
        current = target.read_text(encoding="utf-8") if target.is_file() else None
        if current != text:
            print(f"{target} is stale: run python -m reconciler.score.schema", file=sys.stderr)
            return 1
        return 0
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
