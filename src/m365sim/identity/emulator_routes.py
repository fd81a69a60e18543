"""Control endpoints for security events and the clock (the emulator's API, not Microsoft's).

User events — ``POST /_emulator/tenants/{tid}/users/{uid}/<event>`` (``tid``: GUID or domain;
``uid``: object id or UPN); each answers 200 with the user's security state
(:func:`_user_json`). Bodies are JSON objects; an empty body is ``{}``.

=================================  =============================================================
``resetPassword``                  ``{"password": "...", "via": "entraAdminCenter"|"azurePortal"}``
                                   (default ``entraAdminCenter``: every refresh token revoked)
``changePassword``                 ``{"password": "..."}`` — the user changed it themselves
``expirePassword``                 the password expired (50055; sign-in asks for a new one)
``revokeSignInSessions``           every refresh token and session revoked (50173)
``mfa``                            ``{"required": true, "code": "246810"}`` (50076)
``disable`` / ``enable``           account disabled (50057) / enabled again
``revokeConsent``                  ``{"clientId": "..."}`` — the user's consent to that app (65001)
``errorShapes/{kind}`` (PUT)       ``{"suberror": "bad_token"|null, "error": "..."|null}`` — what
                                   the token endpoint writes for ``kind`` for this user
=================================  =============================================================

App events — ``POST /_emulator/security/apps/{client_id}/expireSecret`` ``{"value": "..."}``
(one secret, or all without ``value``: 7000222) and ``.../rotateSecret``
``{"keepOld": false, "lifetimeDays": 730}`` → ``{"secretText": "...", "endDateTime": ...}``
(old secrets deleted unless ``keepOld``: they answer 7000215).

Clock — ``GET /_emulator/clock`` → ``{"now": "...Z", "offsetSeconds": 0.0}``;
``POST /_emulator/clock/advance`` ``{"seconds": 7776000}`` moves the emulator's time forward
(token, code and refresh-token inactivity expiry, subscription lifetimes).

Errors: ``{"error": "<message>"}`` with 400 (bad input) or 404 (unknown tenant, user or app).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from m365sim import jsonbody
from m365sim.clock import iso
from m365sim.identity import events
from m365sim.state import EmulatorState
from m365sim.store import App, Tenant, User

MAX_BODY = 64 * 1024
USER_EVENTS = (
    "resetPassword",
    "changePassword",
    "expirePassword",
    "revokeSignInSessions",
    "mfa",
    "disable",
    "enable",
    "revokeConsent",
)


class _Problem(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise _Problem(413, f"the request body exceeds {MAX_BODY} bytes")
    if not raw.strip():
        return {}
    try:
        data = jsonbody.load(raw)
    except jsonbody.JsonBodyError as exc:
        raise _Problem(400, f"the body is not valid JSON: {exc.message}") from exc
    if not isinstance(data, dict):
        raise _Problem(400, "the body must be a JSON object")
    return data


def _string(body: dict[str, Any], name: str, *, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise _Problem(400, f"{name} is required")
        return None
    if not isinstance(value, str) or (required and not value):
        raise _Problem(400, f"{name} must be a non-empty string")
    return value


def _bool(body: dict[str, Any], name: str, default: bool) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise _Problem(400, f"{name} must be true or false")
    return value


def _time(epoch: float | None) -> str | None:
    if not epoch:
        return None
    return iso(datetime.fromtimestamp(epoch, tz=UTC))


def _user_json(state: EmulatorState, user: User) -> dict[str, Any]:
    live = revoked = 0
    for record in state.store.refresh_tokens.values():
        if record.user_id != user.id:
            continue
        if record.revoked is not None or record.issued < user.tokens_valid_from:
            revoked += 1
        else:
            live += 1
    return {
        "id": user.id,
        "userPrincipalName": user.user_principal_name,
        "accountEnabled": user.account_enabled,
        "isAdmin": user.is_admin,
        "directoryRoles": sorted(user.directory_roles),
        "mfaRequired": user.mfa_required,
        "passwordExpired": user.password_expired,
        "tokensValidFrom": _time(user.tokens_valid_from),
        "refreshTokens": {"live": live, "revoked": revoked},
        "errorShapes": {
            kind: {
                "suberror": user.suberror_overrides.get(kind, "default"),
                "error": user.error_overrides.get(kind),
            }
            for kind in sorted(set(user.suberror_overrides) | set(user.error_overrides))
        },
    }


def build_routes(state: EmulatorState) -> list[BaseRoute]:
    store = state.store

    def tenant_user(request: Request) -> tuple[Tenant, User]:
        tenant = store.tenant(request.path_params["tid"])
        if tenant is None:
            raise _Problem(404, f"no tenant {request.path_params['tid']!r}")
        user = tenant.user(request.path_params["uid"])
        if user is None:
            raise _Problem(404, f"no user {request.path_params['uid']!r} in {tenant.domain}")
        return tenant, user

    def app_of(request: Request) -> App:
        app = store.apps.get(request.path_params["cid"])
        if app is None:
            raise _Problem(404, f"no app {request.path_params['cid']!r}")
        return app

    Handler = Callable[[Request], Awaitable[Response]]

    def guarded(fn: Handler) -> Handler:
        async def run(request: Request) -> Response:
            try:
                return await fn(request)
            except _Problem as problem:
                return JSONResponse({"error": problem.message}, status_code=problem.status)

        return run

    async def user_event(request: Request) -> Response:
        tenant, user = tenant_user(request)
        body = await _json_body(request)
        event = request.url.path.rstrip("/").rsplit("/", 1)[-1]
        if event == "resetPassword":
            password = _string(body, "password", required=True)
            via = body.get("via", "entraAdminCenter")
            portals = {"entraAdminCenter": "entra_admin_center", "azurePortal": "azure_portal"}
            if via not in portals:
                raise _Problem(400, "via must be entraAdminCenter or azurePortal")
            assert password is not None
            events.admin_reset_password(
                state,
                user,
                new_password=password,
                via="entra_admin_center" if via == "entraAdminCenter" else "azure_portal",
            )
        elif event == "changePassword":
            password = _string(body, "password", required=True)
            assert password is not None
            events.user_changed_password(state, user, new_password=password)
        elif event == "expirePassword":
            events.expire_password(state, user)
        elif event == "revokeSignInSessions":
            events.revoke_sign_in_sessions(state, user)
        elif event == "mfa":
            events.set_mfa(
                state, user, required=_bool(body, "required", True), code=_string(body, "code")
            )
        elif event == "disable":
            events.set_account_enabled(state, user, False)
        elif event == "enable":
            events.set_account_enabled(state, user, True)
        elif event == "revokeConsent":
            client_id = _string(body, "clientId", required=True)
            assert client_id is not None
            events.revoke_consent(state, tenant, client_id, user)
        else:
            raise _Problem(404, f"unknown event {event!r}")
        return JSONResponse(_user_json(state, user))

    async def error_shape(request: Request) -> Response:
        _, user = tenant_user(request)
        body = await _json_body(request)
        kind = request.path_params["kind"]
        if kind not in events.USER_ERROR_KINDS:
            raise _Problem(404, f"unknown kind {kind!r}; one of {list(events.USER_ERROR_KINDS)}")
        shape: dict[str, Any] = {}
        for name in ("suberror", "error"):
            if name in body:
                value = body[name]
                if value is not None and (not isinstance(value, str) or not value):
                    raise _Problem(400, f"{name} must be a non-empty string or null")
                shape[name] = value
        events.set_error_shape(state, user, kind, **shape)
        return JSONResponse(_user_json(state, user))

    async def expire_secret(request: Request) -> Response:
        app = app_of(request)
        body = await _json_body(request)
        count = events.expire_client_secret(state, app, _string(body, "value"))
        if count == 0:
            raise _Problem(404, "no such secret")
        return JSONResponse({"expired": count})

    async def rotate_secret(request: Request) -> Response:
        app = app_of(request)
        body = await _json_body(request)
        lifetime = body.get("lifetimeDays")
        if lifetime is not None and (
            isinstance(lifetime, bool) or not isinstance(lifetime, int | float) or lifetime <= 0
        ):
            raise _Problem(400, "lifetimeDays must be a positive number")
        secret = events.add_client_secret(
            state, app, lifetime_days=lifetime, keep_old=_bool(body, "keepOld", False)
        )
        return JSONResponse(
            {
                "secretText": secret.value,
                "hint": secret.hint,
                "endDateTime": _time(secret.expires),
            },
            status_code=201,
        )

    async def clock(request: Request) -> Response:
        return JSONResponse({"now": iso(state.clock.now()), "offsetSeconds": state.clock.offset})

    async def clock_advance(request: Request) -> Response:
        body = await _json_body(request)
        seconds = body.get("seconds")
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            raise _Problem(400, "seconds must be a number >= 0")
        state.clock.advance(float(seconds))
        return JSONResponse({"now": iso(state.clock.now()), "offsetSeconds": state.clock.offset})

    users = "/_emulator/tenants/{tid}/users/{uid}"
    return [
        Route("/_emulator/clock", guarded(clock), methods=["GET"]),
        Route("/_emulator/clock/advance", guarded(clock_advance), methods=["POST"]),
        Route(f"{users}/errorShapes/{{kind}}", guarded(error_shape), methods=["PUT"]),
        *[
            Route(f"{users}/{event}", guarded(user_event), methods=["POST"])
            for event in USER_EVENTS
        ],
        Route(
            "/_emulator/security/apps/{cid}/expireSecret", guarded(expire_secret), methods=["POST"]
        ),
        Route(
            "/_emulator/security/apps/{cid}/rotateSecret", guarded(rotate_secret), methods=["POST"]
        ),
    ]
