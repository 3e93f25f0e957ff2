"""The driver protocols every provider implements, and the values they exchange.

Two kinds of driver share one shape (apply, delete, observe), as the design asks:

- a ``ResourceDriver`` provisions one resource (``template``, ``cmd``, ``postgres``): it returns
  the resource's state, its outputs and its secret values; the engine stores the secrets through a
  ``SecretStore`` and records only references;
- a ``WorkloadTarget`` puts workloads into the world (``manifests`` commits Kubernetes YAML to a
  deploy branch, ``kubernetes`` applies it to a cluster).

Every call must be idempotent: after a crash the engine calls ``apply`` again for the step that was
running, and the driver first observes what is there. Drivers translate their library's errors
into ``DriverError`` at the boundary, saying whether retrying can help.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from reconciler.catalogue import Code


class DriverError(Exception):
    """A driver failed; ``retryable`` tells the engine whether to try again with backoff."""

    def __init__(self, code: Code, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable

    def __str__(self) -> str:
        return f"{self.code.id} {self.message}"


@dataclass(frozen=True, slots=True)
class ResourceRequest:
    """Everything a resource driver may read; ``previous`` is what was recorded last time."""

    environment: str
    uid: str
    type: str
    class_: str
    id: str
    params: Mapping[str, Any]
    metadata: Mapping[str, Any]
    source_workload: str
    provisioner_uri: str
    workload_services: Mapping[str, Any] = field(default_factory=dict)
    variables: Mapping[str, str] = field(default_factory=dict)
    previous_state: Mapping[str, Any] = field(default_factory=dict)
    previous_outputs: Mapping[str, Any] = field(default_factory=dict)
    previous_secrets: Mapping[str, str] = field(default_factory=dict)
    """Secret values from the secret store, resolved by the engine for this call only."""
    shared: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ResourceResult:
    """A provisioned resource: ``secrets`` are values the engine stores and never records."""

    state: Mapping[str, Any] = field(default_factory=dict)
    outputs: Mapping[str, Any] = field(default_factory=dict)
    secrets: Mapping[str, str] = field(default_factory=dict)
    shared: Mapping[str, Any] = field(default_factory=dict)
    manifests: Sequence[Mapping[str, Any]] = ()


@dataclass(frozen=True, slots=True)
class Observation:
    exists: bool
    healthy: bool = True
    message: str = ""
    outputs: Mapping[str, Any] = field(default_factory=dict)


class ResourceDriver(Protocol):
    @property
    def local(self) -> bool:
        """Whether the driver only computes: no server, no command. Its steps then run on the
        engine's coordinator thread (``Step.inline``), with no hand-off to a worker."""
        ...

    def apply(self, request: ResourceRequest) -> ResourceResult: ...

    def delete(self, request: ResourceRequest) -> None: ...

    def observe(self, request: ResourceRequest) -> Observation: ...


class SecretStore(Protocol):
    """Where secret values live; the store and every output keep only the reference."""

    @property
    def in_state_store(self) -> bool:
        """Whether values are rows of the state store, so that ``put_many`` joins the caller's
        ``Store.transaction()``: the runner then writes a resource's secrets in the transaction
        of its record and its step's checkpoint, instead of one of their own."""
        ...

    def put(self, ref: str, value: str) -> None: ...

    def put_many(self, values: Mapping[str, str]) -> None:
        """Put several values by reference: a resource's secrets, in one write where the
        backend can (the encrypted store: one transaction, all or none)."""
        ...

    def get(self, ref: str) -> str | None: ...

    def delete(self, ref: str) -> None: ...


@dataclass(frozen=True, slots=True)
class WorkloadRequest:
    """A workload with every placeholder resolved (secrets as markers, never values).

    ``resource_manifests`` are the Kubernetes objects the workload's resources' provisioners
    rendered (a database StatefulSet, an HTTPRoute); ``resource_outputs`` maps each of the
    workload's resource names to its outputs (secrets as references), for volume sources.
    """

    environment: str
    name: str
    spec: Mapping[str, Any]
    resources: Mapping[str, str] = field(default_factory=dict)
    resource_outputs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    resource_manifests: Sequence[Mapping[str, Any]] = ()
    file: str = ""
    commit: str = ""


class WorkloadTarget(Protocol):
    """Where workloads go. Changes may be staged per workload and made visible by ``flush``."""

    @property
    def local(self) -> bool:
        """Whether every method only computes and writes local files (a branch of the local
        repository, pushed nowhere): the runner's workload and publish steps then run on the
        engine's coordinator thread (``Step.inline``)."""
        ...

    def apply(self, request: WorkloadRequest) -> Observation: ...

    def delete(self, environment: str, name: str) -> None: ...

    def observe(self, environment: str, name: str) -> Observation: ...

    def flush(self, environment: str, message: str) -> str | None:
        """Publish staged changes (one deploy-branch commit); returns its id, or None if none."""
        ...
