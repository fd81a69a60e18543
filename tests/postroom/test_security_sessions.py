"""Issue 12, sessions and owners: sign-out ends a session server-side (a copied cookie stops
working), a password change ends the other sessions, a person ends their other sessions, idle
and absolute lifetimes; a workspace keeps an owner and only owners change owners."""

from __future__ import annotations

import re
from datetime import timedelta

import httpx
from sqlalchemy import func, select, update

from postroom.accounts.models import Membership, User, Workspace, utcnow
from postroom.accounts.passwords import hash_password, verify_password
from postroom.accounts.sessions import UserSession, describe_device
from tests.postroom.conftest import Postroom
from tests.postroom.webtools import post_form

PASSWORD = "correct horse battery"
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:130.0) Gecko/20100101 Firefox/130.0"


def add_person(
    postroom: Postroom,
    email: str,
    *,
    workspace_id: str | None = None,
    role: str = "owner",
    password: str = PASSWORD,
) -> tuple[str, str]:
    """A user (and a workspace of their own unless ``workspace_id``); (user id, workspace id)."""
    with postroom.database.session() as db:
        user = User(
            email=email, name=email.split("@")[0].title(), password_hash=hash_password(password)
        )
        db.add(user)
        if workspace_id is None:
            workspace = Workspace(name="Acme")
            db.add(workspace)
            db.flush()
            workspace_id = workspace.id
        db.flush()
        db.add(Membership(workspace_id=workspace_id, user_id=user.id, role=role))
        return user.id, workspace_id


def new_browser(postroom: Postroom, user_agent: str = "pytest") -> httpx.Client:
    return httpx.Client(
        base_url=postroom.url,
        trust_env=False,
        timeout=30,
        headers={"user-agent": user_agent},
    )


def sign_in(client: httpx.Client, email: str, password: str = PASSWORD) -> httpx.Response:
    return post_form(client, "/signin", "/signin", {"email": email, "password": password})


def signed_in(client: httpx.Client) -> bool:
    response = client.get("/integrations")
    assert response.status_code in (200, 303)
    return response.status_code == 200


def session_rows(postroom: Postroom, user_id: str) -> int:
    with postroom.database.session() as db:
        return int(
            db.scalar(
                select(func.count()).select_from(UserSession).where(UserSession.user_id == user_id)
            )
            or 0
        )


# --- sessions ------------------------------------------------------------------------------------


def test_a_copied_cookie_stops_working_after_sign_out(postroom: Postroom) -> None:
    user_id, _ = add_person(postroom, "owner@acme.test")
    with new_browser(postroom) as browser, new_browser(postroom) as thief:
        assert sign_in(browser, "owner@acme.test").status_code == 303
        thief.cookies.update(browser.cookies)  # the cookie copied off the machine
        assert signed_in(thief)
        assert session_rows(postroom, user_id) == 1

        out = post_form(browser, "/integrations", "/signout")
        assert out.status_code == 303 and out.headers["location"] == "/signin"
        assert session_rows(postroom, user_id) == 0
        assert not signed_in(browser)
        assert not signed_in(thief)  # the copy ended with the session


def test_the_cookie_holds_a_token_of_which_only_the_hash_is_stored(postroom: Postroom) -> None:
    add_person(postroom, "owner@acme.test")
    with new_browser(postroom) as browser:
        sign_in(browser, "owner@acme.test")
        cookie = browser.cookies["postroom_session"]
    with postroom.database.session() as db:
        row = db.scalars(select(UserSession)).one()
        assert len(row.token_hash) == 64
        assert row.token_hash not in cookie  # the cookie carries the token, the row its hash


def test_a_password_change_ends_every_other_session(postroom: Postroom) -> None:
    user_id, _ = add_person(postroom, "owner@acme.test")
    with new_browser(postroom) as here, new_browser(postroom) as elsewhere:
        sign_in(here, "owner@acme.test")
        sign_in(elsewhere, "owner@acme.test")
        before = here.cookies["postroom_session"]
        assert signed_in(here) and signed_in(elsewhere)

        weak = post_form(
            here,
            "/account",
            "/account/password",
            {"current_password": PASSWORD, "new_password": "password12"},
        )
        assert weak.status_code == 400 and "commonly used" in weak.text
        wrong = post_form(
            here,
            "/account",
            "/account/password",
            {"current_password": "not my password", "new_password": "a new long passphrase"},
        )
        assert wrong.status_code == 400 and "current password is not right" in wrong.text
        assert signed_in(elsewhere)  # nothing changed yet

        changed = post_form(
            here,
            "/account",
            "/account/password",
            {"current_password": PASSWORD, "new_password": "a new long passphrase"},
        )
        assert changed.status_code == 303
        assert signed_in(here)  # this browser goes on, with a fresh session token
        assert here.cookies["postroom_session"] != before
        assert "Every other session was signed out" in here.get("/account?done=password").text
        assert not signed_in(elsewhere)
        assert session_rows(postroom, user_id) == 1
    with postroom.database.session() as db:
        user = db.get(User, user_id)
        assert user is not None and verify_password(user.password_hash, "a new long passphrase")
    with new_browser(postroom) as later:
        assert sign_in(later, "owner@acme.test").status_code == 400  # the old password
        assert sign_in(later, "owner@acme.test", "a new long passphrase").status_code == 303


def test_a_person_sees_and_ends_their_other_sessions(postroom: Postroom) -> None:
    owner_id, workspace_id = add_person(postroom, "owner@acme.test")
    add_person(postroom, "other@acme.test", workspace_id=workspace_id, role="member")
    with (
        new_browser(postroom) as here,
        new_browser(postroom, FIREFOX) as laptop,
        new_browser(postroom) as phone,
        new_browser(postroom) as other,
    ):
        for browser in (here, laptop, phone):
            sign_in(browser, "owner@acme.test")
        sign_in(other, "other@acme.test")
        page = here.get("/account")
        assert page.status_code == 200
        assert "Signed in elsewhere" in page.text and "Firefox on Linux" in page.text
        ends = re.findall(r'action="/account/sessions/([0-9a-f-]{36})/end"', page.text)
        assert len(ends) == 2  # the two other sessions; this one is listed apart
        with postroom.database.session() as db:
            laptop_id = db.scalar(
                select(UserSession.id).where(UserSession.device == "Firefox on Linux")
            )
        assert laptop_id in ends

        # another person cannot end it, nor learn that it exists
        refused = post_form(other, "/account", f"/account/sessions/{laptop_id}/end")
        assert refused.status_code == 404
        assert signed_in(laptop)

        ended = post_form(here, "/account", f"/account/sessions/{laptop_id}/end")
        assert ended.status_code == 303
        assert not signed_in(laptop)
        assert signed_in(here) and signed_in(phone) and signed_in(other)

        post_form(here, "/account", "/account/sessions/others/end")
        assert not signed_in(phone)
        assert signed_in(here) and signed_in(other)
        assert "You are signed in only here" in here.get("/account").text
        assert session_rows(postroom, owner_id) == 1


def test_sessions_end_after_the_idle_and_the_absolute_lifetime(postroom: Postroom) -> None:
    user_id, _ = add_person(postroom, "owner@acme.test")
    settings = postroom.settings
    assert settings.session_idle_seconds == 24 * 3600
    assert settings.session_max_age == 14 * 24 * 3600

    def age(**moved: timedelta) -> None:
        """Move the session's clock back (its rows' times), as time passing would."""
        values = {column: utcnow() - delta for column, delta in moved.items()}
        with postroom.database.session() as db:
            db.execute(update(UserSession).where(UserSession.user_id == user_id).values(**values))

    with new_browser(postroom) as browser:
        sign_in(browser, "owner@acme.test")
        age(last_seen_at=timedelta(hours=23))
        assert signed_in(browser)  # within the idle lifetime; the visit moves last_seen_at
        with postroom.database.session() as db:
            seen = db.scalar(select(UserSession.last_seen_at))
            assert seen is not None and utcnow() - seen < timedelta(minutes=1)
        age(last_seen_at=timedelta(hours=24, minutes=1))
        assert not signed_in(browser)  # idle too long
        assert session_rows(postroom, user_id) == 0  # and the row is gone

        sign_in(browser, "owner@acme.test")
        age(created_at=timedelta(days=13, hours=23))
        assert signed_in(browser)
        age(created_at=timedelta(days=14, minutes=1))
        assert not signed_in(browser)  # used every day, but signed in too long ago

        # both lifetimes are settings
        app = postroom.app
        original = app.state.settings
        app.state.settings = original.model_copy(
            update={"session_idle_seconds": 600, "session_max_age": 3600}
        )
        try:
            sign_in(browser, "owner@acme.test")
            age(last_seen_at=timedelta(minutes=9))
            assert signed_in(browser)
            age(last_seen_at=timedelta(minutes=11))
            assert not signed_in(browser)
            sign_in(browser, "owner@acme.test")
            age(created_at=timedelta(minutes=61))
            assert not signed_in(browser)
        finally:
            app.state.settings = original


def test_a_cookie_without_a_server_side_session_is_not_signed_in(postroom: Postroom) -> None:
    """A cookie signed before server-side sessions (uid and wid, no token) opens nothing."""
    import base64
    import json

    from itsdangerous import TimestampSigner

    user_id, workspace_id = add_person(postroom, "owner@acme.test")
    secret = (postroom.settings.data_dir / "session.key").read_text().strip()
    payload = base64.b64encode(json.dumps({"uid": user_id, "wid": workspace_id}).encode())
    forged = TimestampSigner(secret).sign(payload).decode()
    with new_browser(postroom) as browser:
        browser.cookies.set("postroom_session", forged)
        assert not signed_in(browser)


def test_device_summaries_never_store_the_raw_header() -> None:
    assert describe_device(FIREFOX) == "Firefox on Linux"
    edge = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/126 Edg/126.0"
    assert describe_device(edge) == "Edge on Windows"
    assert describe_device("curl/8.5.0") == "curl"
    assert describe_device("") == "Unknown browser"
    assert len(describe_device("x" * 5000 + "/1")) <= 100


# --- owners --------------------------------------------------------------------------------------


def role_of(postroom: Postroom, user_id: str, workspace_id: str) -> str | None:
    with postroom.database.session() as db:
        return db.scalar(
            select(Membership.role).where(
                Membership.user_id == user_id, Membership.workspace_id == workspace_id
            )
        )


def test_an_admin_cannot_demote_remove_or_make_owners(postroom: Postroom) -> None:
    owner_id, ws = add_person(postroom, "owner@acme.test")
    add_person(postroom, "admin@acme.test", workspace_id=ws, role="admin")
    member_id, _ = add_person(postroom, "member@acme.test", workspace_id=ws, role="member")
    with new_browser(postroom) as admin:
        sign_in(admin, "admin@acme.test")
        page = admin.get("/workspace/members")
        assert f"/workspace/members/{member_id}/role" in page.text
        assert f"/workspace/members/{owner_id}/role" not in page.text  # no control offered

        for action, data in (
            (f"/workspace/members/{owner_id}/role", {"role": "admin"}),
            (f"/workspace/members/{owner_id}/role", {"role": "member"}),
            (f"/workspace/members/{owner_id}/remove", {}),
            (f"/workspace/members/{member_id}/role", {"role": "owner"}),
        ):
            refused = post_form(admin, "/workspace/members", action, data)
            assert refused.status_code == 403, action
            assert "Only an owner" in refused.text and "Nothing was changed" in refused.text
        assert role_of(postroom, owner_id, ws) == "owner"
        assert role_of(postroom, member_id, ws) == "member"

        # what an admin may do, they can
        promoted = post_form(
            admin, "/workspace/members", f"/workspace/members/{member_id}/role", {"role": "admin"}
        )
        assert promoted.status_code == 303
        assert role_of(postroom, member_id, ws) == "admin"
        removed = post_form(admin, "/workspace/members", f"/workspace/members/{member_id}/remove")
        assert removed.status_code == 303
        assert role_of(postroom, member_id, ws) is None


def test_the_last_owner_cannot_step_down_or_leave(postroom: Postroom) -> None:
    owner_id, ws = add_person(postroom, "owner@acme.test")
    admin_id, _ = add_person(postroom, "admin@acme.test", workspace_id=ws, role="admin")
    with new_browser(postroom) as owner:
        sign_in(owner, "owner@acme.test")
        for action, data in (
            (f"/workspace/members/{owner_id}/role", {"role": "admin"}),
            (f"/workspace/members/{owner_id}/role", {"role": "member"}),
            (f"/workspace/members/{owner_id}/remove", {}),
        ):
            refused = post_form(owner, "/workspace/members", action, data)
            assert refused.status_code == 400, action
            assert "at least one owner" in refused.text
        assert role_of(postroom, owner_id, ws) == "owner"

        # with a second owner, the first may step down, and the new owner can undo it
        made = post_form(
            owner, "/workspace/members", f"/workspace/members/{admin_id}/role", {"role": "owner"}
        )
        assert made.status_code == 303 and role_of(postroom, admin_id, ws) == "owner"
        down = post_form(
            owner, "/workspace/members", f"/workspace/members/{owner_id}/role", {"role": "admin"}
        )
        assert down.status_code == 303 and role_of(postroom, owner_id, ws) == "admin"
    with new_browser(postroom) as second:
        sign_in(second, "admin@acme.test")
        last = post_form(
            second, "/workspace/members", f"/workspace/members/{admin_id}/role", {"role": "member"}
        )
        assert last.status_code == 400  # now they are the last owner
        back = post_form(
            second, "/workspace/members", f"/workspace/members/{owner_id}/role", {"role": "owner"}
        )
        assert back.status_code == 303 and role_of(postroom, owner_id, ws) == "owner"


def test_roles_of_another_workspace_cannot_be_touched(postroom: Postroom) -> None:
    add_person(postroom, "owner@acme.test")
    stranger_id, theirs = add_person(postroom, "owner@other.test")
    with new_browser(postroom) as owner:
        sign_in(owner, "owner@acme.test")
        response = post_form(
            owner,
            "/workspace/members",
            f"/workspace/members/{stranger_id}/role",
            {"role": "member"},
        )
        assert response.status_code == 404
        response = post_form(
            owner, "/workspace/members", f"/workspace/members/{stranger_id}/remove"
        )
        assert response.status_code == 404
        bad = post_form(
            owner, "/workspace/members", f"/workspace/members/{stranger_id}/role", {"role": "god"}
        )
        assert bad.status_code == 400
    assert role_of(postroom, stranger_id, theirs) == "owner"
