"""Admin consent: ``/{tenant}/v2.0/adminconsent`` and the legacy ``/{tenant}/adminconsent``.

Both validate the client and redirect URI like ``/authorize`` (error pages, never a redirect to
an unregistered URI), sign the administrator in with the same pages, and end in the
admin-consent screen of :mod:`m365sim.identity.consent` (graph.md 1.7):

* v2: ``client_id``, ``scope`` (required; ``https://graph.microsoft.com/.default`` consents
  the registration's delegated **and** application permissions, explicit scopes consent those
  delegated permissions), ``redirect_uri``, ``state``. ``/common`` and ``/consumers`` are
  refused (AADSTS90130) as the v2 documentation says; use ``/organizations`` or the tenant.
* legacy: ``client_id``, ``redirect_uri``, ``state``; always the registration's permissions.

The ``tenant`` of the success redirect is the administrator's tenant (for ``/organizations``
that is how the application learns it). Applications must not trust it without acquiring a
client-credentials token for that tenant, as Microsoft advises.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from m365sim.identity import signin
from m365sim.identity.authorize import (
    Invalid,
    check_scopes,
    new_flow,
    read_request,
    validate_client,
)
from m365sim.identity.permissions import parse_scopes
from m365sim.identity.protocol import flow_failure
from m365sim.identity.web import error_page
from m365sim.state import EmulatorState


async def admin_consent_v2(state: EmulatorState, request: Request) -> Response:
    try:
        ex, params, authority = await read_request(state, request)
        app, redirect_uri = validate_client(ex, authority, params)
    except Invalid as invalid:
        return invalid.response
    if authority.segment in ("common", "consumers"):
        failure = flow_failure(
            "common_not_supported",
            state.clock.now(),
            client_id=app.client_id,
            app_name=app.display_name,
        )
        return error_page(ex, failure, app=app)
    flow = new_flow(
        ex,
        kind="adminconsent",
        authority=authority,
        app=app,
        redirect_uri=redirect_uri,
        params=params,
        scopes=parse_scopes(params.get("scope", "")),
    )
    scope_error = check_scopes(ex, flow, app, authority)
    if scope_error is not None:
        return scope_error
    with state.store.lock:
        ex.ids.prune(ex.now)
        ex.ids.flows[flow.id] = flow
    return signin.begin(ex, flow)


async def admin_consent_legacy(state: EmulatorState, request: Request) -> Response:
    try:
        ex, params, authority = await read_request(state, request)
        app, redirect_uri = validate_client(ex, authority, params)
    except Invalid as invalid:
        return invalid.response
    flow = new_flow(
        ex,
        kind="adminconsent_legacy",
        authority=authority,
        app=app,
        redirect_uri=redirect_uri,
        params=params,
        scopes=parse_scopes(""),
    )
    with state.store.lock:
        ex.ids.prune(ex.now)
        ex.ids.flows[flow.id] = flow
    return signin.begin(ex, flow)
