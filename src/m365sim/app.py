"""The ASGI application: identity platform, Graph, control API and viewer on one origin.

``/v1.0/...`` goes straight to the Graph dispatcher (no framework on the hot path); everything
else is a Starlette application, behind :class:`~m365sim.control.guard.AccessGuard` (the
control token and cross-site refusals for ``/_emulator`` and ``/viewer``). The notification
dispatcher runs as a background task for the application's lifetime.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import BaseRoute, Route

from m365sim import control, viewer
from m365sim.control.guard import AccessGuard
from m365sim.graph import delta as graph_delta
from m365sim.graph import routes as graph_routes
from m365sim.graph.http import graph_asgi
from m365sim.identity import routes as identity_routes
from m365sim.notifications import routes as notification_routes
from m365sim.notifications.delivery import Notifier
from m365sim.state import EmulatorState


class EmulatorApp:
    """ASGI callable dispatching by path prefix."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state
        self.guard = AccessGuard(state)
        graph_routes.load()
        notifier = Notifier(state)
        state.extensions["notifier"] = notifier

        @contextlib.asynccontextmanager
        async def lifespan(_: Starlette) -> AsyncIterator[None]:
            await notifier.start()
            try:
                yield
            finally:
                await notifier.stop()

        async def health(_: Request) -> PlainTextResponse:
            return PlainTextResponse("ok")

        async def not_found(request: Request, exc: Exception) -> JSONResponse:
            return JSONResponse({"error": "not_found", "path": request.url.path}, status_code=404)

        routes: list[BaseRoute] = [Route("/_emulator/health", health)]
        routes += identity_routes.build_routes(state)
        routes += notification_routes.build_routes(state)
        routes += graph_delta.build_control_routes(state)
        routes += control.build_routes(state)
        routes += viewer.build_routes(state)
        self.web = Starlette(routes=routes, lifespan=lifespan, exception_handlers={404: not_found})

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            if scope["path"] == "/v1.0" or scope["path"].startswith("/v1.0/"):
                await graph_asgi(self.state, scope, receive, send)
                return
            refusal = self.guard.refusal(scope)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.web(scope, receive, send)


def create_app(state: EmulatorState) -> EmulatorApp:
    return EmulatorApp(state)
