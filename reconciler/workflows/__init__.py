"""Custom workflows (golden paths): typed parameters and a DAG of steps, read from the watched
repository's ``workflows/*.yaml`` and run through the engine.

``workflow list`` / ``workflow run`` (``reconciler.cli.workflow_cmd``) and the apply runner's
hooks use this package: ``load_workflows`` reads and checks the files, ``params.resolve`` types
the parameters, ``run_workflow`` and ``run_hooks`` run them. docs/workflows.md describes the
format and the semantics.
"""

from reconciler.workflows.loader import LoadedWorkflows, load_workflow, load_workflows
from reconciler.workflows.model import Workflow, workflow_schema
from reconciler.workflows.params import ParamValue, parse_assignments, resolve
from reconciler.workflows.run import (
    HookResult,
    Runtime,
    Stage,
    Status,
    StepResult,
    WorkflowResult,
    run_hooks,
    run_workflow,
)
from reconciler.workflows.steps import Actions, ApplyFn, ProvisionFn

__all__ = [
    "Actions",
    "ApplyFn",
    "HookResult",
    "LoadedWorkflows",
    "ParamValue",
    "ProvisionFn",
    "Runtime",
    "Stage",
    "Status",
    "StepResult",
    "Workflow",
    "WorkflowResult",
    "load_workflow",
    "load_workflows",
    "parse_assignments",
    "resolve",
    "run_hooks",
    "run_workflow",
    "workflow_schema",
]
