"""The desired state of one environment, and the provisioners that will make it real.

``build`` turns loaded workloads into a ``DesiredState`` (resource identities, provisioner
matches, dependency order, resolved placeholders); ``load_provisioners`` reads provisioner
files; ``templating.render`` runs a template provisioner. Pure, apart from
``builtin_provisioner_files``, which reads the files the package ships.
"""

from reconciler.desired.build import build
from reconciler.desired.identity import ResourceUid, parse
from reconciler.desired.model import DesiredResource, DesiredState, DesiredWorkload
from reconciler.desired.provisioners import (
    Provisioner,
    ProvisionerSet,
    builtin_provisioner_files,
    load_provisioners,
)
from reconciler.desired.templating import Rendered, RenderError, TemplateInput, render
from reconciler.desired.workloads import file_sources, workload_services

__all__ = [
    "DesiredResource",
    "DesiredState",
    "DesiredWorkload",
    "Provisioner",
    "ProvisionerSet",
    "RenderError",
    "Rendered",
    "ResourceUid",
    "TemplateInput",
    "build",
    "builtin_provisioner_files",
    "file_sources",
    "load_provisioners",
    "parse",
    "render",
    "workload_services",
]
