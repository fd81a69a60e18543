"""Security events: what happens in Entra ID that makes refresh tokens and sessions fail.

Each function changes the directory the way the real event does; the token endpoint then
answers the next refresh as Entra would (graph.md 1.4 revocation matrix, 1.5 catalogue):

* admin resets the password in the Entra admin center (``via="entra_admin_center"``): every
  refresh token revoked (AADSTS50173);
* admin resets it in the Azure portal, or the user changes it (or uses SSPR): public-client
  refresh tokens revoked (50173), confidential-client (web app) tokens stay valid;
* revoke sign-in sessions: every refresh token revoked (50173);
* MFA newly required: refresh tokens obtained without MFA refused (50076);
* consent revoked: refused (65001);
* user disabled: refused (50057); password expired: refused (50055);
* refresh token unused too long: refused (700082);
* client secret expired / deleted: every grant of the app refused (7000222 / 7000215).

(The 700082 case needs no event: advance the emulator clock past
``config.refresh_token_inactivity_days``.) Every event that revokes tokens also ends the user's
browser sign-in sessions, so the next ``/authorize`` asks for the password again. Which
``suberror`` (and ``error``) Entra pairs with each code varies (graph.md 1.5); set them per user
with :func:`set_error_shape`, keyed by the catalogue name (``sessions_revoked``,
``refresh_token_inactive``, ``mfa_required``, ``consent_revoked``, ``user_disabled``,
``password_expired``).
"""

from __future__ import annotations

from typing import Literal

from m365sim import ids
from m365sim.identity.protocol import identity_state
from m365sim.state import EmulatorState
from m365sim.store import App, Secret, Tenant, User

PasswordResetPortal = Literal["entra_admin_center", "azure_portal"]

# catalogue kinds whose error shape a scenario may configure per user
USER_ERROR_KINDS = (
    "sessions_revoked",
    "refresh_token_inactive",
    "mfa_required",
    "consent_revoked",
    "user_disabled",
    "password_expired",
)


def _revoke_public_tokens(state: EmulatorState, user: User, reason: str) -> int:
    count = 0
    for record in state.store.refresh_tokens.values():
        if record.user_id == user.id and not record.confidential and record.revoked is None:
            record.revoked = reason
            count += 1
    return count


def admin_reset_password(
    state: EmulatorState,
    user: User,
    *,
    new_password: str,
    via: PasswordResetPortal = "entra_admin_center",
) -> None:
    """An administrator sets a new password for the user."""
    with state.store.lock:
        user.password = new_password
        user.password_expired = False
        if via == "entra_admin_center":
            user.tokens_valid_from = state.clock.time()
        else:
            _revoke_public_tokens(state, user, "password_reset")
        identity_state(state).end_sessions(user.id)


def user_changed_password(
    state: EmulatorState, user: User, *, new_password: str, keep_session: str | None = None
) -> None:
    """The user changed their own password (or used self-service password reset).

    Refresh tokens of confidential clients stay valid; public clients' are revoked. Other
    browser sessions end; ``keep_session`` (the session the change was made in) stays.
    """
    with state.store.lock:
        user.password = new_password
        user.password_expired = False
        _revoke_public_tokens(state, user, "password_changed")
        identity_state(state).end_sessions(user.id, keep=keep_session)


def revoke_sign_in_sessions(state: EmulatorState, user: User) -> None:
    """``revokeSignInSessions`` (Graph) / "Revoke sessions" (admin center): every refresh
    token and session issued so far stops working."""
    with state.store.lock:
        user.tokens_valid_from = state.clock.time()
        identity_state(state).end_sessions(user.id)


def set_mfa(state: EmulatorState, user: User, *, required: bool, code: str | None = None) -> None:
    """Require (or stop requiring) multi-factor authentication for the user. Refresh tokens
    obtained without MFA then fail with AADSTS50076 until the user signs in again with MFA."""
    with state.store.lock:
        if required and not user.mfa_required:
            user.mfa_required_from = state.clock.time()
        user.mfa_required = required
        if code is not None:
            user.mfa_code = code


def set_account_enabled(state: EmulatorState, user: User, enabled: bool) -> None:
    """Disable (AADSTS50057 on refresh and sign-in) or re-enable the account."""
    with state.store.lock:
        user.account_enabled = enabled
        if not enabled:
            identity_state(state).end_sessions(user.id)


def expire_password(state: EmulatorState, user: User) -> None:
    """The password expired: refresh answers AADSTS50055; sign-in asks for a new password."""
    with state.store.lock:
        user.password_expired = True
        identity_state(state).end_sessions(user.id)


def revoke_consent(
    state: EmulatorState, tenant: Tenant, client_id: str, user: User | None = None
) -> None:
    """Remove the user's consent to the app, or (no user) every grant of the app in the tenant
    (deleting the enterprise application). Refresh then answers AADSTS65001."""
    state.store.revoke_consent(tenant, client_id, user.id if user else None)


def expire_client_secret(state: EmulatorState, app: App, value: str | None = None) -> int:
    """Let the app's secret (or every secret) expire now; returns how many changed."""
    now = state.clock.time()
    count = 0
    with state.store.lock:
        for secret in app.secrets:
            if value is None or secret.value == value:
                secret.expires = now
                count += 1
    return count


def add_client_secret(
    state: EmulatorState, app: App, *, lifetime_days: float | None = None, keep_old: bool = True
) -> Secret:
    """A new client secret (certificates & secrets → New client secret); with
    ``keep_old=False`` the old ones are deleted, so they answer AADSTS7000215."""
    value = ids.opaque(30).replace("-", "~")
    expires = None if lifetime_days is None else state.clock.time() + lifetime_days * 86400
    secret = Secret(value=value, expires=expires, hint=value[:3])
    with state.store.lock:
        if not keep_old:
            app.secrets.clear()
        app.secrets.append(secret)
    return secret


def set_error_shape(
    state: EmulatorState,
    user: User,
    kind: str,
    *,
    suberror: str | None | Literal["default"] = "default",
    error: str | None | Literal["default"] = "default",
) -> None:
    """Configure what the token endpoint writes for ``kind`` for this user: ``suberror``
    (``None`` = no ``suberror`` field) and ``error`` (``None`` = the catalogue's)."""
    if kind not in USER_ERROR_KINDS:
        raise ValueError(f"unknown kind {kind!r}; one of {', '.join(USER_ERROR_KINDS)}")
    with state.store.lock:
        if suberror != "default":
            user.suberror_overrides[kind] = suberror
        if error == "default":
            return
        if error is None:
            user.error_overrides.pop(kind, None)
        else:
            user.error_overrides[kind] = error
