"""Typed models of a Score workload (``score.dev/v1b1``).

The models are the single source of truth for the project's JSON Schema
(``reconciler.score.schema`` generates it from them), so they mirror the document exactly,
including the deprecated list forms of ``files`` and ``volumes``, and accept and reject exactly
what the official schema does: strings must be strings, ``true`` is not an integer but ``1.0``
is, and an explicit ``null`` is never a value.

Callers use ``Workload.from_data``: it validates and then rewrites the deprecated lists as maps
keyed by target, so that code after loading only ever meets maps (``Container.files`` and
``Container.volumes`` hold a map or ``None``; ``files_by_target`` and ``volumes_by_target`` give
the map with its precise type). A list item without a ``target`` is keyed by ``""`` and a later
item with the same target replaces an earlier one: the schema accepts both, and reporting them
is the semantic pass's job, which sees the raw document.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

# The official schema's patterns, kept character for character: the validators run them with
# Python's ``re.search``, so any rewrite (even a "fix" such as ``\Z`` for ``$``) would change what
# is accepted.
LABEL_PATTERN = r"^[a-z0-9][a-z0-9-]{0,61}[a-z0-9]$"
ANNOTATION_KEY_PATTERN = (
    r"^(([a-z0-9][a-z0-9-]{0,61}[a-z0-9])(\.[a-z0-9][a-z0-9-]{0,61}[a-z0-9])*/)?"
    r"[A-Za-z0-9][A-Za-z0-9._-]{0,61}[A-Za-z0-9]$"
)
RESOURCE_TYPE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9-]{0,61}[A-Za-z0-9]$"
RESOURCE_ID_PATTERN = r"^[a-z0-9]+(?:-+[a-z0-9]+)*(?:\.[a-z0-9]+(?:-+[a-z0-9]+)*)*$"
API_VERSION_PATTERN = r"^score\.dev/v1b1$"
MEMORY_PATTERN = r"^(0\.\d+|[1-9]\d*(\.\d+)?)(K|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"
CPU_PATTERN = r"^\d+(?:m|\.\d+)?$"
FILE_MODE_PATTERN = r"^0?[0-7]{3}$"
HEADER_NAME_PATTERN = r"^[A-Za-z0-9_-]+$"
VARIABLE_NAME_PATTERN = r"^[^=]+$"

API_VERSION = "score.dev/v1b1"

Label = Annotated[str, StringConstraints(min_length=2, max_length=63, pattern=LABEL_PATTERN)]
AnnotationKey = Annotated[
    str, StringConstraints(min_length=2, max_length=316, pattern=ANNOTATION_KEY_PATTERN)
]
ResourceTypeName = Annotated[
    str, StringConstraints(min_length=2, max_length=63, pattern=RESOURCE_TYPE_PATTERN)
]
ResourceId = Annotated[
    str, StringConstraints(min_length=2, max_length=63, pattern=RESOURCE_ID_PATTERN)
]
VariableName = Annotated[str, StringConstraints(min_length=1, pattern=VARIABLE_NAME_PATTERN)]
NonEmptyStr = Annotated[str, StringConstraints(min_length=1)]
Annotations = dict[AnnotationKey, str]


def _json_integer(value: object) -> object:
    """JSON Schema counts ``1.0`` as an integer (YAML writes ports that way sometimes), but not
    ``true`` nor ``"1"``; turning integral floats into ints lets strict validation do the rest."""
    if isinstance(value, float) and not isinstance(value, bool) and value.is_integer():
        return int(value)
    return value


Port = Annotated[int, Field(ge=1, le=65535), BeforeValidator(_json_integer)]


def _described(text: str, *, allow_extra: bool = False, **schema: Any) -> ConfigDict:
    """Model descriptions for the schema live here, not in docstrings, which are for readers of
    the code; ``schema`` adds keywords that no field can express (``oneOf``, ``anyOf``)."""
    config = ConfigDict(json_schema_extra={"description": text, **schema})
    if allow_extra:
        config["extra"] = "allow"
    return config


class ScoreModel(BaseModel):
    """Shared rules: frozen values, unknown keys rejected, no coercion beyond JSON's own, and
    the Python ``re`` engine so patterns behave as under a JSON Schema validator."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        strict=True,
        regex_engine="python-re",
        validate_by_alias=True,
        validate_by_name=False,
        serialize_by_alias=True,
    )

    @field_validator("*", mode="before")
    @classmethod
    def _reject_null(cls, value: object) -> object:
        """Optional fields default to ``None`` in Python, but the schema has no nullable field:
        an explicit ``null`` is an error, as it is for the official schema."""
        if value is None:
            raise PydanticCustomError(
                "null_not_allowed", "value may not be null; remove the key to leave it unset"
            )
        return value


# -- metadata --------------------------------------------------------------------------------


class WorkloadMetadata(ScoreModel):
    """Extra keys are kept because placeholders such as ``${metadata.team}`` may read them."""

    model_config = _described(
        "Who the workload is. Keys besides 'name' and 'annotations' are allowed and may be read "
        "by placeholders.",
        allow_extra=True,
    )

    name: Label = Field(
        description="The workload name: an RFC 1123 label of 2 to 63 characters (a-z, 0-9, '-'), "
        "starting and ending with a letter or digit."
    )
    annotations: Annotations | None = Field(
        default=None,
        description="Free-form string values for tools; keys are an optional DNS-name prefix "
        "and '/' followed by a name of letters, digits, '.', '_' and '-'.",
    )


class ResourceMetadata(ScoreModel):
    model_config = _described(
        "Metadata of a resource; keys besides 'annotations' are allowed.", allow_extra=True
    )

    annotations: Annotations | None = Field(
        default=None, description="Free-form string values for provisioners."
    )


# -- service ---------------------------------------------------------------------------------


class ServicePort(ScoreModel):
    """``targetPort`` is optional in the document; ``target_port`` answers the question callers
    actually ask (which port does the container listen on) without each one re-deriving it."""

    model_config = _described("A port the workload offers to other workloads in its network.")

    port: Port = Field(description="The port other workloads connect to (1 to 65535).")
    protocol: Literal["TCP", "UDP"] = Field(
        default="TCP", description="The transport protocol; TCP when omitted."
    )
    declared_target_port: Port | None = Field(
        default=None,
        alias="targetPort",
        description="The port the container listens on (1 to 65535); the same as 'port' when "
        "omitted.",
    )

    @property
    def target_port(self) -> int:
        return self.port if self.declared_target_port is None else self.declared_target_port


class Service(ScoreModel):
    model_config = _described("The network service the workload provides.")

    ports: dict[Label, ServicePort] | None = Field(
        default=None, description="Named ports; each name is an RFC 1123 label."
    )


# -- containers: files and volumes -----------------------------------------------------------

_ONE_CONTENT = [
    {"required": ["content"]},
    {"required": ["binaryContent"]},
    {"required": ["source"]},
]


class ContainerFile(ScoreModel):
    """The map form, where the key is the target; ``ContainerFileItem`` adds ``target`` for the
    deprecated list form. Two classes instead of a "must not have target" rule keep the rule in
    the type, and the generated schema says the same with ``additionalProperties: false``."""

    model_config = _described(
        "A file to mount into the container, given by exactly one of 'content', "
        "'binaryContent' or 'source'.",
        oneOf=_ONE_CONTENT,
    )

    mode: Annotated[str, StringConstraints(pattern=FILE_MODE_PATTERN)] | None = Field(
        default=None, description='The file mode as an octal string, for example "0600".'
    )
    source: NonEmptyStr | None = Field(
        default=None,
        description="A path to a file holding the content, relative to the Score file.",
    )
    content: str | None = Field(
        default=None, description="The content as UTF-8 text; placeholders are expanded."
    )
    binary_content: str | None = Field(
        default=None,
        alias="binaryContent",
        description="The content encoded in standard base64; placeholders are not expanded.",
    )
    no_expand: bool | None = Field(
        default=None,
        alias="noExpand",
        description="When true, placeholders in the content are left as written.",
    )

    @model_validator(mode="after")
    def _one_content(self) -> Self:
        given = [v for v in (self.content, self.binary_content, self.source) if v is not None]
        if len(given) != 1:
            raise PydanticCustomError(
                "file_content_choice",
                "a file needs exactly one of 'content', 'binaryContent' or 'source' "
                "({count} given)",
                {"count": len(given)},
            )
        return self


class ContainerFileItem(ContainerFile):
    model_config = _described(
        "(Deprecated) A file in the list form of 'files'; 'target' names the path in the "
        "container.",
        deprecated=True,
        oneOf=_ONE_CONTENT,
    )

    target: NonEmptyStr | None = Field(
        default=None, description="The path of the file in the container."
    )


class ContainerVolume(ScoreModel):
    model_config = _described("A volume to mount into the container.")

    source: str = Field(
        description="The volume to mount, usually '${resources.NAME}' naming a volume resource."
    )
    path: str | None = Field(default=None, description="A sub-path inside the volume.")
    read_only: bool | None = Field(
        default=None, alias="readOnly", description="When true, the mount is read-only."
    )


class ContainerVolumeItem(ContainerVolume):
    model_config = _described(
        "(Deprecated) A volume in the list form of 'volumes'; 'target' names the mount path.",
        deprecated=True,
    )

    target: str | None = Field(default=None, description="The mount path in the container.")


def _map_or_list(value: object) -> str:
    """Choose the branch from the input's shape, so errors come from one form, not from both."""
    return "list" if isinstance(value, list) else "map"


Files = Annotated[
    Annotated[dict[str, ContainerFile], Tag("map")]
    | Annotated[list[ContainerFileItem], Tag("list")],
    Discriminator(_map_or_list),
]
Volumes = Annotated[
    Annotated[dict[str, ContainerVolume], Tag("map")]
    | Annotated[list[ContainerVolumeItem], Tag("list")],
    Discriminator(_map_or_list),
]


def _files_map(files: Files | None) -> dict[str, ContainerFile]:
    if files is None:
        return {}
    if isinstance(files, dict):
        return files
    return {
        item.target or "": ContainerFile.model_validate(
            item.model_dump(by_alias=True, exclude_unset=True, exclude={"target"})
        )
        for item in files
    }


def _volumes_map(volumes: Volumes | None) -> dict[str, ContainerVolume]:
    if volumes is None:
        return {}
    if isinstance(volumes, dict):
        return volumes
    return {
        item.target or "": ContainerVolume.model_validate(
            item.model_dump(by_alias=True, exclude_unset=True, exclude={"target"})
        )
        for item in volumes
    }


# -- containers: resources and probes --------------------------------------------------------


class ResourcesLimits(ScoreModel):
    model_config = _described("Amounts of CPU and memory.")

    memory: Annotated[str, StringConstraints(pattern=MEMORY_PATTERN)] | None = Field(
        default=None,
        description="Bytes, with an optional decimal (K, M, G...) or binary (Ki, Mi, Gi...) "
        "unit, for example 128Mi or 1.5G.",
    )
    cpu: Annotated[str, StringConstraints(pattern=CPU_PATTERN)] | None = Field(
        default=None,
        description="Whole or fractional CPUs, or millicores with 'm', for example 2, 0.5 or 250m.",
    )


class ContainerResources(ScoreModel):
    model_config = _described("The CPU and memory the container needs and may use.")

    limits: ResourcesLimits | None = Field(default=None, description="The most it may use.")
    requests: ResourcesLimits | None = Field(
        default=None, description="The least it needs to be scheduled."
    )


class HttpHeader(ScoreModel):
    model_config = _described("A header sent with an HTTP probe.")

    name: Annotated[str, StringConstraints(pattern=HEADER_NAME_PATTERN)] = Field(
        description="The header name: letters, digits, '_' and '-'."
    )
    value: NonEmptyStr = Field(description="The header value.")


class HttpGetProbe(ScoreModel):
    model_config = _described("A probe that succeeds when an HTTP GET answers with success.")

    host: NonEmptyStr | None = Field(
        default=None, description="The host to connect to; the workload's own address if omitted."
    )
    scheme: Literal["HTTP", "HTTPS"] = Field(
        default="HTTP", description="HTTP or HTTPS; HTTP when omitted."
    )
    path: str = Field(description="The request path.")
    port: Port = Field(description="The port to connect to (1 to 65535).")
    http_headers: list[HttpHeader] | None = Field(
        default=None, alias="httpHeaders", description="Extra request headers."
    )


class ExecProbe(ScoreModel):
    model_config = _described("A probe that succeeds when a command exits with status 0.")

    command: list[str] = Field(description="The command and its arguments.")


class ContainerProbe(ScoreModel):
    model_config = _described(
        "A health check with 'httpGet', 'exec' or both; implementations prefer 'exec'.",
        anyOf=[{"required": ["httpGet"]}, {"required": ["exec"]}],
    )

    http_get: HttpGetProbe | None = Field(default=None, alias="httpGet")
    exec_: ExecProbe | None = Field(default=None, alias="exec")

    @model_validator(mode="after")
    def _has_handler(self) -> Self:
        if self.http_get is None and self.exec_ is None:
            raise PydanticCustomError("probe_without_handler", "a probe needs 'httpGet' or 'exec'")
        return self


class BeforeCondition(ScoreModel):
    model_config = _described("What another container must reach before this one starts.")

    ready: Literal["started", "healthy", "complete"] = Field(
        description="started, healthy (its readiness probe passes) or complete (it exited "
        "successfully)."
    )


class Container(ScoreModel):
    model_config = _described("One container of the workload.")

    image: NonEmptyStr = Field(
        description="The image reference; '.' means an image built from the workload's own sources."
    )
    command: list[str] | None = Field(
        default=None, description="Replaces the image's entrypoint; never substituted."
    )
    args: list[str] | None = Field(
        default=None, description="Replaces the image's arguments; never substituted."
    )
    variables: dict[VariableName, str] | None = Field(
        default=None, description="Environment variables; values may hold placeholders."
    )
    files: Files | None = Field(
        default=None,
        description="Files to mount, keyed by their path in the container. A list with "
        "'target' on each item is the deprecated form.",
    )
    volumes: Volumes | None = Field(
        default=None,
        description="Volumes to mount, keyed by their mount path. A list with 'target' on each "
        "item is the deprecated form.",
    )
    before: dict[Label, BeforeCondition] | None = Field(
        default=None,
        description="Containers of this workload that must reach a state before this one starts.",
    )
    resources: ContainerResources | None = Field(
        default=None, description="CPU and memory requests and limits."
    )
    liveness_probe: ContainerProbe | None = Field(
        default=None, alias="livenessProbe", description="Restarts the container when it fails."
    )
    readiness_probe: ContainerProbe | None = Field(
        default=None,
        alias="readinessProbe",
        description="Holds traffic back from the container while it fails.",
    )

    @property
    def files_by_target(self) -> Mapping[str, ContainerFile]:
        return _files_map(self.files)

    @property
    def volumes_by_target(self) -> Mapping[str, ContainerVolume]:
        return _volumes_map(self.volumes)

    def normalised(self) -> Container:
        """This container with ``files`` and ``volumes`` as maps; unchanged if they were."""
        update: dict[str, object] = {}
        if isinstance(self.files, list):
            update["files"] = _files_map(self.files)
        if isinstance(self.volumes, list):
            update["volumes"] = _volumes_map(self.volumes)
        return self.model_copy(update=update) if update else self


# -- resources and the workload --------------------------------------------------------------


class Resource(ScoreModel):
    model_config = _described("A dependency of the workload, provisioned by the platform.")

    type: ResourceTypeName = Field(
        description="The resource type, such as postgres or volume: letters, digits and '-'."
    )
    class_: ResourceTypeName | None = Field(
        default=None, alias="class", description="An optional variant of the type."
    )
    id: ResourceId | None = Field(
        default=None,
        description="Makes the resource shared: workloads declaring the same type, class and "
        "id use one resource. Dot-separated labels of a-z, 0-9 and '-'.",
    )
    metadata: ResourceMetadata | None = Field(
        default=None, description="Annotations and other keys for the provisioner."
    )
    params: dict[str, Any] | None = Field(
        default=None, description="Provisioner parameters; values may hold placeholders."
    )


class Workload(ScoreModel):
    """The root document. Build it with ``from_data``, which also normalises the deprecated
    list forms; ``model_validate`` alone keeps the document's shape."""

    model_config = _described("A Score workload (score.dev/v1b1) as read by score-reconciler.")

    api_version: Annotated[str, StringConstraints(pattern=API_VERSION_PATTERN)] = Field(
        alias="apiVersion", description="The Score version: score.dev/v1b1."
    )
    metadata: WorkloadMetadata = Field(description="The workload's name and annotations.")
    service: Service | None = Field(
        default=None, description="The ports the workload offers to others."
    )
    containers: Annotated[dict[Label, Container], Field(min_length=1)] = Field(
        description="The containers, at least one, keyed by RFC 1123 label."
    )
    resources: dict[Label, Resource] | None = Field(
        default=None, description="The resources the workload depends on, keyed by RFC 1123 label."
    )

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Workload:
        """Validate a parsed document; raises ``pydantic.ValidationError`` for what the schema
        rejects."""
        return cls.model_validate(data).normalised()

    def normalised(self) -> Workload:
        """This workload with every container's ``files`` and ``volumes`` as maps; unchanged
        (no copy) when they all were, as in nearly every document."""
        containers = {name: c.normalised() for name, c in self.containers.items()}
        if all(containers[name] is c for name, c in self.containers.items()):
            return self
        return self.model_copy(update={"containers": containers})

    def to_data(self) -> dict[str, Any]:
        """The document as plain data, with only the keys that were given."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


__all__: Sequence[str] = (
    "API_VERSION",
    "BeforeCondition",
    "Container",
    "ContainerFile",
    "ContainerFileItem",
    "ContainerProbe",
    "ContainerResources",
    "ContainerVolume",
    "ContainerVolumeItem",
    "ExecProbe",
    "HttpGetProbe",
    "HttpHeader",
    "Resource",
    "ResourceMetadata",
    "ResourcesLimits",
    "ScoreModel",
    "Service",
    "ServicePort",
    "Workload",
    "WorkloadMetadata",
)
