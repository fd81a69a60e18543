"""The ``postroom`` command line.

A skeleton for now: the service's commands (``serve``, ``web``, ``worker``, ``backfill``)
arrive with the connect and processing work. ``postroom version`` proves the entry point.
"""

from __future__ import annotations

import typer

from postroom import __version__

app = typer.Typer(
    name="postroom",
    help="Self-hostable inbox automation for Microsoft 365.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command()
def version() -> None:
    """Print Postroom's version."""
    typer.echo(f"postroom {__version__}")


@app.callback()
def main() -> None:
    """Postroom: label, file and forward Microsoft 365 mail, never delete it."""
