"""The ``postroom`` command line.

``postroom serve`` runs the web application (sign-up, integrations, the setup wizard, OAuth
callbacks) on the configured database — the embedded PostgreSQL when ``DATABASE_URL`` is unset.
``postroom demo`` runs the same against m365sim with its demo tenant. The worker commands
(``worker``, ``backfill``) arrive with the processing work.
"""

from __future__ import annotations

from pathlib import Path

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


@app.command()
def demo(
    port: int = typer.Option(8000, help="Port for Postroom."),
    sim_port: int = typer.Option(8443, help="Port for the Microsoft 365 emulator (HTTPS)."),
    data_dir: Path = typer.Option(Path(".postroom-demo"), help="Where the demo keeps its data."),
) -> None:
    """Run the whole product locally: m365sim with the demo tenant, and Postroom pointed at it
    (embedded PostgreSQL, web UI) — no Microsoft account needed."""
    import uvicorn
    from pydantic import SecretStr

    from m365sim.cli import banner
    from m365sim.scenario import apply_scenario, read_scenario
    from m365sim.server import EmulatorServer
    from m365sim.state import new_state
    from postroom.settings import Settings
    from postroom.web.app import create_app

    sim_dir = data_dir / "m365sim"
    state = new_state(data_dir=sim_dir)
    data, base_dir = read_scenario("demo")
    apply_scenario(state, data, base_dir=base_dir)
    sim = EmulatorServer(state, host="127.0.0.1", port=sim_port, tls_dir=sim_dir)
    sim.start_in_thread()
    registration = next(
        (a for a in state.store.apps.values() if a.display_name == "Postroom"), None
    )
    if registration is None or not registration.secrets:
        typer.echo("The demo scenario has no Postroom app registration.", err=True)
        raise typer.Exit(2)
    public = f"http://localhost:{port}"
    for path in ("/auth/callback", "/auth/admin-consent/callback"):
        if public + path not in registration.redirect_uris:
            registration.redirect_uris.append(public + path)
    settings = Settings(
        data_dir=data_dir,
        public_base_url=public,
        ms_client_id=registration.client_id,
        ms_client_secret=SecretStr(registration.secrets[0].value),
        authority_host=sim.base_url,
        graph_base_url=f"{sim.base_url}/v1.0",
        ca_bundle=sim.ca_file,
    )
    typer.echo(banner(state, sim.ca_file).replace("Press Ctrl+C to stop.", ""))
    typer.echo(
        f"Postroom is starting on {public}\n"
        f"  1. Open {public}/signup and create your Postroom account.\n"
        "  2. Integrations -> Connect Integration -> Outlook, and sign in at the emulator with\n"
        "     one of the users above (organization-wide: the administrator).\n"
        f"  3. Watch what Postroom does to the mail in the viewer: {sim.base_url}/viewer\n"
        "Press Ctrl+C to stop."
    )
    try:
        uvicorn.run(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    finally:
        sim.stop()


@app.callback()
def main() -> None:
    """Postroom: label, file and forward Microsoft 365 mail, never delete it."""
