"""Helpers for driving Postroom's pages over HTTP like a browser: forms, CSRF, sign-up."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import httpx


class FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, object]] = []
        self._current: dict[str, object] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._current = {
                "action": a.get("action", ""),
                "method": a.get("method", "get"),
                "fields": [],
            }
            self.forms.append(self._current)
        elif tag in ("input", "button") and self._current is not None and a.get("name"):
            kind = a.get("type", "text")
            if kind in ("checkbox", "radio") and "checked" not in a:
                return
            fields = self._current["fields"]
            assert isinstance(fields, list)
            fields.append((a["name"], a.get("value", "")))

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._current = None


def forms(html: str) -> list[dict[str, object]]:
    parser = FormParser()
    parser.feed(html)
    return parser.forms


def csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF token on the page"
    return match.group(1)


def sign_up(
    web: httpx.Client,
    *,
    email: str = "owner@acme.test",
    name: str = "Olga Owner",
    password: str = "correct horse battery",
    workspace: str = "Acme",
) -> httpx.Response:
    page = web.get("/signup")
    return web.post(
        "/signup",
        data={
            "csrf_token": csrf(page.text),
            "email": email,
            "name": name,
            "password": password,
            "workspace": workspace,
        },
    )


def post_form(
    web: httpx.Client, page_path: str, action: str, data: dict[str, str] | None = None
) -> httpx.Response:
    page = web.get(page_path)
    payload = {"csrf_token": csrf(page.text)}
    payload.update(data or {})
    return web.post(action, data=payload)
