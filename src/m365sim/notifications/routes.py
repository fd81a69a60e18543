"""Control routes for notifications, faults and configuration (filled in later)."""

from __future__ import annotations

from starlette.routing import BaseRoute

from m365sim.state import EmulatorState


def build_routes(state: EmulatorState) -> list[BaseRoute]:
    return []
