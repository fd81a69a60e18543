"""The identity platform's routes, mounted by :mod:`m365sim.app` on the emulator's one origin.

Microsoft's endpoints (the authority is ``{base}/{tenant}``, graph.md 1.1):

* ``/{tenant}/v2.0/.well-known/openid-configuration`` — OIDC discovery (discovery.py)
* ``/{tenant}/discovery/v2.0/keys`` — JWKS (discovery.py)
* ``/common/discovery/instance`` — MSAL instance discovery (discovery.py)
* ``/oidc/userinfo`` — OIDC userinfo, Graph's at Microsoft (discovery.py)
* ``/{tenant}/oauth2/v2.0/authorize`` — sign-in and consent pages (authorize.py)
* ``/{tenant}/oauth2/v2.0/token`` — codes, refresh tokens, client credentials (token.py)
* ``/{tenant}/oauth2/v2.0/logout`` — end the browser session (authorize.py)
* ``/{tenant}/v2.0/adminconsent`` and legacy ``/{tenant}/adminconsent`` (adminconsent.py)

The pages post to ``/{tenant}/login``, ``/{tenant}/mfa``, ``/{tenant}/password``,
``/{tenant}/select_account`` and ``/{tenant}/consent`` (:mod:`m365sim.identity.signin`).
The emulator's own endpoints (security events, clock) are in
:mod:`m365sim.identity.emulator_routes`.

Every handler turns any unexpected exception into Entra's error page or JSON body with status
500 and a trace id, never a traceback.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from m365sim.identity import adminconsent, authorize, discovery, emulator_routes, signin, token
from m365sim.state import EmulatorState

log = logging.getLogger("m365sim.identity")

StateHandler = Callable[[EmulatorState, Request], Awaitable[Response]]


def _bind(
    state: EmulatorState, fn: StateHandler, *, page: bool
) -> Callable[..., Awaitable[Response]]:
    async def run(request: Request) -> Response:
        try:
            return await fn(state, request)
        except Exception:
            trace_id = str(uuid.uuid4())
            log.exception("identity endpoint failed (trace %s): %s", trace_id, request.url.path)
            if page:
                return HTMLResponse(
                    "<!doctype html><title>Sign in</title><p>Sorry, but we're having trouble "
                    f"signing you in.</p><p>AADSTS50000: There was an error issuing a token or "
                    f"an issue with our sign-in service.</p><p>Trace ID: {trace_id}</p>",
                    status_code=500,
                )
            return JSONResponse(
                {
                    "error": "server_error",
                    "error_description": "AADSTS50000: There was an error issuing a token or an "
                    f"issue with our sign-in service.\r\nTrace ID: {trace_id}",
                    "error_codes": [50000],
                    "trace_id": trace_id,
                },
                status_code=500,
            )

    return run


def build_routes(state: EmulatorState) -> list[BaseRoute]:
    def page(fn: StateHandler) -> Callable[..., Awaitable[Response]]:
        return _bind(state, fn, page=True)

    def api(fn: StateHandler) -> Callable[..., Awaitable[Response]]:
        return _bind(state, fn, page=False)

    both = ["GET", "POST"]
    return [
        Route("/common/discovery/instance", api(discovery.instance_discovery), methods=["GET"]),
        Route("/oidc/userinfo", api(discovery.userinfo), methods=both),
        Route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            api(discovery.openid_configuration),
            methods=["GET"],
        ),
        Route("/{tenant}/discovery/v2.0/keys", api(discovery.keys), methods=["GET"]),
        Route("/{tenant}/oauth2/v2.0/authorize", page(authorize.authorize), methods=both),
        Route("/{tenant}/oauth2/v2.0/token", api(token.token), methods=["GET", "POST"]),
        Route("/{tenant}/oauth2/v2.0/logout", page(authorize.logout), methods=both),
        Route("/{tenant}/v2.0/adminconsent", page(adminconsent.admin_consent_v2), methods=both),
        Route("/{tenant}/adminconsent", page(adminconsent.admin_consent_legacy), methods=both),
        Route("/{tenant}/login", page(signin.login_post), methods=["POST"]),
        Route("/{tenant}/mfa", page(signin.mfa_post), methods=["POST"]),
        Route("/{tenant}/password", page(signin.password_post), methods=["POST"]),
        Route("/{tenant}/select_account", page(signin.select_account_post), methods=["POST"]),
        Route("/{tenant}/consent", page(signin.consent_post), methods=["POST"]),
        *emulator_routes.build_routes(state),
    ]
