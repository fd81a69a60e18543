"""The sign-in pages: who is the user, and are they allowed in right now?

A flow created by ``/authorize`` or an admin-consent endpoint starts in :func:`begin`:

* ``prompt=none`` never shows a page. Without a live session (for this tenant, and matching
  ``login_hint``) it answers ``login_required`` (AADSTS50058); a session that lacks MFA the
  user now needs answers ``interaction_required`` (AADSTS50076); consent still missing answers
  ``consent_required`` (AADSTS65001) — all as redirects to the application.
* ``prompt=login`` always asks for the password; ``prompt=select_account`` shows the account
  picker (the signed-in account or "Use another account"); without ``prompt`` a live session is
  reused silently (single sign-on) unless ``login_hint`` names someone else.

The steps, each a POST of a page's form (hidden ``flow`` + ``csrf``, browser cookie checked):

1. ``/{authority}/login`` — username + password. Unknown username: "This username may be
   incorrect" (AADSTS50034); wrong password: "Your account or password is incorrect" (50126),
   retry allowed; an account of another tenant at a tenant-specific authority: error page
   AADSTS50020; a disabled account: error page AADSTS50057. Success opens an SSO session.
2. ``/{authority}/password`` — shown when the password has expired: current + new password.
   Changing it is the "user changed own password" event (public-client refresh tokens revoked).
3. ``/{authority}/mfa`` — shown when ``user.mfa_required`` and this sign-in has not done MFA;
   the code is ``user.mfa_code``. A wrong code may be retried.
4. consent / admin consent (:mod:`m365sim.identity.consent`).
"""

from __future__ import annotations

import secrets

from starlette.requests import Request
from starlette.responses import Response

from m365sim.identity import consent, events
from m365sim.identity.protocol import (
    AuthFlow,
    FormError,
    SsoSession,
    flow_failure,
    new_id,
    parse_form,
)
from m365sim.identity.web import Exchange, error_page, exchange, flow_context, render
from m365sim.state import EmulatorState
from m365sim.store import App, Tenant, User

MIN_PASSWORD_LENGTH = 8

MSG_NO_USERNAME = "Enter a valid email address, phone number, or Skype name."
MSG_UNKNOWN_USER = (
    "This username may be incorrect. Make sure you typed it correctly. Otherwise, contact your "
    "admin."
)
MSG_BAD_PASSWORD = (
    "Your account or password is incorrect. If you don't remember your password, reset it now."
)
MSG_NO_PASSWORD = "Please enter your password."
MSG_BAD_CODE = "You didn't enter the expected verification code. Please try again."


def _app(ex: Exchange, flow: AuthFlow) -> App | None:
    return ex.state.store.apps.get(flow.client_id)


def begin(ex: Exchange, flow: AuthFlow) -> Response:
    """Start an interactive flow: reuse the browser's session or ask who the user is."""
    session = ex.session()
    if session is not None and flow.tenant_id and session.tenant_id != flow.tenant_id:
        session = None
    hint_mismatch = False
    if session is not None and flow.login_hint:
        found = ex.state.store.user_by_id(session.user_id)
        upn = found[1].user_principal_name.lower() if found else ""
        hint_mismatch = flow.login_hint.strip().lower() != upn
    if flow.prompt == "none":
        if session is None or hint_mismatch:
            return consent.error_to_app(ex, flow, "login_required")
        _attach(flow, session)
        return advance(ex, flow, interactive=False)
    if flow.prompt == "login" or session is None or hint_mismatch:
        return signin_page(ex, flow)
    if flow.prompt == "select_account":
        return _select_account_page(ex, flow, session)
    _attach(flow, session)
    return advance(ex, flow)


def _attach(flow: AuthFlow, session: SsoSession) -> None:
    flow.user_id = session.user_id
    flow.session_id = session.id
    flow.mfa_done = session.mfa_done


def signin_page(
    ex: Exchange, flow: AuthFlow, *, error: str = "", username: str | None = None
) -> Response:
    return render(
        ex,
        "signin.html",
        **flow_context(flow, _app(ex, flow)),
        username=flow.login_hint if username is None else username,
        error=error,
    )


def _select_account_page(ex: Exchange, flow: AuthFlow, session: SsoSession) -> Response:
    found = ex.state.store.user_by_id(session.user_id)
    if found is None:
        return signin_page(ex, flow)
    user = found[1]
    return render(
        ex,
        "select_account.html",
        **flow_context(flow, _app(ex, flow)),
        account_name=user.display_name,
        account_upn=user.user_principal_name,
    )


def advance(ex: Exchange, flow: AuthFlow, *, interactive: bool = True) -> Response:
    """The user is known: run the remaining checks, then consent / code."""
    assert flow.user_id is not None
    found = ex.state.store.user_by_id(flow.user_id)
    if found is None:
        return signin_page(ex, flow, error=MSG_UNKNOWN_USER)
    tenant, user = found
    now = ex.state.clock.now()
    if not user.account_enabled:
        if not interactive:
            return consent.error_to_app(ex, flow, "login_required")
        return error_page(ex, flow_failure("user_disabled", now), app=_app(ex, flow))
    if user.password_expired:
        if not interactive:
            return consent.error_to_app(ex, flow, "password_expired_interaction")
        return render(
            ex, "password.html", **flow_context(flow, _app(ex, flow)), username=user.mail, error=""
        )
    if user.mfa_required and not flow.mfa_done:
        if not interactive:
            return consent.error_to_app(ex, flow, "mfa_interaction_required")
        return render(
            ex, "mfa.html", **flow_context(flow, _app(ex, flow)), username=user.mail, error=""
        )
    return consent.finish(ex, flow, tenant, user, interactive)


# ------------------------------------------------------------------------- form handlers
async def _posted(state: EmulatorState, request: Request) -> tuple[Exchange, AuthFlow | Response]:
    ex = exchange(state, request)
    now = state.clock.now()
    try:
        form = parse_form(request.headers.get("content-type"), await request.body())
    except FormError as err:
        return ex, error_page(ex, flow_failure(err.kind, now, parameter=err.parameter))
    found = ex.flow(form)
    if isinstance(found, str):
        return ex, error_page(ex, flow_failure(found, now))
    request.state.form = form
    return ex, found


async def login_post(state: EmulatorState, request: Request) -> Response:
    ex, flow = await _posted(state, request)
    if isinstance(flow, Response):
        return flow
    form: dict[str, str] = request.state.form
    username = form.get("login", "").strip()
    password = form.get("passwd", "")
    if not username:
        return signin_page(ex, flow, error=MSG_NO_USERNAME, username="")
    located = _locate(ex, flow, username)
    if isinstance(located, Response):
        return located
    if located is None:
        return signin_page(ex, flow, error=MSG_UNKNOWN_USER, username=username)
    tenant, user = located
    if not password:
        return signin_page(ex, flow, error=MSG_NO_PASSWORD, username=username)
    if not user.password or not secrets.compare_digest(user.password.encode(), password.encode()):
        return signin_page(ex, flow, error=MSG_BAD_PASSWORD, username=username)
    if not user.account_enabled:
        return error_page(
            ex, flow_failure("user_disabled", ex.state.clock.now()), app=_app(ex, flow)
        )
    session = SsoSession(
        id=new_id(),
        browser=ex.browser,
        tenant_id=tenant.id,
        user_id=user.id,
        auth_time=ex.now,
        mfa_done=False,
    )
    with ex.state.store.lock:
        ex.ids.sessions[session.id] = session
    ex.set_sso = session.id
    _attach(flow, session)
    return advance(ex, flow)


def _locate(ex: Exchange, flow: AuthFlow, username: str) -> tuple[Tenant, User] | Response | None:
    store = ex.state.store
    if flow.tenant_id is not None:
        tenant = store.tenants.get(flow.tenant_id)
        user = tenant.user(username) if tenant else None
        if tenant is not None and user is not None:
            return tenant, user
        elsewhere = store.find_user(username)
        if tenant is not None and elsewhere is not None:
            app = _app(ex, flow)
            failure = flow_failure(
                "user_not_in_tenant",
                ex.state.clock.now(),
                username=username,
                home_tenant=elsewhere[0].id,
                tenant=tenant.id,
                client_id=flow.client_id,
                app_name=app.display_name if app else "",
            )
            return error_page(ex, failure, app=app)
        return None
    if flow.authority == "consumers":
        return None  # the emulator has no personal Microsoft accounts
    return store.find_user(username)


async def password_post(state: EmulatorState, request: Request) -> Response:
    ex, flow = await _posted(state, request)
    if isinstance(flow, Response):
        return flow
    form: dict[str, str] = request.state.form
    found = state.store.user_by_id(flow.user_id or "")
    if found is None:
        return signin_page(ex, flow)
    _, user = found
    current = form.get("currentpasswd", "")
    new = form.get("newpasswd", "")
    confirm = form.get("confirmnewpasswd", "")
    error = ""
    if not secrets.compare_digest(user.password.encode(), current.encode()):
        error = "Your current password is incorrect."
    elif len(new) < MIN_PASSWORD_LENGTH:
        error = f"Your password must have at least {MIN_PASSWORD_LENGTH} characters."
    elif new == current:
        error = "You can't reuse the password you already have."
    elif new != confirm:
        error = "The passwords don't match."
    if error:
        ctx = flow_context(flow, _app(ex, flow))
        return render(ex, "password.html", **ctx, username=user.mail, error=error)
    events.user_changed_password(state, user, new_password=new, keep_session=flow.session_id)
    return advance(ex, flow)


async def mfa_post(state: EmulatorState, request: Request) -> Response:
    ex, flow = await _posted(state, request)
    if isinstance(flow, Response):
        return flow
    form: dict[str, str] = request.state.form
    found = state.store.user_by_id(flow.user_id or "")
    if found is None:
        return signin_page(ex, flow)
    _, user = found
    code = form.get("otc", "").strip()
    if not code or not secrets.compare_digest(code.encode(), user.mfa_code.encode()):
        ctx = flow_context(flow, _app(ex, flow))
        return render(ex, "mfa.html", **ctx, username=user.mail, error=MSG_BAD_CODE)
    flow.mfa_done = True
    with state.store.lock:
        session = ex.ids.sessions.get(flow.session_id or "")
        if session is not None and session.user_id == user.id:
            session.mfa_done = True
    return advance(ex, flow)


async def select_account_post(state: EmulatorState, request: Request) -> Response:
    ex, flow = await _posted(state, request)
    if isinstance(flow, Response):
        return flow
    form: dict[str, str] = request.state.form
    session = ex.session()
    if form.get("choice") == "session" and session is not None:
        if flow.tenant_id is None or session.tenant_id == flow.tenant_id:
            _attach(flow, session)
            return advance(ex, flow)
    return signin_page(ex, flow, username="")


async def consent_post(state: EmulatorState, request: Request) -> Response:
    ex, flow = await _posted(state, request)
    if isinstance(flow, Response):
        return flow
    form: dict[str, str] = request.state.form
    if form.get("action") == "other_account":
        flow.user_id = None
        flow.mfa_done = False
        return signin_page(ex, flow, username="")
    return consent.answer(ex, flow, form)
