"""The authorize endpoint and its pages, driven like a browser: sign-in, MFA, password update,
consent, account picker, prompt handling, response modes, and the error pages that must never
redirect to an unregistered URI."""

from __future__ import annotations

import urllib.parse

import httpx
import pytest

from m365sim.state import EmulatorState
from tests.helpers import REDIRECT_URI, Org, make_org
from tests.identity.browser import Browser
from tests.identity.flows import GRAPH, authorize_url, redeem


def test_sign_in_page_prefills_login_hint_and_retries_wrong_password(
    org: Org, browser: Browser, base_url: str
) -> None:
    hint = org.alice.user_principal_name
    page = browser.open(authorize_url(base_url, org, login_hint=hint))
    assert page.status == 200
    assert page.heading == "Sign in"
    assert page.form.fields["login"] == hint
    assert {"flow", "csrf"} <= set(page.form.fields)
    assert 'autocomplete="current-password"' in page.html
    wrong = browser.submit(page, passwd="not-it")
    assert wrong.status == 200
    assert wrong.alerts == [
        "Your account or password is incorrect. If you don't remember your password, reset it now."
    ]
    assert wrong.form.fields["login"] == hint
    unknown = browser.submit(wrong, login="nobody@contoso.test", passwd="x")
    assert "This username may be incorrect" in unknown.alerts[0]
    done = browser.submit(unknown, login=hint, passwd="alice-pass")
    arrival = Browser.arrival(done)
    assert arrival is not None and arrival.via == "query"
    assert arrival.url.startswith(REDIRECT_URI + "?code=")
    assert arrival.params["state"] == "st-123"
    assert "session_state" in arrival.params


def test_unregistered_redirect_uri_shows_page_and_never_redirects(
    org: Org, browser: Browser, base_url: str
) -> None:
    page = browser.open(authorize_url(base_url, org, redirect_uri="https://evil.test/cb"))
    assert page.status == 400
    assert page.location is None
    assert "AADSTS50011" in page.html and "https://evil.test/cb" in page.html
    assert "Request Id" in page.html
    # even when other parameters are also wrong
    page = browser.open(
        authorize_url(base_url, org, redirect_uri="https://evil.test/cb", response_type="token")
    )
    assert page.status == 400 and page.location is None


def test_unknown_client_and_tenant_pages(org: Org, browser: Browser, base_url: str) -> None:
    page = browser.open(
        authorize_url(base_url, org, client_id="99999999-9999-9999-9999-999999999999")
    )
    assert page.status == 400 and page.location is None
    assert "AADSTS700016" in page.html
    page = browser.open(authorize_url(base_url, org, tenant="unknown.example"))
    assert page.status == 400 and "AADSTS90002" in page.html
    page = browser.open(f"{base_url}/{org.tenant.id}/oauth2/v2.0/authorize")
    assert page.status == 400 and "AADSTS900144" in page.html and "client_id" in page.html


@pytest.mark.parametrize(
    ("params", "error", "code"),
    [
        ({"response_type": "token"}, "unsupported_response_type", 700054),
        ({"response_type": ""}, "invalid_request", 900144),
        ({"scope": ""}, "invalid_request", 900144),
        ({"scope": f"openid {GRAPH}/Mail.Telepathy"}, "invalid_client", 650053),
        ({"scope": "api://other-api/read"}, "invalid_resource", 500011),
        ({"prompt": "sometimes"}, "invalid_request", 90100),
        ({"code_challenge": "short", "code_challenge_method": "S256"}, "invalid_request", 501491),
        ({"code_challenge": "x" * 43, "code_challenge_method": "S512"}, "invalid_request", 90100),
        ({"response_mode": "carrier_pigeon"}, "invalid_request", 70007),
    ],
)
def test_request_errors_redirect_to_the_registered_uri(
    org: Org, browser: Browser, base_url: str, params: dict[str, str], error: str, code: int
) -> None:
    page = browser.open(authorize_url(base_url, org, **params))
    arrival = Browser.arrival(page)
    assert arrival is not None, page.html[:500]
    assert arrival.url.startswith(REDIRECT_URI + "?")
    assert arrival.params["error"] == error
    assert arrival.params["error_description"].startswith(f"AADSTS{code}: ")
    assert "\r\nTrace ID: " in arrival.params["error_description"]
    assert arrival.params["state"] == "st-123"


def test_prompt_none_without_session_is_login_required(
    org: Org, browser: Browser, base_url: str
) -> None:
    arrival = Browser.arrival(browser.open(authorize_url(base_url, org, prompt="none")))
    assert arrival is not None
    assert arrival.params["error"] == "login_required"
    assert arrival.params["error_description"].startswith("AADSTS50058: ")
    assert arrival.params["state"] == "st-123"


def test_single_sign_on_and_prompt_none_with_a_session(
    org: Org, browser: Browser, base_url: str, http: httpx.Client
) -> None:
    browser.sign_in(authorize_url(base_url, org), org.alice.user_principal_name, "alice-pass")
    silent = Browser.arrival(browser.open(authorize_url(base_url, org, prompt="none")))
    assert silent is not None and "code" in silent.params
    assert redeem(http, org, silent.params["code"]).status_code == 200
    # without prompt the session is reused too (no page)
    sso = Browser.arrival(browser.open(authorize_url(base_url, org)))
    assert sso is not None and "code" in sso.params
    # prompt=login asks again; prompt=select_account offers the signed-in account
    assert browser.open(authorize_url(base_url, org, prompt="login")).heading == "Sign in"
    picker = browser.open(authorize_url(base_url, org, prompt="select_account"))
    assert picker.heading == "Pick an account"
    assert org.alice.user_principal_name in picker.html
    chosen = Browser.arrival(browser.submit(picker, button=("choice", "session")))
    assert chosen is not None and "code" in chosen.params
    other = browser.submit(
        browser.open(authorize_url(base_url, org, prompt="select_account")),
        button=("choice", "other"),
    )
    assert other.heading == "Sign in"
    # a login_hint for someone else is not answered from alice's session
    hinted = browser.open(authorize_url(base_url, org, login_hint=org.bob.user_principal_name))
    assert hinted.heading == "Sign in"
    assert hinted.form.fields["login"] == org.bob.user_principal_name
    none_for_bob = Browser.arrival(
        browser.open(
            authorize_url(base_url, org, prompt="none", login_hint=org.bob.user_principal_name)
        )
    )
    assert none_for_bob is not None and none_for_bob.params["error"] == "login_required"


def test_prompt_none_reports_consent_and_mfa_needs(
    sim: EmulatorState, browser: Browser, base_url: str
) -> None:
    fresh = make_org(sim, consent=False)
    browser.sign_in(
        authorize_url(base_url, fresh), fresh.bob.user_principal_name, "bob-pass"
    )  # consents to Mail.ReadWrite
    needs_consent = Browser.arrival(
        browser.open(
            authorize_url(base_url, fresh, prompt="none", scope=f"openid {GRAPH}/Mail.Send")
        )
    )
    assert needs_consent is not None
    assert needs_consent.params["error"] == "consent_required"
    assert needs_consent.params["error_description"].startswith("AADSTS65001: ")
    fresh.bob.mfa_required = True
    needs_mfa = Browser.arrival(browser.open(authorize_url(base_url, fresh, prompt="none")))
    assert needs_mfa is not None
    assert needs_mfa.params["error"] == "interaction_required"
    assert needs_mfa.params["error_description"].startswith("AADSTS50076: ")


def test_form_post_and_fragment_response_modes(org: Org, browser: Browser, base_url: str) -> None:
    page = browser.open(authorize_url(base_url, org, response_mode="form_post"))
    done = browser.submit(page, login=org.alice.user_principal_name, passwd="alice-pass")
    assert done.status == 200
    assert 'name="hiddenform"' in done.html and "document.forms[0].submit()" in done.html
    assert "<noscript>" in done.html
    nonce = done.response.headers["content-security-policy"].split("'nonce-")[1].split("'")[0]
    assert f'nonce="{nonce}"' in done.html
    arrival = Browser.arrival(done)
    assert arrival is not None and arrival.via == "form_post" and arrival.url == REDIRECT_URI
    assert set(arrival.params) == {"code", "state", "session_state"}
    fragment = Browser.arrival(browser.open(authorize_url(base_url, org, response_mode="fragment")))
    assert fragment is not None and fragment.via == "fragment" and "code" in fragment.params


def test_mfa_page_retries_then_succeeds(org: Org, browser: Browser, base_url: str) -> None:
    org.bob.mfa_required = True
    org.bob.mfa_code = "135790"
    page = browser.open(authorize_url(base_url, org))
    mfa = browser.submit(page, login=org.bob.user_principal_name, passwd="bob-pass")
    assert mfa.heading == "Enter code"
    assert 'autocomplete="one-time-code"' in mfa.html
    wrong = browser.submit(mfa, otc="000000")
    assert wrong.alerts and "verification code" in wrong.alerts[0]
    arrival = Browser.arrival(browser.submit(wrong, otc="135790"))
    assert arrival is not None and "code" in arrival.params


def test_expired_password_is_updated_on_sign_in(
    sim: EmulatorState, org: Org, browser: Browser, base_url: str, http: httpx.Client
) -> None:
    org.alice.password_expired = True
    page = browser.open(authorize_url(base_url, org))
    update = browser.submit(page, login=org.alice.user_principal_name, passwd="alice-pass")
    assert update.heading == "Update your password"
    mismatch = browser.submit(
        update, currentpasswd="alice-pass", newpasswd="brand-new-1", confirmnewpasswd="other-1"
    )
    assert mismatch.alerts == ["The passwords don't match."]
    arrival = Browser.arrival(
        browser.submit(
            mismatch,
            currentpasswd="alice-pass",
            newpasswd="brand-new-1",
            confirmnewpasswd="brand-new-1",
        )
    )
    assert arrival is not None and "code" in arrival.params
    assert org.alice.password == "brand-new-1" and not org.alice.password_expired


def test_disabled_user_and_other_tenant_user_get_error_pages(
    sim: EmulatorState, org: Org, browser: Browser, base_url: str
) -> None:
    org.bob.account_enabled = False
    page = browser.open(authorize_url(base_url, org))
    disabled = browser.submit(page, login=org.bob.user_principal_name, passwd="bob-pass")
    assert disabled.status == 400 and "AADSTS50057" in disabled.html
    other = make_org(sim)
    page = browser.open(authorize_url(base_url, org))
    foreign = browser.submit(page, login=other.alice.user_principal_name, passwd="alice-pass")
    assert foreign.status == 400 and "AADSTS50020" in foreign.html
    # at /organizations the same person signs in to their own tenant
    arrival = browser.sign_in(
        authorize_url(base_url, org, tenant="organizations"),
        other.alice.user_principal_name,
        "alice-pass",
    )
    assert "code" in arrival.params


def test_consent_screen_cancel_is_access_denied(
    sim: EmulatorState, browser: Browser, base_url: str
) -> None:
    fresh = make_org(sim, consent=False)
    page = browser.open(authorize_url(base_url, fresh))
    consent = browser.submit(page, login=fresh.alice.user_principal_name, passwd="alice-pass")
    assert consent.heading == "Permissions requested"
    assert "Read and write access to your mail" in consent.html
    assert "(Mail.ReadWrite)" in consent.html
    assert "Maintain access to data you have given it access to" in consent.html
    assert "consent_for_org" not in consent.html  # alice is no administrator
    arrival = Browser.arrival(browser.submit(consent, button=("action", "cancel")))
    assert arrival is not None
    assert arrival.params["error"] == "access_denied"
    assert arrival.params["error_subcode"] == "cancel"
    assert arrival.params["error_description"].startswith(
        "AADSTS65004: User declined to consent to access the app."
    )
    assert arrival.params["state"] == "st-123"
    assert (fresh.app.client_id, fresh.alice.id) not in fresh.tenant.user_grants


def test_prompt_consent_shows_the_screen_even_when_consented(
    org: Org, browser: Browser, base_url: str
) -> None:
    page = browser.open(authorize_url(base_url, org, prompt="consent"))
    consent = browser.submit(page, login=org.bob.user_principal_name, passwd="bob-pass")
    assert consent.heading == "Permissions requested"
    arrival = Browser.arrival(browser.submit(consent, button=("action", "accept")))
    assert arrival is not None and "code" in arrival.params


def test_admin_only_scope_needs_admin_approval(
    sim: EmulatorState, browser: Browser, base_url: str
) -> None:
    fresh = make_org(sim, consent=False)
    url = authorize_url(base_url, fresh, scope=f"openid offline_access {GRAPH}/User.Read.All")
    page = browser.open(url)
    blocked = browser.submit(page, login=fresh.bob.user_principal_name, passwd="bob-pass")
    assert blocked.heading == "Need admin approval"
    assert "AADSTS90094" in blocked.html
    back = Browser.arrival(browser.submit(blocked, button=("action", "cancel")))
    assert back is not None and back.params["error"] == "access_denied"
    # the administrator signs in instead and consents for the whole organization
    page = browser.open(url.replace("prompt=", "") + "&prompt=login")
    admin_page = browser.submit(page, login=fresh.admin.user_principal_name, passwd="admin-pass")
    assert admin_page.heading == "Permissions requested"
    assert "Consent on behalf of your organization" in admin_page.html
    arrival = Browser.arrival(
        browser.submit(admin_page, button=("action", "accept"), consent_for_org="on")
    )
    assert arrival is not None and "code" in arrival.params
    assert "User.Read.All" in fresh.tenant.admin_delegated_grants[fresh.app.client_id]
    # now bob goes straight through
    bob_again = browser.sign_in(
        url + "&prompt=login", fresh.bob.user_principal_name, "bob-pass", consent=None
    )
    assert "code" in bob_again.params


def test_tenant_without_user_consent_blocks_every_scope(
    sim: EmulatorState, browser: Browser, base_url: str
) -> None:
    fresh = make_org(sim, consent=False)
    fresh.tenant.user_consent_allowed = False
    page = browser.open(authorize_url(base_url, fresh))
    blocked = browser.submit(page, login=fresh.alice.user_principal_name, passwd="alice-pass")
    assert blocked.heading == "Need admin approval"


def test_forged_form_posts_are_refused(
    org: Org, browser: Browser, base_url: str, ssl_context: object
) -> None:
    page = browser.open(authorize_url(base_url, org))
    form = page.form
    url = urllib.parse.urljoin(page.url, form.action)
    # the right flow id but a wrong csrf value
    bad_csrf = browser.client.post(
        url,
        data={
            **form.fields,
            "csrf": "guess",
            "login": org.alice.user_principal_name,
            "passwd": "alice-pass",
        },
    )
    assert bad_csrf.status_code == 400 and "AADSTS90023" in bad_csrf.text
    # the right fields, posted from another browser (no cookie)
    with httpx.Client(verify=ssl_context, trust_env=False) as other:  # type: ignore[arg-type]
        cross_site = other.post(
            url,
            data={**form.fields, "login": org.alice.user_principal_name, "passwd": "alice-pass"},
        )
    assert cross_site.status_code == 400 and "location" not in cross_site.headers
    # an unknown flow
    stale = browser.client.post(url, data={"flow": "nope", "csrf": "nope"})
    assert stale.status_code == 400 and "AADSTS50089" in stale.text
    # garbage bodies
    junk = browser.client.post(
        url, content=b"\xff\x00%%%", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert junk.status_code == 400


def test_logout_ends_the_session(org: Org, browser: Browser, base_url: str) -> None:
    browser.sign_in(authorize_url(base_url, org), org.alice.user_principal_name, "alice-pass")
    signed_out = browser.client.get(
        f"{base_url}/{org.tenant.id}/oauth2/v2.0/logout",
        params={"post_logout_redirect_uri": REDIRECT_URI, "state": "bye"},
    )
    assert signed_out.status_code == 302
    assert signed_out.headers["location"] == f"{REDIRECT_URI}?state=bye"
    arrival = Browser.arrival(browser.open(authorize_url(base_url, org, prompt="none")))
    assert arrival is not None and arrival.params["error"] == "login_required"
    unregistered = browser.client.get(
        f"{base_url}/common/oauth2/v2.0/logout",
        params={"post_logout_redirect_uri": "https://evil.test/"},
    )
    assert unregistered.status_code == 200 and "You signed out" in unregistered.text


def test_single_tenant_app_at_organizations_is_refused(
    org: Org, browser: Browser, base_url: str
) -> None:
    org.app.single_tenant = True
    page = browser.open(authorize_url(base_url, org, tenant="organizations"))
    assert page.status == 400 and "AADSTS50194" in page.html and page.location is None
    assert browser.open(authorize_url(base_url, org)).heading == "Sign in"
