"""Helpers for driving Postroom's pages over HTTP like a browser: forms, CSRF, sign-up
(through the link mailed to the test SMTP server), invitations."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlsplit

import httpx

from tests.postroom.smtp import INBOX


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


def request_sign_up(
    web: httpx.Client,
    *,
    email: str = "owner@acme.test",
    name: str = "Olga Owner",
    password: str = "correct horse battery",
    workspace: str = "Acme",
) -> httpx.Response:
    """Only the form: Postroom answers "check your inbox" and mails a link."""
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


def local_path(link: str) -> str:
    """A link from an email as a path on the server (``/signup/confirm?token=...``)."""
    parts = urlsplit(link)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def signup_link(email: str) -> str:
    """The link in the newest sign-up email to ``email`` that the test SMTP server received."""
    return INBOX.last_to(email).link("/signup/confirm")


def sign_up(
    web: httpx.Client,
    *,
    email: str = "owner@acme.test",
    name: str = "Olga Owner",
    password: str = "correct horse battery",
    workspace: str = "Acme",
) -> httpx.Response:
    """Sign up as a person does: the form, then the link from the email, then "Create my
    account". Returns the last answer (303 to /integrations, signed in)."""
    sent = request_sign_up(web, email=email, name=name, password=password, workspace=workspace)
    assert sent.status_code == 200, sent.text
    assert "Check your inbox" in sent.text, sent.text
    page = web.get(local_path(signup_link(email)))
    assert page.status_code == 200, page.text
    token = re.search(r'name="token" value="([^"]+)"', page.text)
    assert token, "no token on the confirmation page"
    return web.post(
        "/signup/confirm", data={"csrf_token": csrf(page.text), "token": token.group(1)}
    )


def invitation_link(email: str) -> str:
    """The link in the newest invitation email to ``email``."""
    return INBOX.last_to(email).link("/invitations/accept")


def invite(web: httpx.Client, email: str, role: str = "member") -> httpx.Response:
    """An owner's or admin's client invites ``email``."""
    return post_form(
        web, "/workspace/members", "/workspace/invitations", {"email": email, "role": role}
    )


def accept_invitation(web: httpx.Client, email: str) -> httpx.Response:
    """A client signed in as ``email`` opens the mailed link and accepts."""
    page = web.get(local_path(invitation_link(email)))
    assert page.status_code == 200, page.text
    token = re.search(r'name="token" value="([^"]+)"', page.text)
    assert token, "no accept form on the invitation page"
    return web.post(
        "/invitations/accept", data={"csrf_token": csrf(page.text), "token": token.group(1)}
    )


def add_member(owner: httpx.Client, member: httpx.Client, email: str, role: str = "member") -> None:
    """The owner invites ``email``; ``member``, signed in as that address, accepts (and its
    current workspace becomes the owner's)."""
    invited = invite(owner, email, role)
    assert invited.status_code == 200 and f"Invitation sent to {email}" in invited.text
    accepted = accept_invitation(member, email)
    assert accepted.status_code == 303, accepted.text


def post_form(
    web: httpx.Client, page_path: str, action: str, data: dict[str, str] | None = None
) -> httpx.Response:
    page = web.get(page_path)
    payload = {"csrf_token": csrf(page.text)}
    payload.update(data or {})
    return web.post(action, data=payload)


def finish_sign_up_in_browser(page: Any, email: str) -> None:
    """In a Playwright page that just sent the sign-up form: open the link from the email and
    create the account, as the person would."""
    page.get_by_text("Check your inbox").first.wait_for()
    page.goto(signup_link(email))
    page.get_by_role("button", name="Create my account").click()
    page.wait_for_url("**/integrations")
