"""The browser side of the identity platform: one request/response exchange, pages, redirects.

:class:`Exchange` wraps one browser request: it knows the emulator state, the browser id (the
``m365sim_browser`` cookie, created on first contact) and the SSO session, and
:meth:`Exchange.finish` writes the cookies a step decided on. Every page and redirect leaves
through here, so cookies and security headers are applied in one place.

Pages are Jinja2 templates under ``templates/identity/`` (autoescaped). Responses to the
application follow the request's ``response_mode`` (graph.md 1.2): ``query`` (302 with the
parameters in the query), ``fragment`` (302, parameters after ``#``) or ``form_post`` (an HTML
page whose form posts the parameters to the redirect URI and submits itself, with a button for
browsers without script, as Entra's page does).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from m365sim.identity.protocol import (
    BROWSER_COOKIE,
    FLOW_LIFETIME,
    SSO_COOKIE,
    AuthFlow,
    FlowFailure,
    IdentityState,
    SsoSession,
    identity_state,
    new_id,
    with_params,
)
from m365sim.state import EmulatorState
from m365sim.store import App

_env = Environment(
    loader=PackageLoader("m365sim", "templates"),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)

_SESSION_COOKIE_SECONDS = 90 * 24 * 3600


@dataclass
class Exchange:
    state: EmulatorState
    ids: IdentityState
    request: Request
    browser: str
    new_browser: bool
    set_sso: str | None = None
    clear_sso: bool = False

    @property
    def now(self) -> float:
        return self.state.clock.time()

    def session(self) -> SsoSession | None:
        """The browser's live single sign-on session, if any."""
        session = self.ids.session_for(
            self.state.store, self.request.cookies.get(SSO_COOKIE), self.now
        )
        if session is not None and session.browser != self.browser:
            return None
        return session

    def flow(self, form: dict[str, str]) -> AuthFlow | str:
        """The flow a posted form continues, or the kind of error to show."""
        flow = self.ids.flows.get(form.get("flow", ""))
        if flow is None or self.now - flow.created > FLOW_LIFETIME:
            return "flow_expired"
        if self.new_browser or not secrets.compare_digest(
            form.get("csrf", "").encode(), flow.csrf.encode()
        ):
            return "invalid_flow_request"
        if not secrets.compare_digest(flow.browser.encode(), self.browser.encode()):
            return "invalid_flow_request"
        return flow

    def finish(self, response: Response) -> Response:
        secure = self.state.base_url.startswith("https:")
        if self.new_browser:
            response.set_cookie(
                BROWSER_COOKIE,
                self.browser,
                max_age=_SESSION_COOKIE_SECONDS,
                httponly=True,
                secure=secure,
                samesite="lax",
            )
        if self.set_sso:
            response.set_cookie(
                SSO_COOKIE,
                self.set_sso,
                httponly=True,
                secure=secure,
                samesite="lax",
            )
        elif self.clear_sso:
            response.delete_cookie(SSO_COOKIE, httponly=True, secure=secure, samesite="lax")
        response.headers["Cache-Control"] = "no-store, no-cache"
        response.headers["Pragma"] = "no-cache"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response


def exchange(state: EmulatorState, request: Request) -> Exchange:
    browser = request.cookies.get(BROWSER_COOKIE, "")
    new = not browser or len(browser) > 128
    if new:
        browser = new_id()
    return Exchange(state, identity_state(state), request, browser, new)


# ------------------------------------------------------------------------- pages
def render(ex: Exchange, template: str, *, status: int = 200, **context: Any) -> Response:
    nonce = secrets.token_urlsafe(12)
    body = _env.get_template(f"identity/{template}").render(script_nonce=nonce, **context)
    response = HTMLResponse(body, status_code=status)
    response.headers["Content-Security-Policy"] = (
        f"default-src 'none'; style-src 'unsafe-inline'; script-src 'nonce-{nonce}'; "
        "img-src 'self' data:; base-uri 'none'; frame-ancestors 'none'"
    )
    return ex.finish(response)


def error_page(
    ex: Exchange, failure: FlowFailure, *, status: int = 400, app: App | None = None
) -> Response:
    """Entra's "Sorry, but we're having trouble signing you in." page."""
    return render(
        ex,
        "error.html",
        status=status,
        code=failure.entry.code,
        message=failure.text,
        trace_id=failure.trace_id,
        correlation_id=failure.correlation_id,
        timestamp=failure.timestamp,
        app_name=app.display_name if app else "",
        client_id=app.client_id if app else "",
    )


def respond_to_app(
    ex: Exchange, redirect_uri: str, mode: str, params: list[tuple[str, str]]
) -> Response:
    """Send the authorization response (or error) back to the application."""
    if mode == "form_post":
        return render(ex, "form_post.html", action=redirect_uri, fields=params)
    location = with_params(redirect_uri, params, fragment=mode == "fragment")
    return ex.finish(RedirectResponse(location, status_code=302))


def flow_context(flow: AuthFlow, app: App | None) -> dict[str, Any]:
    """Hidden fields and headings every step page shows."""
    return {
        "flow_id": flow.id,
        "csrf": flow.csrf,
        "authority": flow.authority,
        "app_name": app.display_name if app else flow.client_id,
        "client_id": flow.client_id,
    }
