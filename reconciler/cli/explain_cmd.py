"""``reconciler explain RCN-1101``: what an error code means and what to do about it."""

from __future__ import annotations

from typing import Annotated

import typer

from reconciler.catalogue import Code, by_id


def explain(code: Annotated[str, typer.Argument(help="An error code such as RCN-1101.")]) -> None:
    """Explain an error code."""
    try:
        entry = by_id(code.upper() if code.upper().startswith("RCN-") else f"RCN-{code}")
    except KeyError:
        typer.echo(f"unknown error code '{code}'; codes look like RCN-1101", err=True)
        raise typer.Exit(2) from None
    typer.echo(_describe(entry))


def _describe(code: Code) -> str:
    return f"{code.id}: {code.title}\n\n{code.hint}\n\nMore: {code.docs_url}"
