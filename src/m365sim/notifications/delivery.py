"""Notification delivery (filled in by the notifications module)."""

from __future__ import annotations

from m365sim.state import EmulatorState


class Notifier:
    def __init__(self, state: EmulatorState) -> None:
        self.state = state

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None
