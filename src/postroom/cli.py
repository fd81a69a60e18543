"""The ``postroom`` command line.

``postroom serve`` runs the web application (sign-up, integrations, the setup wizard, OAuth
callbacks) on the configured database — the embedded PostgreSQL when ``DATABASE_URL`` is unset.
``postroom demo`` runs the same against m365sim with its demo tenant. The worker commands
(``worker``, ``backfill``) arrive with the processing work.
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


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8000, help="Port to listen on."),
) -> None:
    """Run Postroom's web application with the settings from the environment."""
    import uvicorn

    from postroom.settings import load_settings
    from postroom.web.app import create_app

    try:
        settings = load_settings()
    except ValueError as exc:
        typer.echo(f"Configuration error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"Postroom on {settings.public_base_url} (listening on {host}:{port})")
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")


@app.callback()
def main() -> None:
    """Postroom: label, file and forward Microsoft 365 mail, never delete it."""
