"""``/{tenant}/oauth2/v2.0/authorize`` and ``/logout``: where a person's browser is sent.

Validation follows Entra's order, and its rule that nothing is ever sent to a URI the app did
not register (graph.md 1.2):

1. errors shown as a page (status 400, never a redirect): unknown tenant (AADSTS90002),
   missing ``client_id`` (900144), unknown application (700016), disabled application
   (7000112), a single-tenant application at ``/common`` or ``/organizations`` (50194),
   ``redirect_uri`` not registered (50011; exact match, except the port of
   ``http://localhost``), no redirect URI registered at all (500113). A missing
   ``redirect_uri`` falls back to the first registered one.
2. errors redirected to the application: unsupported ``response_mode`` (70007),
   ``response_type`` other than ``code`` (700054, ``unsupported_response_type``; implicit and
   hybrid grants are not enabled on emulated apps), missing ``scope`` (900144), scopes of a
   resource the emulator does not host (500011), a Graph permission that does not exist
   (650053), a bad ``code_challenge_method`` or ``prompt`` (90100), a ``code_challenge`` of the
   wrong size (501491: 43 characters for S256, 43-128 for plain).

PKCE: ``code_challenge_method`` defaults to ``plain`` when a challenge comes without one. GET
and POST (form body) are both accepted, as Entra accepts both.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from m365sim.identity import consent, signin
from m365sim.identity.permissions import Scopes, parse_scopes
from m365sim.identity.protocol import (
    AuthFlow,
    Authority,
    FlowKind,
    FormError,
    flow_failure,
    new_id,
    redirect_uri_registered,
    request_params,
    resolve_authority,
    with_params,
)
from m365sim.identity.web import Exchange, error_page, exchange, render
from m365sim.state import EmulatorState
from m365sim.store import App

RESPONSE_MODES = ("query", "fragment", "form_post")
PROMPTS = ("login", "none", "consent", "select_account")


class Invalid(Exception):
    """A request error already turned into a page."""

    def __init__(self, response: Response) -> None:
        super().__init__("invalid request")
        self.response = response


async def read_request(
    state: EmulatorState, request: Request
) -> tuple[Exchange, dict[str, str], Authority]:
    ex = exchange(state, request)
    now = state.clock.now()
    try:
        params = await request_params(request)
    except FormError as err:
        raise Invalid(error_page(ex, flow_failure(err.kind, now, parameter=err.parameter))) from err
    segment = request.path_params["tenant"]
    authority = resolve_authority(state.store, segment)
    if authority is None:
        raise Invalid(error_page(ex, flow_failure("tenant_not_found", now, tenant=segment)))
    return ex, params, authority


def validate_client(ex: Exchange, authority: Authority, params: dict[str, str]) -> tuple[App, str]:
    """The application and redirect URI, or :class:`Invalid` with the error page."""
    now = ex.state.clock.now()
    client_id = params.get("client_id", "").strip()
    if not client_id:
        raise Invalid(error_page(ex, flow_failure("missing_parameter", now, parameter="client_id")))
    store = ex.state.store
    app = store.apps.get(client_id) or store.apps.get(client_id.lower())
    if app is None or (
        app.single_tenant
        and authority.tenant is not None
        and authority.tenant.id != app.home_tenant_id
    ):
        tenant = authority.tenant.id if authority.tenant else authority.segment
        raise Invalid(
            error_page(ex, flow_failure("app_not_found", now, client_id=client_id, tenant=tenant))
        )
    if not app.enabled:
        failure = flow_failure(
            "app_disabled", now, client_id=app.client_id, app_name=app.display_name
        )
        raise Invalid(error_page(ex, failure, app=app))
    if app.single_tenant and authority.special:
        failure = flow_failure(
            "single_tenant_common", now, client_id=app.client_id, app_name=app.display_name
        )
        raise Invalid(error_page(ex, failure, app=app))
    redirect_uri = params.get("redirect_uri", "")
    if not redirect_uri:
        if not app.redirect_uris:
            raise Invalid(error_page(ex, flow_failure("no_reply_address", now), app=app))
        redirect_uri = app.redirect_uris[0]
    elif not redirect_uri_registered(app, redirect_uri):
        failure = flow_failure(
            "redirect_uri_mismatch", now, redirect_uri=redirect_uri, client_id=app.client_id
        )
        raise Invalid(error_page(ex, failure, app=app))
    return app, redirect_uri


def new_flow(
    ex: Exchange,
    *,
    kind: FlowKind,
    authority: Authority,
    app: App,
    redirect_uri: str,
    params: dict[str, str],
    scopes: Scopes,
    response_mode: str = "query",
) -> AuthFlow:
    return AuthFlow(
        id=new_id(),
        csrf=new_id(),
        browser=ex.browser,
        kind=kind,
        authority=authority.segment,
        tenant_id=authority.tenant.id if authority.tenant else None,
        client_id=app.client_id,
        redirect_uri=redirect_uri,
        response_mode=response_mode,
        state=params.get("state"),
        scopes=scopes,
        scope_param=params.get("scope", ""),
        created=ex.now,
        login_hint=params.get("login_hint", ""),
    )


def check_scopes(ex: Exchange, flow: AuthFlow, app: App, authority: Authority) -> Response | None:
    """Redirect-borne scope errors, or None when the scopes are usable."""
    scopes = flow.scopes
    if scopes.empty:
        return consent.error_to_app(ex, flow, "missing_parameter", parameter="scope")
    if scopes.other_resources:
        tenant = authority.tenant.id if authority.tenant else authority.segment
        return consent.error_to_app(
            ex, flow, "resource_not_found", resource=scopes.other_resources[0], tenant=tenant
        )
    if scopes.unknown_graph:
        return consent.error_to_app(
            ex,
            flow,
            "scope_not_on_resource",
            app_name=app.display_name,
            scope=scopes.unknown_graph[0],
        )
    return None


async def authorize(state: EmulatorState, request: Request) -> Response:
    try:
        ex, params, authority = await read_request(state, request)
        app, redirect_uri = validate_client(ex, authority, params)
    except Invalid as invalid:
        return invalid.response
    mode = params.get("response_mode", "").strip().lower() or "query"
    flow = new_flow(
        ex,
        kind="authorize",
        authority=authority,
        app=app,
        redirect_uri=redirect_uri,
        params=params,
        scopes=parse_scopes(params.get("scope", "")),
        response_mode=mode if mode in RESPONSE_MODES else "query",
    )
    if mode not in RESPONSE_MODES:
        return consent.error_to_app(ex, flow, "unsupported_response_mode")
    response_type = params.get("response_type", "").split()
    if not response_type:
        return consent.error_to_app(ex, flow, "missing_parameter", parameter="response_type")
    if sorted(response_type) != ["code"]:
        shown = "token" if "token" in response_type else " ".join(response_type)
        if "id_token" in response_type and "token" not in response_type:
            shown = "id_token"
        return consent.error_to_app(ex, flow, "unsupported_response_type", response_type=shown)
    scope_error = check_scopes(ex, flow, app, authority)
    if scope_error is not None:
        return scope_error
    challenge = params.get("code_challenge", "")
    if challenge:
        method = params.get("code_challenge_method", "").strip() or "plain"
        if method.lower() not in ("s256", "plain"):
            return consent.error_to_app(
                ex, flow, "invalid_parameter", parameter="code_challenge_method"
            )
        flow.code_challenge_method = "S256" if method.lower() == "s256" else "plain"
        size_ok = (
            len(challenge) == 43
            if flow.code_challenge_method == "S256"
            else 43 <= len(challenge) <= 128
        )
        if not size_ok:
            return consent.error_to_app(ex, flow, "code_challenge_size")
        flow.code_challenge = challenge
    prompt = params.get("prompt", "").strip().lower() or None
    if prompt is not None and prompt not in PROMPTS:
        return consent.error_to_app(ex, flow, "invalid_parameter", parameter="prompt")
    flow.prompt = prompt
    flow.nonce = params.get("nonce")
    flow.client_info = params.get("client_info", "") == "1"
    with state.store.lock:
        ex.ids.prune(ex.now)
        ex.ids.flows[flow.id] = flow
    return signin.begin(ex, flow)


async def logout(state: EmulatorState, request: Request) -> Response:
    """End the browser's session (the discovery document's ``end_session_endpoint``).

    Redirects to ``post_logout_redirect_uri`` only when it is registered as a redirect URI of the
    app named by ``client_id`` (or, without ``client_id``, of any app); otherwise shows the
    "You signed out of your account" page.
    """
    ex = exchange(state, request)
    try:
        params = await request_params(request)
    except FormError as err:
        return error_page(ex, flow_failure(err.kind, state.clock.now(), parameter=err.parameter))
    session = ex.session()
    if session is not None:
        with state.store.lock:
            ex.ids.sessions.pop(session.id, None)
    ex.clear_sso = True
    target = params.get("post_logout_redirect_uri", "")
    client_id = params.get("client_id", "")
    if target:
        apps = [a for a in state.store.apps.values() if not client_id or a.client_id == client_id]
        if any(redirect_uri_registered(a, target) for a in apps):
            extra = [("state", params["state"])] if "state" in params else []
            location = with_params(target, extra) if extra else target
            return ex.finish(RedirectResponse(location, status_code=302))
    return render(ex, "signed_out.html")
