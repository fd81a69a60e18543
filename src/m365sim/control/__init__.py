"""The control API under ``/_emulator/`` (not Microsoft's): build and inspect the emulated
organisation from tests, scenarios and the CLI.

Modules:
  common.py     JSON in/out, the ``{"error": ...}`` body, typed field readers, lookups
  directory.py  tenants, users, shared mailboxes + FullAccess, groups, apps, consents,
                application access policies
  mail.py       deliver (RFC 822 or JSON), bulk delivery, folders, master categories
  audit.py      request counters, request log, throttled counts, outbound mail, deletions
  system.py     reset, state summary, scenarios, save / load / snapshot
  guard.py      who may call it (and the viewer): optional bearer token, cross-site refusals

Other modules add their own control routes (identity: clock and security events;
notifications: faults, config, subscriptions). The reference is docs/m365sim/control-api.md.
"""

from __future__ import annotations

from starlette.routing import BaseRoute

from m365sim.state import EmulatorState


def build_routes(state: EmulatorState) -> list[BaseRoute]:
    # imported here: m365sim.scenario uses the builders in this package, and system.py uses it
    from m365sim.control import audit, directory, mail, system

    routes: list[BaseRoute] = []
    for module in (directory, mail, audit, system):
        routes += module.build_routes(state)
    return routes
