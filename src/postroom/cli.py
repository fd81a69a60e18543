"""The ``postroom`` command line.

``postroom serve`` runs the web application (sign-up, integrations, the setup wizard, OAuth
callbacks) on the configured database — the embedded PostgreSQL when ``DATABASE_URL`` is unset.
``postroom demo`` runs the same against m365sim with its demo tenant. The worker commands
(``worker``, ``backfill``) arrive with the processing work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from postroom import __version__

app = typer.Typer(
    name="postroom",
    help="Self-hostable inbox automation for Microsoft 365.",
    no_args_is_help=True,
    add_completion=False,
)


def _exit_on_sigterm() -> None:
    """SIGTERM ends the process like Ctrl+C does, through ``sys.exit``: ``finally`` blocks and
    exit hooks run (pgserver's stops the embedded PostgreSQL). uvicorn catches SIGTERM for its
    graceful shutdown, then restores this handler and raises the signal again."""
    import signal
    import sys

    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))


def _freeze_startup_heap() -> None:
    """Take every object alive after start-up (the imported modules, the app, the settings)
    out of the cyclic garbage collector's sight (:func:`gc.freeze`). Start-up leaves a few
    hundred thousand long-lived objects; each full collection walked all of them while a
    request or a sync waited. Measured on ``postroom web`` under 50 webhook senders: the p99
    acknowledgement went from 208 to 55-69 ms and the CPU per notification fell by a tenth
    (docs/performance.md). Garbage made before is collected first; nothing made later is
    affected. Only the long-running commands do this (not the tests' in-process apps)."""
    import gc

    gc.collect()
    gc.freeze()


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

    settings = _settings_or_exit(load_settings)
    _exit_on_sigterm()
    typer.echo(f"Postroom on {settings.public_base_url} (listening on {host}:{port})")
    _warn_when_mail_is_printed(settings)
    application = create_app(settings, run_worker=True)
    _freeze_startup_heap()
    uvicorn.run(application, host=host, port=port, log_level="info")


def _warn_when_mail_is_printed(settings: Any) -> None:
    from postroom.mail import console_warning

    warning = console_warning(settings)
    if warning:
        typer.echo(warning, err=True)


@app.command()
def web(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8000, help="Port to listen on."),
) -> None:
    """Run only the web application and webhooks (workers run elsewhere: postroom worker)."""
    import uvicorn

    from postroom.settings import load_settings
    from postroom.web.app import create_app

    settings = _settings_or_exit(load_settings)
    _exit_on_sigterm()
    _warn_when_mail_is_printed(settings)
    application = create_app(settings, run_worker=False)
    _freeze_startup_heap()
    uvicorn.run(application, host=host, port=port, log_level="info")


@app.command()
def worker(
    concurrency: int = typer.Option(4, help="Jobs run at the same time."),
    metrics_port: int = typer.Option(
        0, help="Serve this worker's Prometheus counters on this port (0: off)."
    ),
    metrics_host: str = typer.Option("127.0.0.1", help="Address for --metrics-port."),
) -> None:
    """Run only a job worker (sync, subscriptions, reconcile) on the shared DATABASE_URL.
    SIGTERM finishes the running jobs (up to 20 s) before exiting; the whole shutdown is
    bounded (:data:`WORKER_SHUTDOWN_SECONDS`)."""
    import signal
    import sys

    # First, before the slow imports: until the job loop runs there is nothing to finish, and
    # SIGTERM simply ends the process (cleanly, through sys.exit).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))

    import asyncio
    import contextlib

    from postroom.crypto import SecretBox, load_or_create_key
    from postroom.db import migrate, open_database
    from postroom.settings import load_settings
    from postroom.sync.queue import make_runtime
    from postroom.sync.runtime import install
    from postroom.sync.worker import run_worker
    from postroom.web import logs

    settings = _settings_or_exit(load_settings)
    logs.install()
    database = open_database(settings)
    migrate(database.engine)
    key = settings.token_key.get_secret_value() if settings.token_key else None
    box = SecretBox(load_or_create_key(key, settings.data_dir / "token.key"))
    runtime = make_runtime(settings, database, box)
    install(runtime)
    if metrics_port:
        from postroom.metrics import serve_process_metrics

        token = settings.metrics_token.get_secret_value() if settings.metrics_token else None
        serve_process_metrics(metrics_host, metrics_port, token=token)

    async def run() -> None:
        async with runtime.queue.open_async(), runtime.shared_graph_http():
            job_loop = asyncio.create_task(
                run_worker(  # again after the database dropped it (postroom.sync.worker)
                    runtime.queue,
                    concurrency=concurrency,
                    shutdown_graceful_timeout=WORKER_GRACE_SECONDS,
                    install_signal_handlers=False,
                    name="postroom-worker",
                )
            )
            loop = asyncio.get_running_loop()

            def stop() -> None:
                # Cancelling the job loop lets running jobs finish (up to the grace) first;
                # the deadline ends the process should anything after that not return.
                _shutdown_deadline(database)
                job_loop.cancel()

            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, stop)
            with contextlib.suppress(asyncio.CancelledError):
                await job_loop

    typer.echo(f"Postroom worker on {database.url.split('@')[-1]}")
    _freeze_startup_heap()
    try:
        asyncio.run(run())
    finally:
        database.dispose()


WORKER_GRACE_SECONDS = 20  # running jobs may finish this long after SIGTERM
WORKER_SHUTDOWN_SECONDS = 30  # then the process ends, whatever still waits
_deadline_armed = False


def _shutdown_deadline(database: Any) -> None:
    """After SIGTERM, end the process at the latest :data:`WORKER_SHUTDOWN_SECONDS` later: a
    job past its grace, a connection that does not answer or a pool that keeps reconnecting
    must not keep an orchestrator waiting. Nothing is lost by it: a job is only a hint, its
    ledger rows resume, and the reconcile gives a stopped worker's jobs back
    (postroom.sync.stalled)."""
    global _deadline_armed
    if _deadline_armed:
        return
    _deadline_armed = True
    import logging
    import os
    import threading

    def expire() -> None:
        logging.getLogger("postroom.worker").error(
            "shutdown did not finish within %d s; exiting now", WORKER_SHUTDOWN_SECONDS
        )
        try:
            database.dispose()  # (an embedded PostgreSQL this process started is stopped)
        finally:
            os._exit(1)

    timer = threading.Timer(WORKER_SHUTDOWN_SECONDS, expire)
    timer.daemon = True
    timer.start()


backfill_app = typer.Typer(help="Historical mail: progress of backfills.", no_args_is_help=True)
app.add_typer(backfill_app, name="backfill")


@backfill_app.command("status")
def backfill_status() -> None:
    """Done/total, rate and ETA of every backfill, per mailbox and folder."""
    from sqlalchemy import select

    from postroom.db import open_database
    from postroom.integrations.models import Integration, Mailbox
    from postroom.settings import load_settings
    from postroom.sync.backfill import backfill_progress
    from postroom.sync.models import FolderSync

    settings = _settings_or_exit(load_settings)
    database = open_database(settings)
    with database.session() as db:
        rows = db.execute(
            select(FolderSync, Mailbox.address, Integration.name)
            .join(Mailbox, Mailbox.id == FolderSync.mailbox_id)
            .join(Integration, Integration.id == FolderSync.integration_id)
            .where(FolderSync.backfill_since.is_not(None))
            .order_by(Integration.name, Mailbox.address)
        ).all()
        if not rows:
            typer.echo("No backfills.")
        for fs, address, name in rows:
            progress = backfill_progress(fs)
            if progress is None:
                continue
            total = "?" if progress.total is None else str(progress.total)
            state = "done" if progress.finished else "running"
            rate = f"{progress.rate_per_minute:.0f}/min" if progress.rate_per_minute else "-"
            eta = f"{progress.eta_seconds / 60:.0f} min" if progress.eta_seconds else "-"
            typer.echo(
                f"{name} | {address} | {fs.folder_key} | {progress.done}/{total} | {state} | "
                f"rate {rate} | eta {eta}"
            )
    database.dispose()


@app.command("create-user")
def create_user(
    email: str = typer.Option(..., help="The person's email address (their sign-in)."),
    name: str = typer.Option(..., help="The person's name."),
    workspace: str = typer.Option(..., help="The name of their new workspace (they own it)."),
) -> None:
    """Create an account and its workspace without the emailed link, for an operator who
    vouches for the address. The password is asked for (twice), never taken as an option."""
    from postroom.accounts import service
    from postroom.db import migrate, open_database
    from postroom.settings import load_settings

    settings = _settings_or_exit(load_settings)
    password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    database = open_database(settings)
    try:
        migrate(database.engine)
        with database.session() as db:
            user, space = service.sign_up(
                db=db, email=email, name=name, password=password, workspace_name=workspace
            )
            typer.echo(f"Created {user.email}, owner of the workspace {space.name!r}.")
    except service.AccountError as exc:
        typer.echo(f"Not created: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        database.dispose()


def _settings_or_exit(loader: Any) -> Any:
    """Settings from the environment, or exit 2 with what is wrong: also when the classifier
    recipe they choose needs a model that is not installed (rather than failing every sync)."""
    from postroom.classify import ClassifierConfig
    from postroom.classify.embed import EmbedderUnavailable, check_installed

    try:
        settings = loader()
        config = ClassifierConfig.recipe(
            settings.classifier_embedder, open_set=settings.classifier_open_set
        )
        for name in (config.fast_embedder, config.slow_embedder):
            if name is not None:
                check_installed(name)
    except (ValueError, EmbedderUnavailable) as exc:
        typer.echo(f"Configuration error: {exc}", err=True)
        raise typer.Exit(2) from exc
    return settings


@app.command()
def demo(
    port: int = typer.Option(8000, help="Port for Postroom."),
    sim_port: int = typer.Option(8443, help="Port for the Microsoft 365 emulator (HTTPS)."),
    data_dir: Path = typer.Option(Path(".postroom-demo"), help="Where the demo keeps its data."),
    mail_every: float = typer.Option(
        45.0, help="Seconds between new demo emails (0 turns the generator off)."
    ),
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

    _exit_on_sigterm()
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
    from postroom.demo.mail import DemoMailGenerator

    users = [
        u.user_principal_name
        for t in state.store.tenants.values()
        for u in t.users.values()
        if not u.is_admin
    ]
    generator = None
    if mail_every > 0 and users:
        generator = DemoMailGenerator(
            base_url=sim.base_url, ca_file=sim.ca_file, mailboxes=users, interval=mail_every
        ).start()
    typer.echo(banner(state, sim.ca_file).replace("Press Ctrl+C to stop.", ""))
    typer.echo(
        f"Postroom is starting on {public}\n"
        f"  1. Open {public}/signup and create your Postroom account. The demo sends no\n"
        '     email: the confirmation link is printed here ("Open this link to finish\n'
        '     signing up: ..."); open it to finish. Invitations appear here the same way.\n'
        "  2. Integrations -> Connect Integration -> Outlook, and sign in at the emulator with\n"
        "     one of the users above (organization-wide: the administrator).\n"
        f"  3. Watch what Postroom does to the mail in the viewer: {sim.base_url}/viewer\n"
        + (f"     A new demo email arrives every {mail_every:.0f} s.\n" if generator else "")
        + "Press Ctrl+C to stop."
    )
    try:
        uvicorn.run(
            create_app(settings, run_worker=True),
            host="127.0.0.1",
            port=port,
            log_level="warning",
        )
    finally:
        if generator is not None:
            generator.stop()
        sim.stop()


@app.callback()
def main() -> None:
    """Postroom: label, file and forward Microsoft 365 mail, never delete it."""
