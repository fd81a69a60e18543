"""Token failures become statuses with their reason — from m365sim's security events through
MSAL to the integration page — and never a retry loop. Plus the pure mapping itself."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from m365sim.identity import events
from m365sim.state import EmulatorState
from postroom.integrations.statuses import from_admin_consent_redirect, from_identity_error
from tests.helpers import Org
from tests.postroom.conftest import Postroom
from tests.postroom.test_connect import _integration, connect_personal, finish_wizard
from tests.postroom.webtools import post_form, sign_up

EVENTS: list[tuple[str, Callable[[EmulatorState, Org, Postroom], None], str, str]] = [
    (
        "revoke sessions",
        lambda s, o, p: events.revoke_sign_in_sessions(s, o.alice),
        "needs_reconnect",
        "sessions_revoked",
    ),
    (
        "MFA now required",
        lambda s, o, p: events.set_mfa(s, o.alice, required=True),
        "needs_reconnect",
        "mfa_required",
    ),
    (
        "consent revoked",
        lambda s, o, p: events.revoke_consent(s, o.tenant, p.app_registration.client_id, o.alice),
        "needs_reconnect",
        "consent_revoked",
    ),
    (
        "user disabled",
        lambda s, o, p: events.set_account_enabled(s, o.alice, False),
        "needs_reconnect",
        "user_disabled",
    ),
    ("inactivity", lambda s, o, p: s.clock.advance(91 * 86400), "needs_reconnect", "inactive"),
]


@pytest.mark.parametrize(("name", "event", "status", "reason"), EVENTS, ids=[e[0] for e in EVENTS])
def test_security_event_becomes_a_status_with_reason(
    web: httpx.Client,
    postroom: Postroom,
    sim: EmulatorState,
    name: str,
    event: Callable[[EmulatorState, Org, Postroom], None],
    status: str,
    reason: str,
) -> None:
    org = postroom.org(sim)
    sign_up(web)
    base = connect_personal(web, postroom, org).removesuffix("/setup")
    finish_wizard(web, base)
    token_requests_before = _token_requests(sim)
    event(sim, org, postroom)
    post_form(web, base, f"{base}/check")
    item = _integration(postroom)
    assert (item.status, item.status_reason) == (status, reason)
    assert f'data-status="{status}"' in web.get(base).text
    # One refresh per check, no loop: checking again costs exactly one more token request.
    after_first = _token_requests(sim)
    assert 1 <= after_first - token_requests_before <= 2
    post_form(web, base, f"{base}/check")
    assert _token_requests(sim) - after_first == 1
    assert _integration(postroom).status == status


def _token_requests(sim: EmulatorState) -> int:
    return sum(1 for r in sim.request_log if r.endpoint.endswith("/oauth2/v2.0/token"))


def test_a_users_own_password_change_does_not_disconnect(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org = postroom.org(sim)
    sign_up(web)
    base = connect_personal(web, postroom, org).removesuffix("/setup")
    finish_wizard(web, base)
    events.user_changed_password(sim, org.alice, new_password="alice-changed")
    post_form(web, base, f"{base}/check")
    assert _integration(postroom).status == "connected"


@pytest.mark.parametrize(
    ("error", "organization", "reason"),
    [
        ({"error": "invalid_grant", "error_codes": [50173]}, False, "sessions_revoked"),
        (
            {"error": "invalid_grant", "error_description": "AADSTS700082: expired"},
            False,
            "inactive",
        ),
        ({"error": "invalid_grant", "suberror": "basic_action"}, False, "mfa_required"),
        (
            {"error": "invalid_grant", "error_codes": [65001], "suberror": "consent_required"},
            False,
            "consent_revoked",
        ),
        ({"error": "invalid_grant", "error_codes": [65001]}, True, "consent_missing"),
        ({"error": "invalid_grant", "error_codes": [90094]}, False, "admin_consent_required"),
        ({"error": "invalid_grant", "error_codes": [50057]}, False, "user_disabled"),
        ({"error": "invalid_client", "error_codes": [7000222]}, True, "client_credentials_invalid"),
        ({"error": "unauthorized_client", "error_codes": [7000229]}, True, "consent_missing"),
        (
            {"error": "interaction_required", "suberror": "consent_required"},
            True,
            "consent_missing",
        ),
        ({"error": "something_new"}, False, "unknown"),
        (
            {"error": "access_denied", "error_description": "AADSTS65004: x"},
            False,
            "consent_declined",
        ),
        ({"error": "access_denied"}, False, "consent_declined"),
    ],
)
def test_identity_error_mapping(error: dict[str, object], organization: bool, reason: str) -> None:
    assert from_identity_error(error, organization=organization).code == reason


def test_admin_consent_redirect_mapping() -> None:
    assert from_admin_consent_redirect({"admin_consent": "True", "tenant": "t"}) is None
    refused = from_admin_consent_redirect(
        {"error": "access_denied", "error_description": "AADSTS65004: declined"}
    )
    assert refused is not None and refused.code == "consent_refused"
    legacy = from_admin_consent_redirect({"error": "permission_denied"})
    assert legacy is not None and legacy.status == "admin_consent_missing"
