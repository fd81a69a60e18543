"""The control API's protection (issue 12): cross-site writes refused, an optional bearer token
(required beyond loopback), and the viewer behind the same token."""

from __future__ import annotations

import html
import json
import os
import shutil
import ssl
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from m365sim.control.guard import VIEWER_COOKIE, listen_problem
from m365sim.server import EmulatorServer
from m365sim.state import EmulatorState, new_state
from tests.helpers import Org, make_org
from tests.test_cli import _serve, _stop

TOKEN = "control-token-for-tests-" + "x" * 16
EVIL = "https://evil.test"


def _tenant_body() -> tuple[dict[str, str], str]:
    domain = f"csrf{uuid.uuid4().hex[:8]}.test"
    return {"displayName": "Forged", "domain": domain}, domain


# ----------------------------------------------------------------------------- cross-site


def test_cross_site_form_post_is_refused_and_changes_nothing(
    http: httpx.Client, sim: EmulatorState
) -> None:
    body, domain = _tenant_body()
    raw = (
        '{"displayName": "Forged", "domain": "' + domain + '"}'
    )  # what <form enctype="text/plain"> can send
    # a browser's cross-site form post: Origin and Sec-Fetch-Site name the attacker's site
    forged = http.post(
        "/_emulator/tenants",
        content=raw,
        headers={
            "Content-Type": "text/plain",
            "Origin": EVIL,
            "Sec-Fetch-Site": "cross-site",
            "Sec-Fetch-Mode": "navigate",
        },
    )
    assert forged.status_code == 403, forged.text
    assert "cross-site" in forged.json()["error"]
    # old browsers send no Sec-Fetch-Site: Origin alone is enough; a sandboxed frame sends null
    for origin in (EVIL, "null", "https://localhost:1"):
        refused = http.post("/_emulator/tenants", json=body, headers={"Origin": origin})
        assert refused.status_code == 403, origin
    # same-site is not same-origin (another port on localhost is a different application)
    same_site = http.post("/_emulator/tenants", json=body, headers={"Sec-Fetch-Site": "same-site"})
    assert same_site.status_code == 403
    # no browser headers at all, but a form's content type: still refused
    for content_type in (
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ):
        typed = http.post("/_emulator/tenants", content=raw, headers={"Content-Type": content_type})
        assert typed.status_code == 415, content_type
        assert "form" in typed.json()["error"]
    assert sim.store.tenant(domain) is None


def test_form_content_types_cannot_deliver_or_reset(http: httpx.Client, org: Org) -> None:
    mailbox = org.alice.user_principal_name
    before = len(org.alice.mailbox.messages)
    mime = b"Subject: planted\r\nFrom: a@evil.test\r\n\r\nhello"
    planted = http.post(
        f"/_emulator/mailboxes/{mailbox}/deliver",
        content=mime,
        headers={"Content-Type": "text/plain"},
    )
    assert planted.status_code == 415
    reset = http.post("/_emulator/reset", headers={"Content-Type": "text/plain"}, content=b"x")
    assert reset.status_code == 415
    assert len(org.alice.mailbox.messages) == before
    assert org.tenant.id in http.get("/_emulator/tenants").text  # nothing was reset
    # the documented way still works
    ok = http.post(
        f"/_emulator/mailboxes/{mailbox}/deliver",
        content=mime,
        headers={"Content-Type": "message/rfc822"},
    )
    assert ok.status_code == 201


def test_same_origin_and_script_clients_are_accepted(
    http: httpx.Client, sim: EmulatorState, base_url: str
) -> None:
    body, domain = _tenant_body()
    same = http.post(
        "/_emulator/tenants",
        json=body,
        headers={"Origin": base_url, "Sec-Fetch-Site": "same-origin"},
    )
    assert same.status_code == 201, same.text
    script_body, script_domain = _tenant_body()
    assert http.post("/_emulator/tenants", json=script_body).status_code == 201
    # reads are not writes: a cross-site GET is answered (and browsers keep it from the page)
    assert http.get("/_emulator/tenants", headers={"Origin": EVIL}).status_code == 200
    assert sim.store.tenant(domain) is not None and sim.store.tenant(script_domain) is not None


# ----------------------------------------------------------------------------- token


@pytest.fixture(scope="module")
def guarded_server(sim_dir: Path) -> Iterator[EmulatorServer]:
    state = new_state(data_dir=sim_dir / "guarded", control_token=TOKEN)
    server = EmulatorServer(state, tls_dir=sim_dir).start_in_thread()
    yield server
    server.stop()


@pytest.fixture
def guarded(guarded_server: EmulatorServer) -> Iterator[httpx.Client]:
    context = ssl.create_default_context(cafile=str(guarded_server.ca_file))
    with httpx.Client(
        base_url=guarded_server.base_url, verify=context, timeout=30, trust_env=False
    ) as client:
        yield client


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_with_a_token_requests_without_or_with_a_wrong_token_are_refused(
    guarded: httpx.Client, guarded_server: EmulatorServer
) -> None:
    body, domain = _tenant_body()
    missing = guarded.post("/_emulator/tenants", json=body)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    wrong = guarded.post("/_emulator/tenants", json=body, headers=_bearer(TOKEN + "x"))
    assert wrong.status_code == 401
    assert 'error="invalid_token"' in wrong.headers["www-authenticate"]
    basic = guarded.get("/_emulator/state", headers={"Authorization": f"Basic {TOKEN}"})
    assert basic.status_code == 401
    for method, path in (
        ("GET", "/_emulator/state"),
        ("GET", "/_emulator/tenants"),
        ("GET", "/_emulator/config"),
        ("PATCH", "/_emulator/config"),
        ("POST", "/_emulator/reset"),
        ("GET", "/_emulator/clock"),
        ("GET", "/_emulator/faults"),
        ("GET", "/_emulator/deletions"),
    ):
        assert guarded.request(method, path).status_code == 401, path
    assert guarded_server.state.store.tenant(domain) is None
    # liveness probes need no token
    assert guarded.get("/_emulator/health").text == "ok"


def test_with_the_right_token_the_control_api_works(
    guarded: httpx.Client, guarded_server: EmulatorServer
) -> None:
    body, domain = _tenant_body()
    created = guarded.post("/_emulator/tenants", json=body, headers=_bearer(TOKEN))
    assert created.status_code == 201, created.text
    listed = guarded.get("/_emulator/tenants", headers=_bearer(TOKEN))
    assert domain in {t["domain"] for t in listed.json()["value"]}
    # the token never shows in the readable configuration
    config = guarded.get("/_emulator/config", headers=_bearer(TOKEN))
    assert config.status_code == 200 and TOKEN not in config.text
    # a cross-site post is refused even with the token
    forged = guarded.post(
        "/_emulator/tenants",
        json=_tenant_body()[0],
        headers={**_bearer(TOKEN), "Origin": EVIL},
    )
    assert forged.status_code == 403


def test_with_a_token_the_viewer_needs_it_too(
    guarded: httpx.Client, guarded_server: EmulatorServer
) -> None:
    state = guarded_server.state
    tenant = state.store.add_tenant(display_name="Viewer", domain=f"v{uuid.uuid4().hex[:8]}.test")
    user = state.store.add_user(
        tenant, user_principal_name=f"vera@{tenant.domain}", display_name="Vera", password="p"
    )
    page = guarded.get("/viewer")
    assert page.status_code == 303 and page.headers["location"] == "/viewer/signin"
    mailbox = guarded.get(f"/viewer/mailboxes/{user.id}")
    assert mailbox.status_code == 303
    post = guarded.post(
        f"/viewer/mailboxes/{user.id}/messages/x/categories", data={"other": "planted"}
    )
    assert post.status_code == 401
    assert guarded.get("/viewer/static/viewer.css").status_code == 200
    # a script may use the bearer header
    assert guarded.get("/viewer", headers=_bearer(TOKEN)).status_code == 200

    signin = guarded.get("/viewer/signin")
    assert signin.status_code == 200 and 'name="token"' in signin.text
    wrong = guarded.post("/viewer/signin", data={"token": "nope"})
    assert wrong.status_code == 401 and VIEWER_COOKIE not in wrong.cookies
    forged = guarded.post(
        "/viewer/signin", data={"token": TOKEN}, headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert forged.status_code == 403
    done = guarded.post("/viewer/signin", data={"token": TOKEN})
    assert done.status_code == 303
    cookie = done.headers["set-cookie"]
    assert "m365sim_viewer=" in cookie and TOKEN not in cookie
    for attribute in ("HttpOnly", "Secure", "SameSite=strict", "Path=/viewer"):
        assert attribute.lower() in cookie.lower(), attribute
    assert guarded.get("/viewer").status_code == 200  # the client keeps the cookie
    assert f"vera@{tenant.domain}" in guarded.get("/viewer").text
    # the viewer's cookie is not a control API credential
    assert guarded.get("/_emulator/state").status_code == 401


def test_listening_beyond_loopback_needs_a_token(sim_dir: Path) -> None:
    assert listen_problem("127.0.0.1", "") is None
    assert listen_problem("::1", "") is None
    assert listen_problem("localhost", "") is None
    for host in ("0.0.0.0", "::", "192.168.1.10", "emulator.example"):
        assert "control token" in (listen_problem(host, "") or ""), host
        assert listen_problem(host, TOKEN) is None
    assert "at least" in (listen_problem("127.0.0.1", "short") or "")
    with pytest.raises(ValueError, match="control token"):
        EmulatorServer(new_state(), host="0.0.0.0", port=0, tls_dir=sim_dir)


def test_cli_refuses_a_public_address_without_a_token(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("M365SIM_CONTROL_TOKEN")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "m365sim.cli",
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            "0",
            "--data-dir",
            str(tmp_path),
            "--scenario",
            "blank",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 1
    assert "needs a control token" in result.stderr


def test_cli_reads_the_token_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("M365SIM_CONTROL_TOKEN", TOKEN)
    process, base = _serve(tmp_path, "--scenario", "blank")
    try:
        context = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
        with httpx.Client(base_url=base, verify=context, trust_env=False, timeout=10) as client:
            assert client.get("/_emulator/state").status_code == 401
            assert client.get("/_emulator/state", headers=_bearer(TOKEN)).status_code == 200
    finally:
        out, _ = _stop(process)
    assert TOKEN not in out  # the banner never prints the token
    assert "Authorization: Bearer $M365SIM_CONTROL_TOKEN" in out


def test_loopback_without_a_token_changes_nothing_for_tests_and_the_demo(
    http: httpx.Client, sim: EmulatorState
) -> None:
    assert sim.control_token == ""
    assert http.get("/_emulator/state").status_code == 200
    assert http.get("/viewer").status_code == 200
    org = make_org(sim)
    delivered = http.post(
        f"/_emulator/mailboxes/{org.alice.user_principal_name}/deliver",
        json={"from": "a@b.test", "subject": "demo", "body": "x"},
    )
    assert delivered.status_code == 201


# ----------------------------------------------------------------------------- a real browser


def test_a_real_cross_site_form_post_from_chromium_is_refused(
    sim: EmulatorState, base_url: str
) -> None:
    """An attacker's page posts a ``text/plain`` form whose body is valid JSON for the tenants
    endpoint (the ``=`` of ``name=value`` lands inside a string); Chromium sends it with its
    real ``Origin`` (and ``Sec-Fetch-*``) headers."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    domain = f"browser{uuid.uuid4().hex[:8]}.test"
    name = html.escape('{"displayName": "Forged', quote=True)
    value = html.escape(f'", "domain": "{domain}"}}', quote=True)
    attacker = (
        "<!doctype html><form method=post enctype=text/plain "
        f'action="{base_url}/_emulator/tenants">'
        f'<input type=hidden name="{name}" value="{value}"></form>'
        "<script>document.forms[0].submit()</script>"
    )
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            context = browser.new_context(ignore_https_errors=True)
            page = context.new_page()
            page.route(
                "https://evil.test/**",
                lambda route: route.fulfill(status=200, content_type="text/html", body=attacker),
            )
            with page.expect_response(f"{base_url}/_emulator/tenants") as answered:
                page.goto("https://evil.test/")
            response = answered.value
            assert response.status == 403
            sent = response.request.all_headers()
            assert sent.get("origin") == "https://evil.test"
            # valid JSON for the endpoint: before the guard, this created the tenant
            assert json.loads(response.request.post_data or "") == {
                "displayName": "Forged=",
                "domain": domain,
            }
        finally:
            browser.close()
    assert sim.store.tenant(domain) is None
