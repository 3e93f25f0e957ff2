"""The ``reconciler`` command: one typer app, a module per command group.

Exit codes are part of the interface (docs/cli.md): 0 success, 1 problems found or failure,
2 usage errors (typer's own), and per command the codes documented with it.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from reconciler import __version__
from reconciler.cli import (
    apply_cmd,
    db_cmd,
    demo_cmd,
    explain_cmd,
    plan_cmd,
    preview_cmd,
    run_cmd,
    status_cmd,
    validate_cmd,
    workflow_cmd,
)
from reconciler.observability import configure

app = typer.Typer(
    name="reconciler",
    help="A GitOps reconciler for Score workloads.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("validate")(validate_cmd.validate)
app.command("plan")(plan_cmd.plan)
app.command("preview")(preview_cmd.preview_command)
app.command("apply")(apply_cmd.apply)
app.command("destroy")(apply_cmd.destroy)
app.command("approve")(apply_cmd.approve)
app.command("reject")(apply_cmd.reject)
app.command("run")(run_cmd.run)
app.command("demo")(demo_cmd.demo)
app.command("status")(status_cmd.status)
app.command("history")(status_cmd.history)
app.command("sync")(status_cmd.sync)
app.command("rollback")(status_cmd.rollback)
app.command("runs")(apply_cmd.runs)
app.command("run-show")(apply_cmd.run_show)
app.command("explain")(explain_cmd.explain)
app.add_typer(db_cmd.app, name="db")
app.add_typer(workflow_cmd.app, name="workflow")


DAEMON_COMMANDS = frozenset({"run", "demo"})


def _print_version(value: bool) -> None:
    """``--version`` as well as ``version``: scripts and users try the flag first."""
    if value:
        typer.echo(f"reconciler {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    log_level: Annotated[
        str | None,
        typer.Option(
            "--log-level",
            envvar="RECONCILER_LOG_LEVEL",
            help="debug, info, warning or error (default: info for the daemon, warning else).",
        ),
    ] = None,
    _version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """A GitOps reconciler for Score workloads."""
    default = "INFO" if ctx.invoked_subcommand in DAEMON_COMMANDS else "WARNING"
    configure(level=(log_level or default).upper())


@app.command("version")
def version() -> None:
    """Print the version."""
    typer.echo(f"reconciler {__version__}")


def main() -> None:
    sys.exit(app())  # pragma: no cover - the console script
