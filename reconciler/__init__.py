"""score-reconciler: a GitOps reconciler for Score workload specifications."""

__version__ = "0.1.0"
