"""From Microsoft's answers to an integration status, in plain words. Pure functions.

Token failures are a status, never a retry loop: :func:`from_identity_error` reads the
identity platform's ``error`` / ``suberror`` / AADSTS code (as MSAL returns them) and says which
status the integration gets and why. Microsoft asks clients to branch on ``error`` and
``suberror``; AADSTS numbers refine the reason shown to people (graph.md 1.5).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

NEEDS_RECONNECT = "needs_reconnect"
ADMIN_CONSENT_MISSING = "admin_consent_missing"
ACCESS_DENIED = "access_denied"
PAUSED = "paused"  # a person paused it: no email is processed until Resume
DISCONNECTING = "disconnecting"  # a person disconnected it; the disconnect job is under way
DISCONNECTED = "disconnected"  # subscriptions dropped, tokens forgotten: Reconnect or Delete

LABELS = {
    "setup": "Setup not finished",
    "connected": "Connected",
    "syncing": "Syncing",
    "backfilling": "Backfilling",
    NEEDS_RECONNECT: "Needs reconnect",
    ADMIN_CONSENT_MISSING: "Admin consent missing",
    ACCESS_DENIED: "Access denied",
    PAUSED: "Paused",
    DISCONNECTING: "Disconnecting",
    DISCONNECTED: "Disconnected",
}


@dataclass(frozen=True)
class Reason:
    code: str
    status: str
    words: str  # what happened, for the integration page
    fix: str  # what to do
    prompt_consent: bool = False  # a reconnect must show the consent screen again


REASONS: dict[str, Reason] = {
    r.code: r
    for r in (
        Reason(
            "sessions_revoked",
            NEEDS_RECONNECT,
            "Microsoft revoked the sign-in: the password was reset by an administrator or all "
            "sessions were signed out.",
            "Reconnect and sign in again with the same account.",
        ),
        Reason(
            "inactive",
            NEEDS_RECONNECT,
            "The saved sign-in expired because it was not used for a long time.",
            "Reconnect and sign in again.",
        ),
        Reason(
            "mfa_required",
            NEEDS_RECONNECT,
            "Your organization now requires multi-factor authentication (MFA) for this account.",
            "Reconnect and complete the MFA prompt. An organization-wide connection is not "
            "affected by MFA changes.",
        ),
        Reason(
            "consent_revoked",
            NEEDS_RECONNECT,
            "The permission for Postroom was withdrawn for this account.",
            "Reconnect and approve the permissions again.",
            prompt_consent=True,
        ),
        Reason(
            "user_disabled",
            NEEDS_RECONNECT,
            "The Microsoft 365 account is disabled.",
            "Ask your administrator to enable the account, or connect another account.",
        ),
        Reason(
            "password_expired",
            NEEDS_RECONNECT,
            "The account's password has expired.",
            "Change the password in Microsoft 365, then reconnect.",
        ),
        Reason(
            "signin_frequency",
            NEEDS_RECONNECT,
            "A Conditional Access policy requires signing in again.",
            "Reconnect and sign in again.",
        ),
        Reason(
            "blocked_by_policy",
            NEEDS_RECONNECT,
            "A Conditional Access policy blocks this sign-in.",
            "Ask your administrator to allow Postroom, then reconnect.",
        ),
        Reason(
            "admin_consent_required",
            ADMIN_CONSENT_MISSING,
            "Your organization requires an administrator to approve Postroom's permissions.",
            "Ask a Microsoft 365 administrator to connect an organization-wide account, or to "
            "grant consent, then retry.",
            prompt_consent=True,
        ),
        Reason(
            "consent_refused",
            ADMIN_CONSENT_MISSING,
            "Admin consent was not granted.",
            "Ask a Microsoft 365 administrator to connect again and accept the permissions.",
        ),
        Reason(
            "consent_missing",
            ADMIN_CONSENT_MISSING,
            "Postroom has no application access in this tenant (consent was never granted or "
            "was removed).",
            "An administrator must connect the organization-wide account again and accept.",
        ),
        Reason(
            "client_credentials_invalid",
            NEEDS_RECONNECT,
            "Postroom's own credentials for Microsoft were refused (client secret wrong or "
            "expired).",
            "The operator must update Postroom's Microsoft client secret; no action in Microsoft "
            "365 is needed.",
        ),
        Reason(
            "policy_denied",
            ACCESS_DENIED,
            "Access denied by your organization's policy: an Exchange application access policy "
            "or RBAC for Applications excludes this mailbox.",
            "Add the mailbox to the group the policy allows, or choose another mailbox.",
        ),
        Reason(
            "mailbox_access_denied",
            ACCESS_DENIED,
            "The account has no access to this mailbox, or the permission for it is missing.",
            "Give the account Full Access to the mailbox in Exchange, then retry.",
        ),
        Reason(
            "consent_declined",
            NEEDS_RECONNECT,
            "You declined the permissions on Microsoft's consent page, so Postroom was not "
            "connected.",
            "Connect again and select Accept on Microsoft's page. If your organization does not "
            "let you accept, ask a Microsoft 365 administrator to connect an organization-wide "
            "account instead.",
            prompt_consent=True,
        ),
        Reason(
            "unknown",
            NEEDS_RECONNECT,
            "Microsoft refused the saved sign-in.",
            "Reconnect. If it keeps happening, see the troubleshooting page.",
        ),
    )
}

_AADSTS = re.compile(r"AADSTS(\d+)")

# AADSTS code -> reason code (graph.md 1.5)
_BY_CODE = {
    50173: "sessions_revoked",
    50133: "sessions_revoked",
    70008: "inactive",
    700082: "inactive",
    50076: "mfa_required",
    50079: "mfa_required",
    50072: "mfa_required",
    65001: "consent_revoked",
    65004: "consent_declined",
    90094: "admin_consent_required",
    90008: "admin_consent_required",
    50057: "user_disabled",
    50055: "password_expired",
    70043: "signin_frequency",
    53003: "blocked_by_policy",
    53000: "blocked_by_policy",
    53001: "blocked_by_policy",
    7000215: "client_credentials_invalid",
    7000222: "client_credentials_invalid",
    700016: "consent_missing",
    7000229: "consent_missing",
}


# ---------------------------------------------------------------------- mailboxes
ACTIVE = ("connected", "syncing", "backfilling")
COLORS_REFUSED = "colors_refused"  # a Mailbox.notes code: its master category list is refused


def colors_refusal_lasts(*, integration_kind: str, mailbox_kind: str) -> bool:
    """True when Microsoft never lets this connection manage the mailbox's category colours:
    delegated colour management (MailboxSettings.ReadWrite) has no ``.Shared`` variant, so a
    personal connection is refused another person's (a shared) mailbox's master list."""
    return integration_kind == "personal" and mailbox_kind == "shared"


def mailbox_note_words(code: str, *, integration_kind: str, mailbox_kind: str) -> str | None:
    """A :attr:`Mailbox.notes` code in people's words (None for a code this version does not
    know)."""
    if code != COLORS_REFUSED:
        return None
    if colors_refusal_lasts(integration_kind=integration_kind, mailbox_kind=mailbox_kind):
        return (
            "Colours can't be managed in this mailbox: Microsoft does not let a personal "
            "connection manage a shared mailbox's category colours. Add them in Outlook, or use "
            "an organization-wide connection."
        )
    return (
        "Colours can't be managed in this mailbox: Microsoft refused access to its category "
        "list. Emails are still labelled and filed. Add the colours in Outlook; Postroom tries "
        "again once a day."
    )


def notes_words(
    notes: dict[str, str] | None, *, integration_kind: str, mailbox_kind: str
) -> list[str]:
    """A mailbox's notes (:attr:`Mailbox.notes`), each in people's words."""
    found = (
        mailbox_note_words(code, integration_kind=integration_kind, mailbox_kind=mailbox_kind)
        for code in sorted(notes or {})
    )
    return [words for words in found if words]


def shown_status(status: str, mailbox_statuses: list[str]) -> str:
    """The status a person sees for an integration: its own, unless it is running while one of
    its mailboxes stopped (access denied), which must not hide behind "Connected"."""
    if status in ACTIVE and ACCESS_DENIED in mailbox_statuses:
        return ACCESS_DENIED
    return status


def aadsts_codes(error: dict[str, Any]) -> list[int]:
    codes = [int(c) for c in error.get("error_codes") or [] if isinstance(c, int)]
    description = str(error.get("error_description") or "")
    codes += [int(m) for m in _AADSTS.findall(description)]
    return codes


def from_identity_error(error: dict[str, Any], *, organization: bool = False) -> Reason:
    """The reason for a failed token request (MSAL's result dict or the raw token error)."""
    for code in aadsts_codes(error):
        reason = _BY_CODE.get(code)
        if reason is None:
            continue
        if organization and reason in ("consent_revoked", "admin_consent_required"):
            return REASONS["consent_missing"]
        return REASONS[reason]
    kind = str(error.get("error") or "")
    suberror = str(error.get("suberror") or "")
    if kind == "access_denied" and not organization:
        return REASONS["consent_declined"]  # the person cancelled on Microsoft's page
    if suberror == "consent_required":
        return REASONS["consent_missing" if organization else "consent_revoked"]
    if suberror in ("basic_action", "additional_action"):
        return REASONS["mfa_required"]
    if suberror == "user_password_expired":
        return REASONS["password_expired"]
    if kind == "invalid_client":
        return REASONS["client_credentials_invalid"]
    if kind == "unauthorized_client" and organization:
        return REASONS["consent_missing"]
    return REASONS["unknown"]


def is_transient_identity_error(error: dict[str, Any]) -> bool:
    """Errors worth retrying later instead of asking a person to reconnect."""
    if str(error.get("error")) in ("temporarily_unavailable", "server_error"):
        return True
    return any(code in (90006, 90024, 50033) for code in aadsts_codes(error))


def from_admin_consent_redirect(params: dict[str, str]) -> Reason | None:
    """The reason from the admin-consent redirect, or None when it reports success."""
    if "error" not in params:
        return None
    description = params.get("error_description", "")
    codes = [int(m) for m in _AADSTS.findall(description)]
    if params.get("error") in ("access_denied", "permission_denied") or 65004 in codes:
        base = REASONS["consent_refused"]
    else:
        base = REASONS["consent_missing"]
    return base
