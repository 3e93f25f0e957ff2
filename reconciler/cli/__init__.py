"""The ``reconciler`` command line (typer + rich)."""
