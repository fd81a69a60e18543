"""Security headers on every Postroom page, a Content-Security-Policy the pages really work
under (a real Chromium: no violation, the Microsoft redirect after a form allowed), templates
without inline script or style, and the API description off unless a setting turns it on.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from m365sim.state import EmulatorState
from postroom.db import Database
from postroom.integrations.wizard import COLOURS
from postroom.settings import Settings
from postroom.web.app import create_app
from tests.postroom.conftest import Postroom
from tests.postroom.test_editor import finished

WEB = Path(__file__).resolve().parents[2] / "src" / "postroom" / "web"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _assert_headers(response: httpx.Response, authority: str) -> None:
    csp = response.headers.get("content-security-policy", "")
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";") if d.strip())
    assert directives["default-src"] == "'self'", csp
    assert directives["script-src"] == "'self'", csp  # no 'unsafe-inline'
    assert directives["style-src"] == "'self'", csp
    assert directives["img-src"] == "'self' data:", csp
    assert directives["frame-ancestors"] == "'none'", csp
    assert directives["base-uri"] == "'none'", csp
    assert directives["form-action"] == f"'self' {authority}", csp
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "strict-origin-when-cross-origin"


def test_every_kind_of_response_carries_the_security_headers(
    web: httpx.Client, postroom: Postroom
) -> None:
    authority = postroom.settings.authority_host
    responses = [
        web.get("/signin"),
        web.get("/signup"),
        web.get("/"),
        web.get("/healthz"),
        web.get("/help"),
        web.get("/static/app.css"),
        web.get("/static/app.js"),
        web.get("/no-such-page"),
        web.post("/signin", data={}),
        web.post("/webhooks/graph", content=b"{not json"),
        web.post("/webhooks/graph", params={"validationToken": "t"}),
    ]
    for response in responses:
        _assert_headers(response, authority)
        # cookies are not marked secure here (plain http in tests): no HSTS
        assert "strict-transport-security" not in response.headers


def _asgi_get(settings: Settings, database: Database, path: str) -> httpx.Response:
    app = create_app(settings, database=database)

    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get(path)

    return asyncio.run(get())


def test_hsts_when_cookies_are_secure(database: Database, tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        cookie_secure=True,
        public_base_url="https://postroom.example.com",
        authority_host="https://login.microsoftonline.com/",
    )
    response = _asgi_get(settings, database, "/healthz")
    assert response.status_code == 200
    assert response.headers["strict-transport-security"] == "max-age=31536000"
    _assert_headers(response, "https://login.microsoftonline.com")


def test_api_description_is_off_unless_a_setting_turns_it_on(
    web: httpx.Client, postroom: Postroom, database: Database, tmp_path: Path
) -> None:
    for path in ("/openapi.json", "/docs", "/redoc", "/docs/oauth2-redirect"):
        assert web.get(path).status_code == 404, path
    assert Settings().api_docs is False
    on = Settings(data_dir=tmp_path, api_docs=True)
    response = _asgi_get(on, database, "/openapi.json")
    assert response.status_code == 200
    assert "/webhooks/graph" in response.json()["paths"]


def test_templates_hold_no_inline_script_style_or_handler() -> None:
    """The CSP refuses them; a page using one would silently lose its script or style."""
    inline = re.compile(
        r"<script(?![^>]*\bsrc=)|<style|\son[a-z]+\s*=|\sstyle\s*=|=\s*[\"']?\s*javascript:",
        re.IGNORECASE,
    )
    found = [
        f"{path.relative_to(WEB)}:{number}: {line.strip()}"
        for path in sorted((WEB / "templates").rglob("*.html"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if inline.search(line)
    ]
    assert found == []


def test_every_outlook_colour_has_a_swatch_rule() -> None:
    css = (WEB / "static" / "app.css").read_text(encoding="utf-8")
    for _, name, hex_ in COLOURS:
        assert f'.swatch[data-colour="{hex_}"] {{ background: {hex_}; }}' in css, name


# ---------------------------------------------------------------------- a real browser
COLLECT_VIOLATIONS = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__csp.push(`${e.violatedDirective} ${e.blockedURI} ${e.sourceFile}:${e.lineNumber}`);
});
"""


def test_main_pages_work_under_the_csp_without_a_violation(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    org, base = finished(web, postroom, sim)
    paths = [
        "/integrations",
        "/integrations/new",
        "/integrations/new/outlook",
        "/integrations/new/outlook/personal",
        "/integrations/new/outlook/organization",
        base,
        f"{base}/categories",
        f"{base}/activity",
        f"{base}/model",
        "/workspace/members",
        "/help",
        "/help/register-app",
        "/help/restrict-mailboxes",
        "/help/status/connected",
        "/no-such-page",
    ]
    console: list[str] = []
    violations: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        context = browser.new_context(ignore_https_errors=True)
        context.add_cookies(
            [{"name": c.name, "value": c.value or "", "url": postroom.url} for c in web.cookies.jar]
        )
        context.add_init_script(COLLECT_VIOLATIONS)
        page = context.new_page()
        page.set_default_timeout(20_000)
        page.on("console", lambda message: console.append(message.text))

        def collect(page: Any) -> None:
            if page.url.startswith(postroom.url):
                violations.extend(f"{page.url}: {v}" for v in page.evaluate("window.__csp"))

        for path in paths:
            page.goto(f"{postroom.url}{path}")
            page.wait_for_load_state("load")
            collect(page)

        # The stylesheet applies (external CSS, colours by data attribute) and so does the
        # script (the Connect Integration button opens its dialog).
        page.goto(f"{postroom.url}{base}/categories")
        swatch = page.locator(".swatch").first
        assert swatch.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(0, 188, 242)"
        page.goto(f"{postroom.url}/integrations")
        page.get_by_role("link", name="Connect Integration").click()
        assert page.get_by_role("dialog").is_visible()
        collect(page)

        # A form whose answer redirects to Microsoft: form-action must allow the authority.
        page.goto(f"{postroom.url}{base}")
        collect(page)
        page.get_by_role("button", name="Reconnect").click()
        page.wait_for_url(f"{postroom.settings.authority_host}/**")
        page.locator("#login").fill(org.alice.user_principal_name)
        page.locator("#passwd").fill("alice-pass")
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{postroom.url}/**")
        page.wait_for_load_state("load")
        collect(page)
        browser.close()
    assert violations == []
    assert [m for m in console if "Content Security Policy" in m or "Refused to" in m] == []
