"""The ``reconciler.yaml`` model: what a watched repository tells the reconciler about itself.

The loader parses the file (keeping positions for diagnostics), validates it against the JSON
Schema generated from these models (``reconciler.config.schema``), then calls
``Config.from_data``; the daemon, planner and reporters read the resulting frozen value. Every key
is optional, so a repository without the file reconciles with ``Config.default()``.

The models are strict on purpose: a YAML ``yes`` is not a boolean and ``5`` is not a string here,
exactly as in the schema, so the schema pass and the model never disagree about a document. The
few rules JSON Schema cannot state (backoff bounds, branches the reconciler writes to) are checked
by the model alone and raise errors whose ``type`` names the rule, for the loader to map to codes.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    Strict,
    StrictBool,
    StringConstraints,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

API_VERSION: Final = "reconciler.score.dev/v1alpha1"
CONFIG_FILE = "reconciler.yaml"
DEFAULT_ENVIRONMENT = "default"
DEPLOY_BRANCH_PREFIX = "reconciler/deploy/"

# -- patterns: shared by validation and the generated schema, so both say the same thing ---------

# Same rule as Score workload names, so one hint (RCN-1107) fits every name a user writes.
NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,61}[a-z0-9]$"

# Python's `$` (used by jsonschema and the model alike) also matches before a final newline, so
# "main\n" would pass a plain `^...$`; every pattern below refuses newlines first.
_ONE_LINE = r"^(?!.*\n)"

# What `git check-ref-format` accepts, as one expression that JSON Schema can carry too.
_REF_BODY = (
    r"(?!/)(?!-)(?!.*//)(?!.*/$)(?!.*\.\.)(?!.*@\{)(?!(?:.*/)?\.)(?!.*\.lock(?:/|$))"
    r"(?!.*\.$)(?!@$)[^\x00-\x20\x7f~^:?*\[\\]+$"
)
REF_PATTERN = _ONE_LINE + _REF_BODY
# A short branch name: `refs/...` belongs in `ref`, and `HEAD` is not a branch.
BRANCH_PATTERN = _ONE_LINE + r"(?!refs/)(?!HEAD$)" + _REF_BODY
NOTES_REF_PATTERN = _ONE_LINE + r"(?=refs/notes/[^/])" + _REF_BODY

# Relative, '/'-separated, no empty, '.' or '..' part, brackets closed: a glob that can only
# ever match inside the repository and means the same thing on every platform.
GLOB_PATTERN = (
    _ONE_LINE + r"(?!/)(?!.*\\)(?!.*//)(?!.*/$)(?!(?:.*/)?\.\.?(?:/|$))(?!.*\[[^\]]*$).+$"
)

DURATION_PATTERN = _ONE_LINE + r"(?!(?:0+(?:ms|s|m|h))+$)(?:[0-9]+(?:ms|s|m|h))+$"
VARIABLE_NAME_PATTERN = _ONE_LINE + r"[A-Za-z_][A-Za-z0-9_-]*$"
ENV_VAR_PATTERN = _ONE_LINE + r"[A-Za-z_][A-Za-z0-9_]*$"
URL_PATTERN = _ONE_LINE + r"https?://[^\s/?#]+(?:/[^\s?#]*)?$"
REPOSITORY_PATTERN = _ONE_LINE + r"(?:(?:[A-Za-z0-9_.-]+/)+[A-Za-z0-9_.-]+|[1-9][0-9]*)$"


def _pattern(regex: str) -> Any:
    return StringConstraints(strict=True, pattern=regex)


EnvironmentName = Annotated[str, _pattern(NAME_PATTERN)]
WorkflowName = EnvironmentName  # the same RFC 1123 label rule
BranchName = Annotated[str, _pattern(BRANCH_PATTERN)]
RefName = Annotated[str, _pattern(REF_PATTERN)]
NotesRef = Annotated[str, _pattern(NOTES_REF_PATTERN)]
Glob = Annotated[str, _pattern(GLOB_PATTERN)]
VariableName = Annotated[str, _pattern(VARIABLE_NAME_PATTERN)]
EnvVarName = Annotated[str, _pattern(ENV_VAR_PATTERN)]
Url = Annotated[str, _pattern(URL_PATTERN)]
Repository = Annotated[str, _pattern(REPOSITORY_PATTERN)]
Text = Annotated[str, StringConstraints(strict=True)]


def _whole_number(value: object) -> object:
    """JSON Schema counts 3.0 as an integer; so does the model, and nothing looser."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Attempts = Annotated[int, Strict(), Field(ge=1, le=100), BeforeValidator(_whole_number)]

Approval = Literal["none", "required"]
OnFailure = Literal["stop", "rollback"]
Target = Literal["manifests", "kubernetes"]
ForgeKind = Literal["github", "gitea", "gitlab"]

_UNIT_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000}
_DURATION_PART = re.compile(r"([0-9]+)(ms|s|m|h)")


@functools.total_ordering
class Duration:
    """A positive span written like Go and Kubernetes users write it: ``90s``, ``1h30m``.

    Kept as whole milliseconds (ordering and equality use them) plus the text the user wrote,
    which is what serialization, schema defaults and messages show back. A plain class rather
    than a dataclass, so pydantic uses the hooks below (defaults in the schema read '5m').
    """

    __slots__ = ("milliseconds", "text")

    milliseconds: int
    text: str

    def __init__(self, milliseconds: int, text: str) -> None:
        object.__setattr__(self, "milliseconds", milliseconds)
        object.__setattr__(self, "text", text)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Duration is immutable; cannot set {name!r}")

    @classmethod
    def parse(cls, text: str) -> Duration:
        if re.fullmatch(DURATION_PATTERN, text) is None:
            raise ValueError(f"invalid duration {text!r}: write a number and a unit, e.g. '5m'")
        total = sum(int(n) * _UNIT_MS[unit] for n, unit in _DURATION_PART.findall(text))
        return cls(total, text)

    @property
    def seconds(self) -> float:
        return self.milliseconds / 1000

    @property
    def timedelta(self) -> dt.timedelta:
        return dt.timedelta(milliseconds=self.milliseconds)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Duration):
            return NotImplemented
        return self.milliseconds == other.milliseconds

    def __lt__(self, other: Duration) -> bool:
        return self.milliseconds < other.milliseconds

    def __hash__(self) -> int:
        return hash(self.milliseconds)

    def __repr__(self) -> str:
        return f"Duration({self.text!r})"

    def __str__(self) -> str:
        return self.text

    @classmethod
    def _validate(cls, value: object) -> Duration:
        if isinstance(value, Duration):
            return value
        if isinstance(value, str):
            return cls.parse(value)
        raise PydanticCustomError(
            "duration_type", "a duration is a string such as '30s' or '1h30m'"
        )

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[Any], handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls._validate,
            serialization=core_schema.plain_serializer_function_ser_schema(str),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"type": "string", "pattern": DURATION_PATTERN}


class _Model(BaseModel):
    # python-re: the ref and glob patterns need lookaheads, which the Rust engine lacks.
    model_config = ConfigDict(frozen=True, extra="forbid", regex_engine="python-re")


class Hooks(_Model):
    """Workflows (golden paths) run around an environment's apply, in order, with their params'
    defaults; a hook that fails stops the apply (before) or fails the run (after)."""

    before_apply: tuple[WorkflowName, ...] = Field(
        default=(), description="Workflows to run before anything is applied."
    )
    after_apply: tuple[WorkflowName, ...] = Field(
        default=(), description="Workflows to run after everything was applied."
    )


class Previews(_Model):
    """Branches previewed by the daemon without a forge: each head gets its preview as a note
    under ``refs/notes/reconciler-preview``."""

    branches: tuple[Glob, ...] = Field(
        default=(),
        description="Globs of branch names to preview, e.g. 'feature/*'; empty: none.",
    )
    base: BranchName | None = Field(
        default=None,
        description="The branch previews compare with; default: the branch the environments "
        "follow.",
    )


class Environment(_Model):
    """One environment: which revision it follows, and how changes reach it."""

    model_config = ConfigDict(
        json_schema_extra={
            "not": {
                "description": "An environment follows either a branch or a ref, not both.",
                "required": ["branch", "ref"],
                "properties": {"branch": {"type": "string"}, "ref": {"type": "string"}},
            }
        }
    )

    branch: BranchName | None = Field(
        default=None,
        description="Branch this environment follows (a short name such as 'main'). "
        "Without 'branch' or 'ref' it follows the branch HEAD points to.",
    )
    ref: RefName | None = Field(
        default=None,
        description="Any revision to follow instead of a branch: a full ref such as "
        "'refs/tags/prod' or a commit id. Exclusive with 'branch'.",
    )
    approval: Approval = Field(
        default="none",
        description="'required': every plan waits for 'reconciler approve' before it is applied.",
    )
    on_failure: OnFailure = Field(
        default="stop",
        description="What a failed run does: 'stop' leaves what was applied; 'rollback' undoes "
        "the steps this run applied.",
    )
    self_heal: StrictBool = Field(
        default=False,
        description="Re-apply the desired state when a periodic resync finds drift.",
    )
    resync: Duration = Field(
        default=Duration.parse("5m"),
        description="Interval between periodic resyncs that look for drift, e.g. '30s', '1h30m'.",
    )
    target: Target = Field(
        default="manifests",
        description="'manifests': commit rendered Kubernetes YAML to the deploy branch (for "
        "Argo CD or Flux); 'kubernetes': apply to the cluster directly.",
    )
    deploy_branch: BranchName | None = Field(
        default=None,
        description="Branch the rendered manifests are committed to (target 'manifests'); "
        "defaults to 'reconciler/deploy/<environment>'.",
    )
    variables: Mapping[VariableName, Text] = Field(
        default_factory=dict,
        description="String values visible to provisioners, e.g. a cluster domain.",
    )
    workloads: tuple[Glob, ...] = Field(
        default=(),
        description="Globs (paths of Score files) restricting which workloads this environment "
        "gets; empty means all.",
    )
    hooks: Hooks = Field(
        default_factory=Hooks,
        description="Workflows run before and after each apply of this environment.",
    )

    @model_validator(mode="after")
    def _branch_or_ref(self) -> Self:
        if self.branch is not None and self.ref is not None:
            raise PydanticCustomError("branch_and_ref", "give either 'branch' or 'ref', not both")
        return self

    @property
    def follows(self) -> str:
        """The revision to reconcile, as Git resolves it: a full ref, a revision, or ``HEAD``."""
        if self.branch is not None:
            return f"refs/heads/{self.branch}"
        return self.ref if self.ref is not None else "HEAD"

    def deploy_branch_for(self, name: str) -> str:
        """The deploy branch; the default needs the environment's name, which is the map key."""
        return self.deploy_branch or f"{DEPLOY_BRANCH_PREFIX}{name}"


class Retries(_Model):
    """Defaults for retrying a failed step, with exponential backoff and jitter."""

    max_attempts: Attempts = Field(
        default=5, description="Attempts per step, including the first (1 means no retry)."
    )
    initial_backoff: Duration = Field(
        default=Duration.parse("1s"), description="Wait before the first retry."
    )
    max_backoff: Duration = Field(
        default=Duration.parse("5m"),
        description="Upper bound of the wait, which doubles after each attempt.",
    )

    @model_validator(mode="after")
    def _bounds(self) -> Self:
        if self.initial_backoff > self.max_backoff:
            raise PydanticCustomError(
                "backoff_bounds",
                "initial_backoff ({initial}) is longer than max_backoff ({max})",
                {"initial": str(self.initial_backoff), "max": str(self.max_backoff)},
            )
        return self


class NotesReporter(_Model):
    """A Git note on every reconciled commit, readable with 'git notes --ref ... show'."""

    enabled: StrictBool = Field(default=True, description="Write the notes.")
    ref: NotesRef = Field(
        default="refs/notes/reconciler", description="Notes ref, under 'refs/notes/'."
    )


class StatusBranchReporter(_Model):
    """A branch with one status file per environment and workload, a commit per reconcile."""

    enabled: StrictBool = Field(default=True, description="Write the status branch.")
    branch: BranchName = Field(
        default="reconciler/status", description="Branch the status commits go to."
    )


class ForgeReporter(_Model):
    """Commit statuses and pull-request comments through the forge's API."""

    kind: ForgeKind = Field(description="The forge: 'github', 'gitea' or 'gitlab'.")
    url: Url = Field(
        description="API base URL, e.g. 'https://api.github.com', "
        "'https://gitea.example.com/api/v1', 'https://gitlab.com/api/v4'."
    )
    repository: Repository = Field(
        description="'owner/name' (GitLab: 'group/project' path or numeric project id)."
    )
    token_env: EnvVarName = Field(
        description="Name of the environment variable holding the API token; the token itself "
        "never appears in the file."
    )
    target_url: Url | None = Field(
        default=None, description="Link attached to commit statuses, e.g. a dashboard."
    )


class Reporters(_Model):
    """Where results are reported; each reporter is optional."""

    notes: NotesReporter = Field(
        default_factory=NotesReporter, description="Git notes on reconciled commits."
    )
    status_branch: StatusBranchReporter = Field(
        default_factory=StatusBranchReporter, description="The status branch."
    )
    forge: ForgeReporter | None = Field(
        default=None, description="Commit statuses and PR comments on the forge; null: none."
    )


def _default_environments() -> Mapping[str, Environment]:
    return {DEFAULT_ENVIRONMENT: Environment()}


class Config(_Model):
    """The reconciler.yaml of a watched repository (score-reconciler configuration)."""

    api_version: Literal["reconciler.score.dev/v1alpha1"] = Field(
        default=API_VERSION,
        alias="apiVersion",
        description=f"Version of this file's format; if given it must be '{API_VERSION}'.",
    )
    workloads: tuple[Glob, ...] = Field(
        default=("**/score.yaml", "**/*.score.yaml"),
        description="Globs (relative to the repository root, '/'-separated) finding Score files.",
    )
    exclude: tuple[Glob, ...] = Field(
        default=(), description="Globs of paths that are never read as Score files."
    )
    provisioners: tuple[Glob, ...] = Field(
        default=("provisioners/*.yaml",),
        description="Provisioner files, before the built-in ones; the first matching "
        "provisioner wins, in the order of these globs (matches sorted by path).",
    )
    policies: tuple[Glob, ...] = Field(
        default=("policies/*.yaml",), description="Policy files checked before any apply."
    )
    workflows: tuple[Glob, ...] = Field(
        default=("workflows/*.yaml",), description="Custom workflow files."
    )
    environments: Annotated[Mapping[EnvironmentName, Environment], Field(min_length=1)] = Field(
        default_factory=_default_environments,
        description="Environments by name (an RFC 1123 label). Default: one environment "
        "'default' following HEAD.",
        json_schema_extra={"default": {DEFAULT_ENVIRONMENT: {}}},
    )
    retries: Retries = Field(default_factory=Retries, description="Retry defaults for steps.")
    previews: Previews = Field(
        default_factory=Previews,
        description="Branches the daemon previews without a forge (notes on their heads).",
    )
    reporters: Reporters = Field(
        default_factory=Reporters, description="Where results are reported."
    )

    @model_validator(mode="after")
    def _written_branches(self) -> Self:
        # The reconciler commits to deploy and status branches: following one of them would
        # feed its own output back in, and two environments sharing one would overwrite each other.
        followed = {env.branch for env in self.environments.values() if env.branch is not None}
        writers: dict[str, str] = {}
        if self.reporters.status_branch.enabled:
            writers[self.reporters.status_branch.branch] = "reporters.status_branch.branch"
        for name, env in sorted(self.environments.items()):
            if env.target != "manifests":
                continue
            branch = env.deploy_branch_for(name)
            where = f"environments.{name}.deploy_branch"
            if branch in writers:
                raise PydanticCustomError(
                    "branch_conflict",
                    "{where}: '{branch}' is also written by {other}",
                    {"where": where, "branch": branch, "other": writers[branch]},
                )
            writers[branch] = where
        for branch, where in sorted(writers.items()):
            if branch in followed:
                raise PydanticCustomError(
                    "branch_conflict",
                    "{where}: '{branch}' is followed by an environment; the reconciler would "
                    "reconcile its own commits",
                    {"where": where, "branch": branch},
                )
        return self

    @classmethod
    def default(cls) -> Config:
        """The configuration of a repository without a reconciler.yaml."""
        return cls()

    @classmethod
    def from_data(cls, data: Mapping[str, object]) -> Config:
        """Validate parsed YAML; raises ``pydantic.ValidationError`` listing every problem."""
        return cls.model_validate(data)

    def sorted_environments(self) -> tuple[tuple[str, Environment], ...]:
        """Environments by name, so every walk over them is deterministic."""
        return tuple(sorted(self.environments.items()))
