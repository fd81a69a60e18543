"""``postroom serve`` and ``postroom demo`` stop their embedded PostgreSQL on SIGTERM and SIGINT.

Each test starts the real console script as a subprocess on a free port with a fresh data
directory, waits for ``/healthz``, sends the signal and checks that no PostgreSQL process of
that data directory is left (uvicorn re-raises the signal after its graceful shutdown, which
used to kill the process before pgserver's exit hook could stop the server).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

EXE = str(Path(sys.executable).parent / "postroom")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # As root, pgserver runs PostgreSQL as its own user: the directory must be reachable.
    path = Path(tempfile.mkdtemp(prefix="postroom-sigterm-"))
    path.chmod(0o755)
    yield path
    for proc in _postgres_of(path):  # never leave a server behind, even when the test fails
        proc.kill()
    shutil.rmtree(path, ignore_errors=True)


def _postgres_of(data_dir: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or [])
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if "postgres" in (proc.info["name"] or "") and str(data_dir) in cmdline:
            found.append(proc)
    return found


def _wait_healthy(proc: subprocess.Popen[bytes], url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"postroom exited early with {proc.returncode}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError("postroom did not answer /healthz in time")


def _run_and_stop(args: list[str], data_dir: Path, port: int, signum: int) -> None:
    env = {**os.environ, "POSTROOM_DATA_DIR": str(data_dir)}
    env.pop("DATABASE_URL", None)
    env.pop("POSTROOM_DATABASE_URL", None)
    proc = subprocess.Popen(
        [EXE, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait_healthy(proc, f"http://127.0.0.1:{port}")
        assert _postgres_of(data_dir), "the embedded PostgreSQL is not running in the data dir"
        proc.send_signal(signum)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    deadline = time.monotonic() + 10
    while _postgres_of(data_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _postgres_of(data_dir) == [], "the embedded PostgreSQL outlived postroom"
    assert not (data_dir / "pg" / "postmaster.pid").exists()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_stops_the_embedded_postgres_on_a_signal(data_dir: Path, signum: int) -> None:
    port = _free_port()
    _run_and_stop(["serve", "--port", str(port)], data_dir, port, signum)


def test_demo_stops_the_embedded_postgres_on_sigterm(data_dir: Path) -> None:
    port, sim_port = _free_port(), _free_port()
    args = ["demo", "--port", str(port), "--sim-port", str(sim_port)]
    args += ["--data-dir", str(data_dir), "--mail-every", "0"]
    _run_and_stop(args, data_dir, port, signal.SIGTERM)
