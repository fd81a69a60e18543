"""Accounts in the running app: sign-up, sign-in, CSRF, roles and workspace scoping."""

from __future__ import annotations

import httpx
from sqlalchemy import func, select

from postroom.accounts.models import Membership, User, Workspace
from tests.postroom.conftest import Postroom
from tests.postroom.webtools import add_member, csrf, post_form, sign_up


def test_sign_up_creates_owner_workspace_and_signs_in(
    web: httpx.Client, postroom: Postroom
) -> None:
    response = sign_up(web)
    assert response.status_code == 303 and response.headers["location"] == "/integrations"
    page = web.get("/integrations")
    assert page.status_code == 200
    assert "Connect Integration" in page.text and "Acme" in page.text
    with postroom.database.session() as db:
        user = db.scalar(select(User))
        assert user is not None and user.email == "owner@acme.test"
        assert user.password_hash.startswith("$argon2id$")
        assert "correct horse" not in user.password_hash
        assert db.scalar(select(Membership.role)) == "owner"


def test_session_cookie_is_httponly_and_samesite(web: httpx.Client, postroom: Postroom) -> None:
    response = sign_up(web)
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie


def test_signed_out_visitors_are_sent_to_sign_in(web: httpx.Client, postroom: Postroom) -> None:
    response = web.get("/integrations")
    assert response.status_code == 303
    assert response.headers["location"].startswith("/signin?next=")


def test_wrong_password_and_unknown_user_get_the_same_answer(
    web: httpx.Client, postroom: Postroom
) -> None:
    sign_up(web)
    web.cookies.clear()
    wrong = post_form(
        web, "/signin", "/signin", {"email": "owner@acme.test", "password": "nope nope nope"}
    )
    unknown = post_form(
        web, "/signin", "/signin", {"email": "ghost@acme.test", "password": "nope nope nope"}
    )
    assert wrong.status_code == unknown.status_code == 400
    assert "not right" in wrong.text and "not right" in unknown.text
    ok = post_form(
        web, "/signin", "/signin", {"email": "OWNER@acme.test", "password": "correct horse battery"}
    )
    assert ok.status_code == 303


def test_forms_without_csrf_token_change_nothing(web: httpx.Client, postroom: Postroom) -> None:
    response = web.post(
        "/signup",
        data={"email": "x@acme.test", "name": "X", "password": "long enough pw", "workspace": "W"},
    )
    assert response.status_code == 400
    assert "expired" in response.text
    with postroom.database.session() as db:
        assert db.scalar(select(func.count()).select_from(User)) == 0


def test_garbage_sign_up_fields_get_clear_errors_and_no_rows(
    web: httpx.Client, postroom: Postroom
) -> None:
    page = web.get("/signup")
    response = web.post(
        "/signup",
        data={
            "csrf_token": csrf(page.text),
            "email": "not-an-email",
            "name": "\x07",
            "password": "short",
            "workspace": "",
        },
    )
    assert response.status_code == 400
    assert "valid email" in response.text
    too_long = web.post("/signup", data={"csrf_token": csrf(page.text), "email": "a" * 6000})
    assert too_long.status_code == 400
    assert "Traceback" not in too_long.text
    with postroom.database.session() as db:
        assert db.scalar(select(func.count()).select_from(Workspace)) == 0


def test_open_redirect_after_sign_in_is_refused(web: httpx.Client, postroom: Postroom) -> None:
    sign_up(web)
    web.cookies.clear()
    response = post_form(
        web,
        "/signin",
        "/signin",
        {
            "email": "owner@acme.test",
            "password": "correct horse battery",
            "next": "//evil.test/steal",
        },
    )
    assert response.headers["location"] == "/integrations"


def test_members_can_view_but_not_manage(web: httpx.Client, postroom: Postroom) -> None:
    sign_up(web)
    with httpx.Client(base_url=postroom.url, trust_env=False) as other:
        sign_up(other, email="member@acme.test", name="Max Member", workspace="Max's own")
        add_member(web, other, "member@acme.test")
    with httpx.Client(base_url=postroom.url, trust_env=False) as member:
        post_form(
            member,
            "/signin",
            "/signin",
            {"email": "member@acme.test", "password": "correct horse battery"},
        )
        assert member.get("/integrations").status_code == 200
        assert member.get("/integrations/new").status_code == 403
        refused = post_form(member, "/integrations", "/integrations/connect/organization")
        assert refused.status_code == 403
