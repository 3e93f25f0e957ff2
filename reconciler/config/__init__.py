"""The repository's own configuration: the ``reconciler.yaml`` model and its JSON Schema."""
