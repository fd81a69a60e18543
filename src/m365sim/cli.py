"""``m365sim``: run the emulator, check scenario files, find the CA bundle.

``m365sim serve`` starts the emulator in the foreground (HTTPS, uvicorn) with a scenario
(``demo`` by default, ``blank``, or a file) or with a saved state file, and prints what a
developer needs to point MSAL and the Graph SDK at it: the base URL, the authority URL per
tenant (``{base}/{tenant id}``), the Graph base URL, the CA bundle, the viewer, the accounts
with their passwords and the app registrations with their secrets. Ctrl+C (or SIGTERM) stops
it; with ``--save-on-exit`` the state is written to ``--state-file`` first.

The control API and the viewer take an optional bearer token (``--control-token``, better
``M365SIM_CONTROL_TOKEN`` or ``M365SIM_CONTROL_TOKEN_FILE``); without one the emulator only
listens on loopback (:mod:`m365sim.control.guard`).

``--port 0`` picks a free port; ``--port-file`` then tells other processes (benchmarks,
scripts) which one, written once the server accepts connections.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Annotated

import typer

from m365sim import persist
from m365sim.control.common import ControlError
from m365sim.control.guard import TOKEN_ENV, listen_problem
from m365sim.persist import StateFileError
from m365sim.roles import role_name
from m365sim.scenario import apply_scenario, builtin_names, read_scenario, validate
from m365sim.server import EmulatorServer
from m365sim.state import EmulatorState, new_state
from m365sim.tls import ensure_tls

app = typer.Typer(
    help="m365sim: a local Microsoft 365 (Entra ID + Graph mail) for tests and demos.",
    no_args_is_help=True,
    add_completion=False,
)
scenario_app = typer.Typer(help="Scenario files.", no_args_is_help=True)
app.add_typer(scenario_app, name="scenario")


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=1)


def banner(state: EmulatorState, ca_file: Path) -> str:
    """What to configure, as plain text."""
    base = state.base_url
    store = state.store
    lines = [
        "m365sim is running.",
        "",
        f"  Base URL        {base}",
        f"  Graph           {base}/v1.0",
        f"  Viewer          {base}/viewer",
        f"  Control API     {base}/_emulator/state",
        "                  ("
        + (
            f"Authorization: Bearer ${TOKEN_ENV}; viewer sign-in at {base}/viewer/signin)"
            if state.control_token
            else "no control token: loopback only)"
        ),
        f"  CA bundle       {ca_file}",
        f"                  (export REQUESTS_CA_BUNDLE={ca_file} SSL_CERT_FILE={ca_file})",
    ]
    with store.lock:
        for tenant in store.tenants.values():
            lines += [
                "",
                f"Tenant {tenant.display_name} ({tenant.domain})",
                f"  Tenant id       {tenant.id}",
                f"  MSAL authority  {base}/{tenant.id}   (instance_discovery=False)",
            ]
            for user in tenant.users.values():
                if user.is_shared_mailbox:
                    lines.append(f"  Shared mailbox  {user.user_principal_name}")
                    continue
                held = ", ".join(sorted(role_name(r) for r in user.directory_roles))
                admin = f"  [{held}]" if held else ""
                lines.append(
                    f"  User            {user.user_principal_name}  {user.password}{admin}"
                )
        for registration in store.apps.values():
            lines += [
                "",
                f"App {registration.display_name}",
                f"  Client id       {registration.client_id}",
            ]
            for secret in registration.secrets:
                lines.append(f"  Client secret   {secret.value}")
            for uri in registration.redirect_uris:
                lines.append(f"  Redirect URI    {uri}")
    lines += ["", "Press Ctrl+C to stop."]
    return "\n".join(lines)


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _write_port_file(server: EmulatorServer, path: Path) -> None:
    def wait_and_write() -> None:
        deadline = time.monotonic() + 60
        while not server.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        if server.server.started:
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(str(server.port))
            os.replace(tmp, path)

    threading.Thread(target=wait_and_write, name="m365sim-port-file", daemon=True).start()


@app.command()
def serve(
    scenario: Annotated[
        str, typer.Option(help="A built-in scenario (demo, blank) or a scenario file.")
    ] = "demo",
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0 picks a free one; see --port-file).")] = 8443,
    data_dir: Annotated[
        Path, typer.Option(help="Where the CA, server certificate and signing key live.")
    ] = Path(".m365sim"),
    state_file: Annotated[
        Path | None,
        typer.Option(help="Load this saved state at start (instead of the scenario) if it exists."),
    ] = None,
    save_on_exit: Annotated[
        bool,
        typer.Option(help="Save the state to --state-file (default DATA_DIR/state.json) on exit."),
    ] = False,
    port_file: Annotated[
        Path | None,
        typer.Option(help="Write the port number here once the server accepts connections."),
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "warning",
    quiet: Annotated[bool, typer.Option(help="Do not print the banner.")] = False,
    control_token: Annotated[
        str,
        typer.Option(
            envvar=TOKEN_ENV,
            show_default=False,
            help="Bearer token for the control API and the viewer (prefer the environment "
            "variable). Required when --host is not a loopback address.",
        ),
    ] = "",
    control_token_file: Annotated[
        Path | None,
        typer.Option(
            envvar=f"{TOKEN_ENV}_FILE", help="Read the control token from this file instead."
        ),
    ] = None,
) -> None:
    """Run the emulator in the foreground."""
    if control_token_file is not None:
        try:
            control_token = control_token_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            _fail(f"cannot read the control token file {control_token_file}: {exc}")
    problem = listen_problem(host, control_token)
    if problem is not None:
        _fail(problem)
    data_dir.mkdir(parents=True, exist_ok=True)
    state = new_state(data_dir=data_dir, control_token=control_token)
    if state_file is not None and state_file.exists():
        try:
            persist.load(state.store, state_file)
        except StateFileError as exc:
            _fail(str(exc))
    else:
        try:
            data, base_dir = read_scenario(scenario)
            apply_scenario(state, data, base_dir=base_dir)
        except ControlError as exc:
            _fail(f"scenario {scenario}: {exc.message}")
    try:
        server = EmulatorServer(state, host=host, port=port, tls_dir=data_dir, log_level=log_level)
    except OSError as exc:
        _fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
        return
    if port_file is not None:
        _write_port_file(server, port_file)
    if not quiet:
        typer.echo(banner(state, server.ca_file))
    # uvicorn stops gracefully on SIGINT/SIGTERM, then re-raises the signal to the handler that
    # was installed before it; make that an orderly exit so --save-on-exit still runs.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        if save_on_exit:
            target = state_file or data_dir / "state.json"
            size = persist.save(state.store, target)
            typer.echo(f"State saved to {target} ({size} bytes).", err=True)


@scenario_app.command("validate")
def scenario_validate(
    path: str = typer.Argument(..., help="Scenario file or built-in name."),
) -> None:
    """Check a scenario file without starting the emulator."""
    try:
        data, base_dir = read_scenario(path)
        result = validate(data, base_dir=base_dir)
    except ControlError as exc:
        _fail(f"{path}: {exc.message}")
        return
    typer.echo(
        f"{path}: OK - {len(result.tenants)} tenant(s), {len(result.users)} user(s), "
        f"{len(result.apps)} app(s), {result.messages} message(s)"
    )


@scenario_app.command("list")
def scenario_list() -> None:
    """The built-in scenarios."""
    for name in builtin_names():
        typer.echo(name)


@app.command("ca-path")
def ca_path(
    data_dir: Annotated[Path, typer.Option(help="The emulator's data directory.")] = Path(
        ".m365sim"
    ),
) -> None:
    """Print the path of the local CA certificate (created if missing)."""
    typer.echo(str(ensure_tls(data_dir).ca_cert.resolve()))


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
