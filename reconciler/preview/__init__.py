"""Pull-request previews: what merging a head commit into a base would change, per environment.

``compute.preview`` plans the head against the state the base would leave (the recorded state
when the base is what was reconciled, else the base's own desired state) without applying or
recording anything; ``markdown``, ``text`` and ``model.Preview.to_dict`` render it for a
pull-request comment, a terminal and scripts; ``annotations`` turns its diagnostics into check
annotations; ``daemon`` posts all of it for a pull-request event. docs/preview.md is the guide.
"""

from reconciler.preview.compute import PreviewError, preview
from reconciler.preview.model import EnvironmentPreview, Preview, WorkloadPreview

__all__ = ["EnvironmentPreview", "Preview", "PreviewError", "WorkloadPreview", "preview"]
