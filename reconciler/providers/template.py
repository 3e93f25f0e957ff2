"""The ``template://`` driver: runs a provisioner's Jinja2 templates for real at apply time.

Who calls it: the engine, through ``registry.driver_for``, for a resource whose provisioner is a
``template://`` one. Rendering itself is ``desired.templating.render`` (init → state → shared →
outputs → manifests); this module adds what rendering leaves to its caller: which provisioner
serves the request, the seed that keeps generated values stable, and the split of outputs into
recorded values and secrets.

Stability: ``random_password`` and friends draw from a stream keyed by a seed. The seed is drawn
once, on the first apply, and handed back as the secret ``SEED_KEY``; the engine stores it with
the resource's other secrets and returns it in ``previous_secrets``, so the next apply draws the
same values. The seed is a secret and never goes into the recorded state: with the template (in
Git) anyone reading the state could otherwise recompute every password. A template that keeps
values in ``state`` (``state.x | default(init.x)``, as the built-ins do) stays stable even
without the seed.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from typing import Any, Final

from reconciler.catalogue import Code
from reconciler.desired.identity import parse
from reconciler.desired.provisioners import Provisioner, ProvisionerSet
from reconciler.desired.templating import RenderError, TemplateInput, render
from reconciler.providers.base import DriverError, Observation, ResourceRequest, ResourceResult

SEED_KEY: Final = "_seed"
"""The secret under which the template driver keeps a resource's random seed."""


class TemplateDriver:
    """Renders ``template://`` provisioners; holds no state of its own between calls."""

    local = True  # templates render in the process

    def __init__(self, provisioners: ProvisionerSet) -> None:
        self._provisioners = provisioners

    def apply(self, request: ResourceRequest) -> ResourceResult:
        provisioner = provisioner_for(self._provisioners, request)
        seed = request.previous_secrets.get(SEED_KEY) or secrets.token_urlsafe(32)
        try:
            rendered = render(provisioner, template_input(request), seed)
        except RenderError as exc:
            raise DriverError(Code.PROVISIONER_TEMPLATE_ERROR, str(exc)) from exc
        outputs, hidden = split_secrets(rendered.outputs, provisioner.secret_outputs)
        return ResourceResult(
            state=rendered.state,
            outputs=outputs,
            secrets={**hidden, SEED_KEY: seed},
            shared=rendered.shared,
            manifests=rendered.manifests,
        )

    def delete(self, request: ResourceRequest) -> None:
        """Nothing to undo: a template resource is its outputs and manifests, which the engine
        and the workload target remove."""

    def observe(self, request: ResourceRequest) -> Observation:
        """A template resource exists once something was recorded for it; there is nothing
        outside the store to ask."""
        exists = bool(
            request.previous_state or request.previous_outputs or request.previous_secrets
        )
        return Observation(exists=exists, outputs=request.previous_outputs if exists else {})


def provisioner_for(provisioners: ProvisionerSet, request: ResourceRequest) -> Provisioner:
    """The provisioner the planner chose: its uri, and it matches the resource.

    The uri alone is not enough: one ``cmd://python3`` may serve several types with different
    ``args``. The first in precedence order wins, as in matching.
    """
    try:
        uid = parse(request.uid)
    except ValueError as exc:
        raise DriverError(Code.NO_PROVISIONER, str(exc)) from exc
    for provisioner in provisioners:
        if provisioner.uri == request.provisioner_uri and provisioner.matches(uid):
            return provisioner
    raise DriverError(
        Code.NO_PROVISIONER,
        f"resource '{request.uid}': no loaded provisioner '{request.provisioner_uri}' serves it",
    )


def template_input(request: ResourceRequest) -> TemplateInput:
    """What the templates see: the request's values, with the recorded state and shared state."""
    return TemplateInput(
        uid=parse(request.uid),
        params=request.params,
        metadata=request.metadata,
        source_workload=request.source_workload,
        workload_services=request.workload_services,
        environment={"name": request.environment, "variables": dict(request.variables)},
        state=request.previous_state,
        shared=request.shared,
    )


def split_secrets(
    outputs: Mapping[str, Any], secret_keys: tuple[str, ...]
) -> tuple[dict[str, Any], dict[str, str]]:
    """Outputs to record, and secret outputs as text (a non-string is JSON-encoded, as a
    placeholder would encode it)."""
    public = {k: v for k, v in sorted(outputs.items()) if k not in secret_keys}
    hidden = {
        k: v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))
        for k, v in sorted(outputs.items())
        if k in secret_keys
    }
    return public, hidden
