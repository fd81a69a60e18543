"""Imports every Graph handler module so their ``@route`` registrations take effect."""

from __future__ import annotations

import importlib

MODULES = (
    "m365sim.graph.users",
    "m365sim.graph.folders",
    "m365sim.graph.messages",
    "m365sim.graph.categories",
    "m365sim.graph.delta",
    "m365sim.graph.folder_delta",
    "m365sim.graph.attachments",
    "m365sim.graph.replies",
    "m365sim.graph.batch",
    "m365sim.notifications.subscriptions",
)


def load() -> None:
    for name in MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
