"""A private emulator for destructive control-API tests (reset, load, scenario with reset).

The session-wide emulator (tests/conftest.py) is shared by every test module, so nothing here
resets it; tests that empty or replace the whole state run against this one instead.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from m365sim.server import EmulatorServer
from m365sim.state import new_state


@pytest.fixture(scope="module")
def private_server(sim_dir: Path) -> Iterator[EmulatorServer]:
    state = new_state(data_dir=sim_dir / "private")
    server = EmulatorServer(state, tls_dir=sim_dir).start_in_thread()
    yield server
    server.stop()


@pytest.fixture
def private(private_server: EmulatorServer) -> Iterator[httpx.Client]:
    context = ssl.create_default_context(cafile=str(private_server.ca_file))
    with httpx.Client(
        base_url=private_server.base_url, verify=context, timeout=30, trust_env=False
    ) as client:
        client.post("/_emulator/reset").raise_for_status()
        yield client
