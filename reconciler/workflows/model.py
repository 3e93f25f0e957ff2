"""The workflow file format as frozen pydantic models, and the JSON Schema generated from them.

A workflow file (``workflows/*.yaml`` by default) names a golden path: typed parameters and a
DAG of steps. ``loader`` checks a file against ``workflow_schema()`` first (for positioned
diagnostics), then builds these models; ``run`` turns them into engine steps. Templated fields
stay plain strings here: they are parsed by ``expressions`` and rendered at run time.

Parameters and steps are unions discriminated by ``type``. pydantic writes such a union as a
``oneOf``, whose failures jsonschema can only report as "matches none of the alternatives"; the
generator below writes it as ``if type is X then <X's schema>`` instead, so an unknown field in
an ``http`` step is reported as an unknown field, with a "did you mean" from that kind's fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, StrictBool, StringConstraints
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from reconciler.catalogue import Code
from reconciler.config.models import DURATION_PATTERN, NAME_PATTERN, Duration

# -- codes -------------------------------------------------------------------------------------
# The catalogue has no workflow entries yet; each alias names the closest existing code and, in
# its comment, the entry proposed for it (docs/workflows.md lists them). Replace the right-hand
# sides once the catalogue has them: every module of the package reports through these names.
INVALID_WORKFLOW = Code.WORKFLOW_INVALID
DUPLICATE_STEP = Code.WORKFLOW_DUPLICATE_STEP
UNKNOWN_NEED = Code.WORKFLOW_UNKNOWN_NEED
NEEDS_CYCLE = Code.WORKFLOW_NEEDS_CYCLE
TEMPLATE_SYNTAX = Code.WORKFLOW_TEMPLATE_SYNTAX
DUPLICATE_WORKFLOW = Code.WORKFLOW_DUPLICATE_NAME
WORKFLOW_NOT_FOUND = Code.WORKFLOW_NOT_FOUND
UNKNOWN_PARAM = Code.WORKFLOW_PARAM_UNKNOWN
MISSING_PARAM = Code.WORKFLOW_PARAM_MISSING
INVALID_PARAM = Code.WORKFLOW_PARAM_INVALID
TEMPLATE_FAILED = Code.WORKFLOW_TEMPLATE_FAILED
SHELL_FAILED = Code.WORKFLOW_SHELL_FAILED
OUTPUTS_INVALID = Code.WORKFLOW_OUTPUTS_INVALID
HTTP_FAILED = Code.WORKFLOW_HTTP_FAILED
ACTION_UNAVAILABLE = Code.WORKFLOW_ACTION_UNAVAILABLE
HOOK_FAILED = Code.WORKFLOW_HOOK_FAILED

# -- patterns ----------------------------------------------------------------------------------
STEP_ID_PATTERN = r"^(?!.*\n)[a-z0-9](?:[a-z0-9_-]{0,61}[a-z0-9])?$"
PARAM_NAME_PATTERN = r"^(?!.*\n)[A-Za-z_][A-Za-z0-9_]{0,62}$"
ENV_NAME_PATTERN = r"^(?!.*\n)[A-Za-z_][A-Za-z0-9_]*$"
HEADER_PATTERN = r"^(?!.*\n)[A-Za-z0-9!#$%&'*+.^_`|~-]+$"
OUTPUT_FILE_PATTERN = r"^(?!.*\n)(?!/)(?!.*\\)(?!(?:.*/)?\.\.?(?:/|$))[^\x00]+$"
PATTERN_WORDS: Mapping[str, str] = {
    DURATION_PATTERN: "a duration such as 30s, 5m or 1h30m",
    STEP_ID_PATTERN: "a step id (a-z, 0-9, '-' and '_', starting and ending with a-z or 0-9)",
    PARAM_NAME_PATTERN: "a parameter name (letters, digits and '_', not starting with a digit)",
    ENV_NAME_PATTERN: "an environment variable name (letters, digits and '_')",
    HEADER_PATTERN: "an HTTP header name",
    OUTPUT_FILE_PATTERN: "a relative path inside the step's working directory",
}


def _pattern(regex: str) -> Any:
    return StringConstraints(strict=True, pattern=regex)


Name = Annotated[str, _pattern(NAME_PATTERN)]
StepId = Annotated[str, _pattern(STEP_ID_PATTERN)]
ParamName = Annotated[str, _pattern(PARAM_NAME_PATTERN)]
Text = Annotated[str, StringConstraints(strict=True)]
NonEmpty = Annotated[str, StringConstraints(strict=True, min_length=1)]
Int = Annotated[int, Strict()]
When = Literal["on_success", "on_failure", "always"]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", regex_engine="python-re")


# -- parameters --------------------------------------------------------------------------------


class _Param(_Model):
    description: Text = Field(default="", description="What the parameter is for.")
    required: StrictBool = Field(
        default=False, description="The caller must give a value (no default then)."
    )


class StringParam(_Param):
    type: Literal["string"]
    default: Text | None = Field(default=None, description="Value when none is given.")
    pattern: Text | None = Field(default=None, description="Regular expression values match.")


class IntParam(_Param):
    type: Literal["int"]
    default: Int | None = Field(default=None, description="Value when none is given.")
    minimum: Int | None = Field(default=None, alias="min", description="Smallest value.")
    maximum: Int | None = Field(default=None, alias="max", description="Largest value.")


class BoolParam(_Param):
    type: Literal["bool"]
    default: StrictBool | None = Field(default=None, description="Value when none is given.")


class DurationParam(_Param):
    type: Literal["duration"]
    default: Duration | None = Field(default=None, description="Value when none is given.")
    minimum: Duration | None = Field(default=None, alias="min", description="Shortest value.")
    maximum: Duration | None = Field(default=None, alias="max", description="Longest value.")


class EnumParam(_Param):
    type: Literal["enum"]
    values: Annotated[tuple[Text, ...], Field(min_length=1)] = Field(
        description="The allowed values."
    )
    default: Text | None = Field(default=None, description="Value when none is given.")


ParamSpec = Annotated[
    StringParam | IntParam | BoolParam | DurationParam | EnumParam, Field(discriminator="type")
]

# -- steps -------------------------------------------------------------------------------------


class _Step(_Model):
    id: StepId = Field(description="Unique within the workflow; later templates read steps.<id>.")
    description: Text = Field(default="", description="What the step does.")
    needs: tuple[StepId, ...] = Field(default=(), description="Steps that must finish first.")
    when: When = Field(
        default="on_success",
        description="on_success: every need succeeded; on_failure: some need failed; "
        "always: whatever happened.",
    )
    if_: Text | StrictBool | None = Field(
        default=None, alias="if", description="Skip the step when this expression is false."
    )
    for_each: Text | tuple[Any, ...] | None = Field(
        default=None,
        description="A list (or an expression giving one): the step runs once per item.",
    )
    timeout: Duration | None = Field(default=None, description="Bound on each attempt.")
    retries: Annotated[int, Strict(), Field(ge=0, le=10)] = Field(
        default=0, description="Attempts after the first when the step fails."
    )


class ShellOutputs(_Model):
    file: Annotated[str, _pattern(OUTPUT_FILE_PATTERN)] = Field(
        description="File the command writes, relative to its working directory."
    )
    format: Literal["json", "env"] = Field(
        default="json", description="json: one JSON object; env: key=value lines."
    )


class ShellStep(_Step):
    type: Literal["shell"]
    command: NonEmpty | Annotated[tuple[Text, ...], Field(min_length=1)] = Field(
        description="A program and its arguments, or one string run by /bin/sh -c."
    )
    env: Mapping[Annotated[str, _pattern(ENV_NAME_PATTERN)], Text] = Field(
        default_factory=dict, description="Environment variables (templated)."
    )
    outputs: ShellOutputs | None = Field(default=None, description="Where outputs are read.")


class HttpRequest(_Model):
    method: Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"] = Field(default="GET")
    url: NonEmpty = Field(description="The URL (templated).")
    headers: Mapping[Annotated[str, _pattern(HEADER_PATTERN)], Text] = Field(
        default_factory=dict, description="Request headers (templated)."
    )
    json_body: Any = Field(default=None, alias="json", description="A JSON body (templated).")
    body: Text | None = Field(default=None, description="A text body (templated).")
    expect: tuple[Annotated[int, Strict(), Field(ge=100, le=599)], ...] = Field(
        default=(), description="Accepted status codes; default: any 2xx."
    )


class HttpStep(_Step):
    type: Literal["http"]
    request: HttpRequest


class ProvisionStep(_Step):
    type: Literal["provision"]
    resource: NonEmpty = Field(description="The resource uid, type.class#id (templated).")


class ApplyStep(_Step):
    type: Literal["apply"]
    environment: NonEmpty = Field(description="The environment to apply (templated).")


class WaitStep(_Step):
    type: Literal["wait"]
    duration: Duration = Field(description="How long to wait.")


class ApprovalStep(_Step):
    type: Literal["approval"]
    message: Text = Field(default="", description="What the approver is asked (templated).")


StepSpec = Annotated[
    ShellStep | HttpStep | ProvisionStep | ApplyStep | WaitStep | ApprovalStep,
    Field(discriminator="type"),
]


class Workflow(_Model):
    """One custom workflow (golden path)."""

    name: Name = Field(description="RFC 1123 label, unique across workflow files.")
    description: Text = Field(default="", description="What the workflow is for.")
    params: Mapping[ParamName, ParamSpec] = Field(default_factory=dict)
    steps: Annotated[tuple[StepSpec, ...], Field(min_length=1)]

    def step(self, step_id: str) -> StepSpec:
        return next(s for s in self.steps if s.id == step_id)


# -- JSON Schema -------------------------------------------------------------------------------


class _WorkflowJsonSchema(GenerateJsonSchema):
    """Optional fields are ``X | None`` in Python, but ``null`` is never valid in a file; map
    keys are checked by ``propertyNames`` (pydantic's ``patternProperties`` would let a key that
    misses the pattern through unchecked)."""

    def nullable_schema(self, schema: core_schema.NullableSchema) -> JsonSchemaValue:
        return self.generate_inner(schema["schema"])

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        if schema.get("default") is None:
            return self.generate_inner(schema["schema"])
        return super().default_schema(schema)

    def dict_schema(self, schema: core_schema.DictSchema) -> JsonSchemaValue:
        values = schema.get("values_schema")
        result: JsonSchemaValue = {
            "type": "object",
            "additionalProperties": (self.generate_inner(values) if values else {}) or True,
        }
        keys = schema.get("keys_schema")
        names = {k: v for k, v in self.generate_inner(keys).items() if k != "type"} if keys else {}
        if names:
            result["propertyNames"] = names
        return result


def _by_type(node: Any) -> Any:
    """Rewrite each ``oneOf`` discriminated by ``type`` as ``if``/``then`` per kind."""
    if isinstance(node, list):
        return [_by_type(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _by_type(value) for key, value in node.items() if key != "title"}
    discriminator = node.get("discriminator")
    if not (isinstance(discriminator, dict) and discriminator.get("propertyName") == "type"):
        return node
    mapping: dict[str, str] = discriminator["mapping"]
    return {
        "type": "object",
        "required": ["type"],
        "properties": {"type": {"enum": sorted(mapping)}},
        "allOf": [
            {
                "if": {"properties": {"type": {"const": kind}}, "required": ["type"]},
                "then": {"$ref": mapping[kind]},
            }
            for kind in sorted(mapping)
        ],
    }


@cache
def _schema() -> dict[str, Any]:
    generated = Workflow.model_json_schema(by_alias=True, schema_generator=_WorkflowJsonSchema)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **_by_type(generated)}


def workflow_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a workflow file."""
    return _schema()
