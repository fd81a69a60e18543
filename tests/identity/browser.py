"""A tiny browser for the emulator's sign-in pages: keeps cookies, reads forms, submits them.

It drives the pages over real HTTPS the way a person's browser would (GET the authorize URL,
fill the form, press a button) and stops at the first response that leaves the emulator: a
302 to the application's redirect URI, or a ``form_post`` page (whose form it reads, so the
test sees the fields the application would receive).
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field
from html.parser import HTMLParser

import httpx


@dataclass
class Form:
    action: str
    method: str
    fields: dict[str, str] = field(default_factory=dict)
    buttons: list[tuple[str, str]] = field(default_factory=list)  # (name, value)
    inputs: list[tuple[str, str]] = field(default_factory=list)  # (type, name)


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []
        self.alerts: list[str] = []
        self._in_alert = False
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append(Form(a.get("action", ""), a.get("method", "get").upper()))
        elif tag == "input" and self.forms:
            kind = a.get("type", "text").lower()
            name = a.get("name", "")
            form = self.forms[-1]
            form.inputs.append((kind, name))
            if kind == "submit":
                if name:
                    form.buttons.append((name, a.get("value", "")))
            elif name and (kind != "checkbox" or "checked" in a):
                form.fields[name] = a.get("value", "")
        elif tag == "button" and self.forms:
            if a.get("name"):
                self.forms[-1].buttons.append((a["name"], a.get("value", "")))
        if a.get("role") == "alert":
            self._in_alert = True

    def handle_endtag(self, tag: str) -> None:
        if tag in ("p", "div"):
            self._in_alert = False

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._in_alert and data.strip():
            self.alerts.append(data.strip())


@dataclass
class Page:
    url: str
    response: httpx.Response

    @property
    def status(self) -> int:
        return self.response.status_code

    @property
    def html(self) -> str:
        return self.response.text

    def _parsed(self) -> _FormParser:
        parser = _FormParser()
        parser.feed(self.response.text)
        return parser

    @property
    def forms(self) -> list[Form]:
        return self._parsed().forms

    @property
    def form(self) -> Form:
        forms = self.forms
        assert forms, f"no form on the page:\n{self.html[:2000]}"
        return forms[0]

    @property
    def alerts(self) -> list[str]:
        return self._parsed().alerts

    @property
    def heading(self) -> str:
        marker = 'id="heading">'
        start = self.html.find(marker)
        if start < 0:
            return ""
        return self.html[start + len(marker) : self.html.find("<", start + len(marker))]

    @property
    def location(self) -> str | None:
        location: str | None = self.response.headers.get("location")
        return location


@dataclass
class Arrival:
    """What the application received at its redirect URI."""

    url: str
    params: dict[str, str]
    via: str  # "query" | "fragment" | "form_post"


class Browser:
    def __init__(self, client: httpx.Client) -> None:
        self.client = client

    def open(self, url: str) -> Page:
        return Page(url, self.client.get(url))

    def submit(self, page: Page, button: tuple[str, str] | None = None, **values: str) -> Page:
        form = page.form
        data = dict(form.fields)
        data.update(values)
        if button is not None:
            data[button[0]] = button[1]
        url = urllib.parse.urljoin(page.url, form.action)
        return Page(url, self.client.request(form.method, url, data=data))

    @staticmethod
    def arrival(page: Page) -> Arrival | None:
        """The authorization response, if this page hands one to the application."""
        if page.status in (302, 303) and page.location:
            parts = urllib.parse.urlsplit(page.location)
            if parts.fragment:
                return Arrival(
                    page.location, dict(urllib.parse.parse_qsl(parts.fragment)), "fragment"
                )
            return Arrival(page.location, dict(urllib.parse.parse_qsl(parts.query)), "query")
        forms = page.forms if page.status == 200 else []
        if forms and forms[0].method == "POST" and "hiddenform" in page.html:
            return Arrival(forms[0].action, dict(forms[0].fields), "form_post")
        return None

    def sign_in(
        self,
        url: str,
        username: str,
        password: str,
        *,
        mfa_code: str | None = None,
        consent: str | None = "accept",
        consent_for_org: bool = False,
    ) -> Arrival:
        """Run the whole interactive flow; fails the test if it does not reach the app."""
        page = self.open(url)
        for _ in range(8):
            arrived = self.arrival(page)
            if arrived is not None:
                return arrived
            assert page.status == 200, f"{page.status}: {page.html[:1500]}"
            action = page.form.action
            if action.endswith("/login"):
                page = self.submit(page, login=username, passwd=password)
            elif action.endswith("/mfa"):
                assert mfa_code is not None, "unexpected MFA prompt"
                page = self.submit(page, otc=mfa_code)
            elif action.endswith("/select_account"):
                page = self.submit(page, button=("choice", "session"))
            elif action.endswith("/consent"):
                assert consent is not None, "unexpected consent screen"
                extra = {"consent_for_org": "on"} if consent_for_org else {}
                page = self.submit(page, button=("action", consent), **extra)
            else:
                raise AssertionError(f"unexpected form {action}")
        raise AssertionError("the flow did not end")
