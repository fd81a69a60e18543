"""Fixtures for change-notification tests: webhook receivers and fast delivery settings."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from m365sim.notifications.delivery import Notifier, notifier_for
from m365sim.state import EmulatorState
from tests.notifications.receiver import Hook, Receiver


@pytest.fixture(scope="session")
def receiver() -> Iterator[Receiver]:
    made = Receiver().start()
    yield made
    made.stop()


@pytest.fixture(scope="session")
def tls_receiver(sim_dir: Path, sim_server: object) -> Iterator[Receiver]:
    """An https receiver using the emulator's localhost certificate (signed by its CA)."""
    made = Receiver(certfile=sim_dir / "server.pem", keyfile=sim_dir / "server-key.pem").start()
    yield made
    made.stop()


@pytest.fixture
def notifier(sim: EmulatorState) -> Iterator[Notifier]:
    """Fast, compressed delivery settings; notification faults cleared afterwards."""
    config = sim.config
    config.delivery_coalesce_ms = 30
    config.delivery_retry_delays = [0.1, 0.2]
    config.validation_timeout = 2.0
    config.delivery_timeout = 1.0
    config.lifecycle_tick_seconds = 0.05
    made = notifier_for(sim)
    made.faults = type(made.faults)()
    yield made
    made.faults = type(made.faults)()


@pytest.fixture
def hook(receiver: Receiver, notifier: Notifier) -> Callable[..., Hook]:
    return receiver.hook
